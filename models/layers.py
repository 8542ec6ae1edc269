"""Shared Brevitas building blocks for the zoo.

Every 1D convolution is written as a (1, k) `QuantConv2d` over frames shaped (N, C, 1, L):
finn-plus lowers that form, while `QuantConv1d` graphs fail in its streamlining (see the project
notes on finn-plus). Weight and activation bit widths are always explicit arguments.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

import brevitas.nn as qnn
from brevitas.core.scaling import ScalingImplType
from brevitas.quant import Int8ActPerTensorFloatMinMaxInit, Int32Bias

__all__ = [
    "RML2016_INPUT_RANGE", "ComplexWeightTie", "ConvBnAct", "conv1xk", "input_quantizer",
    "from_conv1d_state_dict", "quant_linear", "quant_relu",
]

# RadioML 2016.10a frames are normalised by their L1 norm (mean |x| = 1/128, see the data notes),
# so I and Q stay within about +-0.03; the RML2016 models learn their input scale from this start.
RML2016_INPUT_RANGE = (-0.03, 0.03)


def input_quantizer(bits: int, min_val: float, max_val: float, *, learned_scale: bool = False,
                    return_quant_tensor: bool = False) -> qnn.QuantHardTanh:
    """Signed input quantizer over [min_val, max_val].

    `learned_scale=False` fixes the range (the challenge's VGG10 `InputQuantizer`, constant
    scale); `learned_scale=True` makes the scale a parameter initialised from the range (what
    BacalhauNet's `QuantHardTanh(min_val=-2, max_val=3)` does).
    """
    kwargs = {}
    if not learned_scale:
        kwargs["scaling_impl_type"] = ScalingImplType.CONST
    return qnn.QuantHardTanh(act_quant=Int8ActPerTensorFloatMinMaxInit, bit_width=bits,
                             min_val=min_val, max_val=max_val,
                             return_quant_tensor=return_quant_tensor, **kwargs)


def quant_relu(bits: int, *, return_quant_tensor: bool = False) -> qnn.QuantReLU:
    """Unsigned per-tensor activation quantizer with a learned scale (Brevitas' default)."""
    return qnn.QuantReLU(bit_width=bits, return_quant_tensor=return_quant_tensor)


def conv1xk(in_channels: int, out_channels: int, kernel: int, *, weight_bits: int,
            stride: int = 1, padding: int = 0, groups: int = 1, bias: bool = False,
            bias_quant=None) -> qnn.QuantConv2d:
    """A 1D convolution along the last axis, as a (1, k) QuantConv2d on (N, C, 1, L)."""
    return qnn.QuantConv2d(in_channels, out_channels, kernel_size=(1, kernel), stride=(1, stride),
                           padding=(0, padding), groups=groups, bias=bias,
                           weight_bit_width=weight_bits, bias_quant=bias_quant)


def quant_linear(in_features: int, out_features: int, *, weight_bits: int, bias: bool = False,
                 int_bias: bool = False, input_quant=None) -> qnn.QuantLinear:
    """QuantLinear; `int_bias=True` quantizes the bias to int32 at the accumulator's scale
    (needs a quantized input: a QuantTensor from the layer before or `input_quant`)."""
    return qnn.QuantLinear(in_features, out_features, bias=bias, weight_bit_width=weight_bits,
                           bias_quant=Int32Bias if (bias and int_bias) else None,
                           input_quant=input_quant)


class ConvBnAct(nn.Module):
    """conv -> BatchNorm2d -> QuantReLU, named `conv`, `norm`, `relu` (BacalhauNet's layout).

    Pass `relu` to reuse an existing QuantReLU instance: two blocks that share it put their
    outputs on one quantization grid (what a FINN residual add needs).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, *, weight_bits: int,
                 act_bits: int, stride: int = 1, padding: int | None = None, groups: int = 1,
                 relu: qnn.QuantReLU | None = None):
        super().__init__()
        self.conv = conv1xk(in_channels, out_channels, kernel, weight_bits=weight_bits,
                            stride=stride, padding=kernel // 2 if padding is None else padding,
                            groups=groups)
        self.norm = nn.BatchNorm2d(out_channels)
        self.relu = relu if relu is not None else quant_relu(act_bits)

    def forward(self, x):
        return self.relu(self.norm(self.conv(x)))


class ComplexWeightTie(nn.Module):
    """Parametrization: a complex convolution as a real one with tied weights.

    The stored parameter holds the real and imaginary kernels stacked, shape (2F, 1, 1, k) for F
    complex filters over one complex input channel (I, Q). The real conv weight (2F, 2, 1, k)
    computes re = Wr*I - Wi*Q (channels 0..F-1) and im = Wi*I + Wr*Q (channels F..2F-1), the
    [real | imaginary] channel order of Keras' complexnn `ComplexConv1D`.
    """

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        f = w.shape[0] // 2
        w_re, w_im = w[:f], w[f:]
        return torch.cat([torch.cat([w_re, -w_im], 1), torch.cat([w_im, w_re], 1)], 0)

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        f = weight.shape[0] // 2
        return torch.cat([weight[:f, :1], weight[f:, :1]], 0)

    @staticmethod
    def apply_to(conv: nn.Conv2d) -> nn.Conv2d:
        if conv.in_channels != 2 or conv.out_channels % 2 or conv.groups != 1:
            raise ValueError("a complex conv here maps one complex channel (I, Q) to F complex "
                             f"channels; got {conv.in_channels} -> {conv.out_channels}")
        parametrize.register_parametrization(conv, "weight", ComplexWeightTie())
        return conv


def from_conv1d_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of a QuantConv1d model (conv weights (C, G, k)) for its (1, k) QuantConv2d
    twin here: every 3-D `*.weight` gains the height axis, (C, G, 1, k); the rest is unchanged.
    BatchNorm1d and BatchNorm2d share their tensors."""
    return {key: value.unsqueeze(2) if key.endswith("weight") and value.ndim == 3 else value
            for key, value in state_dict.items()}
