"""Size and work of a model: parameters, weights and multiply-accumulates (MACs).

MACs are counted with forward hooks on every conv and linear layer over one frame, so layers
called twice (ULCNN's shared attention dense layers) count twice, and depthwise convs count
`in_channels / groups` inputs per output. Pooling, activations, BatchNorm and element-wise ops
count nothing (the challenge's cost metric counts them the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

# Parameters living inside Brevitas quantizers (learned scales) are not model weights.
_QUANTIZER_PARTS = ("act_quant.", "weight_quant.", "input_quant.", "output_quant.",
                    "bias_quant.")


@dataclass(frozen=True)
class LayerMacs:
    name: str  # module path, e.g. "conv.1.dw.conv"
    kind: str  # "conv" or "linear"
    macs: int  # per frame, summed over every call of the layer


@dataclass(frozen=True)
class MacReport:
    layers: tuple[LayerMacs, ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def by_name(self) -> dict[str, int]:
        return {layer.name: layer.macs for layer in self.layers}


def _is_quantizer_param(name: str) -> bool:
    return any(part in name for part in _QUANTIZER_PARTS)


def count_params(model: nn.Module, *, include_bn_stats: bool = False) -> int:
    """Trainable model parameters (conv/linear weights and biases, BatchNorm affine), without
    Brevitas' quantizer scales. Shared modules count once; tied weights count their free
    parameters. `include_bn_stats=True` adds BatchNorm running means and variances, which is
    how Keras' `count_params` reports models (ULCNN's published 9,751)."""
    total = sum(p.numel() for name, p in model.named_parameters() if not _is_quantizer_param(name))
    if include_bn_stats:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
                total += module.running_mean.numel() + module.running_var.numel()
    return total


def count_weights(model: nn.Module) -> int:
    """Elements of every conv and linear weight tensor as the hardware stores it (no biases,
    no BatchNorm; a tied complex-conv weight counts at its full real size)."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and id(module) not in seen:
            seen.add(id(module))
            total += module.weight.numel()
    return total


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> MacReport:
    """MACs per frame of every conv and linear layer for one input of `input_shape` (no batch
    axis). Runs one forward pass in eval mode on zeros; the model's mode is restored."""
    names = {module: name for name, module in model.named_modules()}
    counts: dict[str, list] = {}
    handles = []

    def hook(module, inputs, output):
        out = getattr(output, "value", output)  # Brevitas may return a QuantTensor
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            per_output = module.in_channels // module.groups
            for k in module.kernel_size:
                per_output *= k
            macs, kind = out[0].numel() * per_output, "conv"
        else:
            macs, kind = out[0].numel() * module.in_features, "linear"
        entry = counts.setdefault(names[module], [kind, 0])
        entry[1] += macs

    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return MacReport(tuple(LayerMacs(name, kind, macs) for name, (kind, macs) in counts.items()))
