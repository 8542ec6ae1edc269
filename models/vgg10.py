"""VGG10: the baseline of the 2021 ITU/Xilinx hardware-efficient modulation classification
challenge.

Same layers as the organisers' `nn.Sequential` (brevitas-radioml-challenge-21), in the same
order, so the indices of its state dict (`1.weight` first conv ... `36.weight` last linear) are
this model's; only the convs are (1, 3) QuantConv2d on (N, 2, 1, 1024) instead of QuantConv1d on
(N, 2, 1024): a published Conv1d weight (64, 2, 3) loads after `unsqueeze(2)`.
"""

from __future__ import annotations

from torch import nn

from models.layers import conv1xk, input_quantizer, quant_linear, quant_relu
from models.registry import register_model

INPUT_RANGE = (-2.0, 2.0)  # fixed input range of the challenge's InputQuantizer
N_POOLS = 7  # each conv block halves the length: 1024 -> 8


class VGG10(nn.Sequential):
    """7 x [conv k3 pad 1, no bias -> BN -> QuantReLU -> MaxPool 2] -> flatten ->
    QuantLinear(no bias) -> BN -> QuantReLU -> QuantLinear(no bias) -> BN -> QuantReLU ->
    QuantLinear(bias, int32 bias); logits are not quantized."""

    def __init__(self, weight_bits: int = 8, act_bits: int = 8, *, filters: int = 64,
                 dense: int = 128, n_classes: int = 24, frame_len: int = 1024,
                 input_bits: int = 8):
        if frame_len % 2 ** N_POOLS:
            raise ValueError(f"frame_len must be a multiple of {2 ** N_POOLS}, got {frame_len}")
        layers: list[nn.Module] = [input_quantizer(input_bits, *INPUT_RANGE)]
        in_channels = 2
        for _ in range(N_POOLS):
            layers += [
                conv1xk(in_channels, filters, 3, padding=1, weight_bits=weight_bits),
                nn.BatchNorm2d(filters),
                quant_relu(act_bits),
                nn.MaxPool2d((1, 2)),
            ]
            in_channels = filters
        layers += [
            nn.Flatten(),
            quant_linear(filters * (frame_len // 2 ** N_POOLS), dense, weight_bits=weight_bits),
            nn.BatchNorm1d(dense),
            quant_relu(act_bits),
            quant_linear(dense, dense, weight_bits=weight_bits),
            nn.BatchNorm1d(dense),
            # returns a QuantTensor: the int32 bias of the last layer needs the input scale
            quant_relu(act_bits, return_quant_tensor=True),
            quant_linear(dense, n_classes, weight_bits=weight_bits, bias=True, int_bias=True),
        ]
        super().__init__(*layers)


@register_model("vgg10", dataset="rml2018", input_shape=(2, 1, 1024), n_classes=24,
                default_bits=8,
                description="challenge baseline VGG10: 7 conv blocks of 64 filters, 3 dense "
                            "layers, 8-bit (59.47 % on real RadioML 2018)")
def build_vgg10(weight_bits: int = 8, act_bits: int = 8, filters: int = 64) -> VGG10:
    return VGG10(weight_bits, act_bits, filters=filters)


@register_model("vgg10-w4a4-32", dataset="rml2018", input_shape=(2, 1, 1024), n_classes=24,
                default_bits=4,
                description="VGG10 with 32 filters and 4-bit weights/activations: FINN's own "
                            "RadioML example (~55.9 %)")
def build_vgg10_w4a4_32(weight_bits: int = 4, act_bits: int = 4) -> VGG10:
    return VGG10(weight_bits, act_bits, filters=32)
