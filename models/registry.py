"""Registry of zoo models: `build.py --model NAME` resolves names here.

A model module registers its constructor with `@register_model(...)`; importing `models.zoo`
imports every model module, so the registry is complete after `load_zoo()`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from flows.errors import ToolchainError


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry."""

    name: str  # what the user types after --model
    dataset: str  # "rml2018" (2 x 1024, 24 classes) or "rml2016" (2 x 128, 11 classes)
    input_shape: tuple[int, ...]  # per-frame tensor the model takes, e.g. (2, 1, 1024)
    n_classes: int
    default_bits: int  # weight and activation bits unless overridden with --bits
    description: str  # one line for --help and the README
    builder: Callable  # builder(weight_bits=..., act_bits=..., **options) -> torch.nn.Module


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, *, dataset: str, input_shape: tuple[int, ...], n_classes: int,
                   default_bits: int, description: str) -> Callable:
    """Decorator: register `builder` under `name`."""

    def wrap(builder: Callable) -> Callable:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelSpec(name, dataset, tuple(input_shape), n_classes, default_bits,
                                  description, builder)
        return builder

    return wrap


def load_zoo() -> dict[str, ModelSpec]:
    """Import every zoo module (which registers it) and return the registry."""
    importlib.import_module("models.zoo")
    return dict(_MODELS)


def model_names() -> list[str]:
    return sorted(load_zoo())


def get_model_spec(name: str) -> ModelSpec:
    models = load_zoo()
    if name not in models:
        raise ToolchainError(
            f"unknown model {name!r}; expected one of: {', '.join(sorted(models)) or '(none)'}. "
            "Pass --model with one of these names, or --onnx FILE for your own QONNX model.")
    return models[name]
