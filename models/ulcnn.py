"""ULCNN: the ultra-lite CNN for RadioML 2016.10a (2 x 128 frames, 11 classes), quantized.

Published (Keras, float): complex conv (16 filters, k5) -> complex BN -> ReLU; 6 mobile units
(separable conv 32 filters k5 stride 2 "same" -> BN -> ReLU -> channel shuffle -> channel
attention); the global average pools of units 4, 5, 6 summed -> Dense(11) -> softmax.
9,751 parameters as Keras counts them (BatchNorm moving statistics included), ~0.2 M MACs.

Differences here, each small and deliberate:
- The complex BN (a 2x2 whitening per complex channel: 80 trainable + 80 moving values for 16
  channels) is a real BatchNorm over the 32 real channels (64 + 64): a per-channel affine map is
  what a FINN flow can fold into thresholds. This is the whole parameter difference: 9,719 instead
  of 9,751 counted the Keras way (9,271 trainable here against 9,287).
- Stride-2 "same" padding is symmetric (2, 2) instead of Keras' (1, 2): same output length, the
  taps sit one sample earlier.
- Quantization (absent from the original): an 8-bit input quantizer, `weight_bits` on every conv
  and dense layer, `act_bits` on every ReLU, on the attention sigmoid, and on each unit's output
  after the attention multiply.
- The softmax is left to the loss, as for every zoo model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

import brevitas.nn as qnn
from brevitas.quant import Uint8ActPerTensorFloat

from models.layers import (RML2016_INPUT_RANGE, ComplexWeightTie, conv1xk, input_quantizer,
                           quant_linear, quant_relu)
from models.registry import register_model

N_COMPLEX_FILTERS = 16  # complex conv filters -> 32 real channels
UNIT_FILTERS = 32
KERNEL = 5
N_UNITS = 6
POOLED_UNITS = (3, 4, 5)  # units 4, 5 and 6 (0-based) feed the classifier


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: channel g * (C/G) + c moves to c * G + g."""

    def __init__(self, groups: int = 2):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelAttention(nn.Module):
    """CBAM-style channel attention: global average and global max pool -> shared
    Dense(C/16, ReLU) -> Dense(C) -> sum -> sigmoid -> multiply with the features."""

    def __init__(self, channels: int, *, weight_bits: int, act_bits: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = quant_linear(channels, hidden, weight_bits=weight_bits, bias=True)
        self.relu = quant_relu(act_bits)
        self.fc2 = quant_linear(hidden, channels, weight_bits=weight_bits, bias=True)
        self.sigmoid = qnn.QuantSigmoid(bit_width=act_bits)

    def forward(self, x):
        avg = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        peak = torch.flatten(F.adaptive_max_pool2d(x, 1), 1)
        mask = self.sigmoid(self.fc2(self.relu(self.fc1(avg))) +
                            self.fc2(self.relu(self.fc1(peak))))
        return x * mask[:, :, None, None]


class MobileUnit(nn.Module):
    """Separable conv (DW k5 stride 2, no bias; PW with bias) -> BN -> ReLU -> channel shuffle
    -> channel attention -> output quantizer."""

    def __init__(self, in_channels: int, out_channels: int, *, weight_bits: int, act_bits: int):
        super().__init__()
        self.dw = conv1xk(in_channels, in_channels, KERNEL, stride=2, padding=KERNEL // 2,
                          groups=in_channels, weight_bits=weight_bits)
        self.pw = conv1xk(in_channels, out_channels, 1, bias=True, weight_bits=weight_bits)
        self.norm = nn.BatchNorm2d(out_channels)
        self.relu = quant_relu(act_bits)
        self.shuffle = ChannelShuffle(2)
        self.attention = ChannelAttention(out_channels, weight_bits=weight_bits,
                                          act_bits=act_bits)
        # features (>= 0) x mask (0..1): requantize so the next unit sees an act_bits tensor
        self.out_quant = qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=act_bits)

    def forward(self, x):
        x = self.relu(self.norm(self.pw(self.dw(x))))
        return self.out_quant(self.attention(self.shuffle(x)))


class ULCNN(nn.Module):
    def __init__(self, weight_bits: int = 8, act_bits: int = 8, *, n_classes: int = 11,
                 input_bits: int = 8):
        super().__init__()
        self.input_quant = input_quantizer(input_bits, *RML2016_INPUT_RANGE, learned_scale=True)
        channels = 2 * N_COMPLEX_FILTERS
        self.complex_conv = ComplexWeightTie.apply_to(
            conv1xk(2, channels, KERNEL, padding=KERNEL // 2, bias=True, weight_bits=weight_bits))
        self.norm = nn.BatchNorm2d(channels)
        self.relu = quant_relu(act_bits)
        units = []
        for _ in range(N_UNITS):
            units.append(MobileUnit(channels, UNIT_FILTERS, weight_bits=weight_bits,
                                    act_bits=act_bits))
            channels = UNIT_FILTERS
        self.units = nn.ModuleList(units)
        self.fc = quant_linear(UNIT_FILTERS, n_classes, weight_bits=weight_bits, bias=True)

    def forward(self, x):
        x = self.relu(self.norm(self.complex_conv(self.input_quant(x))))
        pooled = None
        for i, unit in enumerate(self.units):
            x = unit(x)
            if i in POOLED_UNITS:
                gap = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
                pooled = gap if pooled is None else pooled + gap
        return self.fc(pooled)


@register_model("ulcnn", dataset="rml2016", input_shape=(2, 1, 128), n_classes=11,
                default_bits=8,
                description="ULCNN: complex conv + 6 mobile units with channel attention, "
                            "~9.7 k parameters (62.47 % float on RML2016.10a); not "
                            "FINN-mappable: its channel shuffle is a 5-D reshape/transpose")
def build_ulcnn(weight_bits: int = 8, act_bits: int = 8) -> ULCNN:
    return ULCNN(weight_bits, act_bits)
