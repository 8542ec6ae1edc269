"""Imports every zoo model module so that each registers itself, and builds models by name."""

from __future__ import annotations

from torch import nn

from flows.errors import ToolchainError
from models import bacalhaunet, imperial, oshea, ulcnn, vgg10  # noqa: F401  (registration)
from models.registry import get_model_spec


def build_model(name: str, bits: int | None = None, *, weight_bits: int | None = None,
                act_bits: int | None = None) -> nn.Module:
    """The registered model `name`. `bits` (the command line's --bits) sets weight and
    activation bits together; `weight_bits`/`act_bits` override one of them; unset bits take
    the model's `default_bits`. Input quantizers keep their own width (8 bits)."""
    spec = get_model_spec(name)
    default = spec.default_bits if bits is None else bits
    w = default if weight_bits is None else weight_bits
    a = default if act_bits is None else act_bits
    for label, value in (("weight bits", w), ("activation bits", a)):
        if not 1 < value <= 16:
            raise ToolchainError(f"{label} for model {name!r} must be 2..16, got {value}. "
                                 "Pass --bits with a width in that range.")
    return spec.builder(weight_bits=w, act_bits=a)
