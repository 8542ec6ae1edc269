"""The 2016 RadioML CNN (O'Shea's VT-CNN2) and Hakimi's compressed 7-layer CNN, quantized.

Both read a RadioML 2016.10a frame as a one-channel 2 x 128 image, input (1, 2, 128): the
kernels run along time ((1, k)) and VT-CNN2's second conv (2 x 3) mixes the I and Q rows.

VT-CNN2, as O'Shea's public notebook: zero-pad (0, 2) -> Conv(256, 1x3, ReLU) -> dropout ->
zero-pad (0, 2) -> Conv(80, 2x3, ReLU) -> dropout -> flatten (80 x 132) -> Dense 256 (ReLU) ->
dropout -> Dense 11. The padding is what makes the published 2.83 M parameters (2,830,427).

Hakimi7: the description gives the filters (16, 24, 32, 48, 64, 96, 128), kernels ([1 4], then
[1 2]), int8 weights and int32 biases, 2.49 M MACs and 0.052 MB of parameters. Not given and
chosen here to meet those totals: valid convolutions, ReLU after each conv, MaxPool (1, 2) after
conv 2, 4 and 6, global average pool, Dense(128 -> 11). That gives 2.447 M MACs (-1.7 %) and
50,275 parameters = 49,856 int8 weights + 419 int32 biases = 0.0515 MB (-1 %). The same net with
"same" padding would have 2.75 M MACs (+10.6 %).
"""

from __future__ import annotations

from torch import nn

import brevitas.nn as qnn
from brevitas.quant import Int32Bias, Uint8ActPerTensorFloat

from models.layers import RML2016_INPUT_RANGE, input_quantizer, quant_linear, quant_relu
from models.registry import register_model

FRAME_LEN = 128
# RadioML 2016.10a frames are L1-normalised (mean |x| = 1/128, RMS about 0.006). Through 8-bit
# activation quantizers that start at Brevitas' default range ([0, 6] for QuantReLU), such
# small values all round to zero and neither net learns (loss stays at ln 11). A constant gain
# at the input brings the frames to unit mean magnitude; in FINN it folds into the input
# thresholds, so it costs nothing in hardware.
INPUT_GAIN = float(FRAME_LEN)
GAINED_INPUT_RANGE = (RML2016_INPUT_RANGE[0] * INPUT_GAIN, RML2016_INPUT_RANGE[1] * INPUT_GAIN)


class OSheaCNN(nn.Module):
    """VT-CNN2 with `weight_bits` on every conv/dense and `act_bits` on every ReLU; biases float."""

    def __init__(self, weight_bits: int = 8, act_bits: int = 8, *, n_classes: int = 11,
                 dropout: float = 0.5, input_bits: int = 8):
        super().__init__()
        self.input_quant = input_quantizer(input_bits, *GAINED_INPUT_RANGE, learned_scale=True)
        self.conv1 = qnn.QuantConv2d(1, 256, (1, 3), padding=(0, 2), bias=True,
                                     weight_bit_width=weight_bits)
        self.relu1 = quant_relu(act_bits)
        self.drop1 = nn.Dropout(dropout)
        self.conv2 = qnn.QuantConv2d(256, 80, (2, 3), padding=(0, 2), bias=True,
                                     weight_bit_width=weight_bits)
        self.relu2 = quant_relu(act_bits)
        self.drop2 = nn.Dropout(dropout)
        self.flatten = nn.Flatten()
        width = FRAME_LEN + 2 * 2 - 2 + 2 * 2 - 2  # 132
        self.dense1 = quant_linear(80 * width, 256, weight_bits=weight_bits, bias=True)
        self.relu3 = quant_relu(act_bits)
        self.drop3 = nn.Dropout(dropout)
        self.dense2 = quant_linear(256, n_classes, weight_bits=weight_bits, bias=True)

    def forward(self, x):
        x = self.drop1(self.relu1(self.conv1(self.input_quant(x * INPUT_GAIN))))
        x = self.drop2(self.relu2(self.conv2(x)))
        x = self.drop3(self.relu3(self.dense1(self.flatten(x))))
        return self.dense2(x)


HAKIMI_FILTERS = (16, 24, 32, 48, 64, 96, 128)
HAKIMI_KERNELS = (4, 2, 2, 2, 2, 2, 2)
HAKIMI_POOL_AFTER = (1, 3, 5)  # 0-based conv indices followed by MaxPool (1, 2)


class Hakimi7(nn.Module):
    """7 x [conv (1, k), int32 bias -> QuantReLU] with three max pools -> global average pool ->
    QuantLinear(128 -> 11, int32 bias). Quantized tensors flow between layers so every bias can
    be an int32 at its accumulator's scale."""

    def __init__(self, weight_bits: int = 8, act_bits: int = 8, *, n_classes: int = 11,
                 input_bits: int = 8):
        super().__init__()
        self.input_quant = input_quantizer(input_bits, *GAINED_INPUT_RANGE, learned_scale=True,
                                           return_quant_tensor=True)
        layers: list[nn.Module] = []
        in_channels = 1
        for k, (filters, kernel) in enumerate(zip(HAKIMI_FILTERS, HAKIMI_KERNELS)):
            last = k == len(HAKIMI_FILTERS) - 1
            layers += [
                qnn.QuantConv2d(in_channels, filters, (1, kernel), bias=True,
                                weight_bit_width=weight_bits, bias_quant=Int32Bias),
                quant_relu(act_bits, return_quant_tensor=not last),
            ]
            if k in HAKIMI_POOL_AFTER:
                layers.append(nn.MaxPool2d((1, 2)))
            in_channels = filters
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = qnn.QuantLinear(in_channels, n_classes, bias=True, weight_bit_width=weight_bits,
                                  bias_quant=Int32Bias, input_quant=Uint8ActPerTensorFloat,
                                  input_bit_width=act_bits)

    def forward(self, x):
        x = self.features(self.input_quant(x * INPUT_GAIN))
        return self.fc(self.flatten(self.pool(x)))


@register_model("oshea", dataset="rml2016", input_shape=(1, 2, 128), n_classes=11,
                default_bits=8,
                description="O'Shea VT-CNN2 (2016): Conv 256x(1x3), Conv 80x(2x3), Dense 256, "
                            "2.83 M parameters")
def build_oshea(weight_bits: int = 8, act_bits: int = 8) -> OSheaCNN:
    return OSheaCNN(weight_bits, act_bits)


@register_model("hakimi7", dataset="rml2016", input_shape=(1, 2, 128), n_classes=11,
                default_bits=8,
                description="Hakimi's compressed 7-layer CNN (16..128 filters), int8 weights, "
                            "int32 biases, ~2.5 M MACs")
def build_hakimi7(weight_bits: int = 8, act_bits: int = 8) -> Hakimi7:
    return Hakimi7(weight_bits, act_bits)
