"""BacalhauNet: the winner of the 2021 ITU/Xilinx challenge (depthwise-separable + residual).

Module names follow the team's published code and checkpoint (`hardtan`, `conv.<i>.dw|pw.
conv|norm|relu`, `pool`, `fc` with its `input_quant`), so the published state dict maps onto this
model once each Conv1d weight (C, G, k) is unsqueezed to the (C, G, 1, k) of the (1, k) convs here.

Block 1 is the team's: its DW conv keeps the 2 input channels (groups = 2, weight (2, 1, 27)) and
its PW conv lifts 2 -> 24. That is what the checkpoint holds (`conv.0.dw.conv.weight (2, 1, 27)`,
`conv.0.pw.conv.weight (24, 2, 1)`) and what gives the published 2.04 M MACs and 9.3 k weights;
a DW conv 2 -> 24 with a PW 24 -> 24 would have 2.62 M MACs and 10.4 k weights.

Two forms:
- `bacalhaunet` (deployable, the default for hardware builds): at each residual add, the PW output
  activation of the block before and of the residual block are one and the same QuantReLU
  instance, so both add inputs sit on one unsigned grid and the sum is an exact integer, which
  FINN's ElementwiseAdd needs.
- `bacalhaunet-faithful`: as published, every QuantReLU has its own scale; the add mixes two grids
  and the next DW conv sees an unquantized sum (FINN cannot map it).
"""

from __future__ import annotations

from torch import nn

import brevitas.nn as qnn
from brevitas.quant import Int8ActPerTensorFloat, Int32Bias

from models.layers import ConvBnAct, input_quantizer
from models.registry import register_model

INPUT_RANGE = (-2.0, 3.0)  # initial range of the learned-scale input QuantHardTanh
# (kernel, stride, out channels) per block; a block with stride 1 and equal channels adds its input
BLOCKS: tuple[tuple[int, int, int], ...] = ((27, 2, 24), (21, 1, 24), (15, 2, 48), (9, 1, 48),
                                            (9, 2, 48))


class DepthwiseSeparableConv(nn.Module):
    """DW conv (k, stride, padding k//2) -> BN -> QuantReLU, then PW conv -> BN -> QuantReLU;
    y = block(x) + x when the stride is 1 and the channel count is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, *,
                 weight_bits: int, act_bits: int, pw_relu: qnn.QuantReLU | None = None):
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.dw = ConvBnAct(in_channels, in_channels, kernel, stride=stride, groups=in_channels,
                            weight_bits=weight_bits, act_bits=act_bits)
        self.pw = ConvBnAct(in_channels, out_channels, 1, padding=0, relu=pw_relu,
                            weight_bits=weight_bits, act_bits=act_bits)

    def forward(self, x):
        y = self.pw(self.dw(x))
        return y + x if self.use_res_connect else y


class BacalhauNet(nn.Module):
    """hardtan -> 5 DW+PW blocks -> global max pool -> QuantLinear(48 -> 24, int32 bias, 8-bit
    input quantizer). `shared_residual_quant=True` is the deployable form (see module doc)."""

    def __init__(self, weight_bits: int = 6, act_bits: int = 6, *,
                 shared_residual_quant: bool = True, n_classes: int = 24, frame_len: int = 1024,
                 input_bits: int = 8, fc_input_bits: int = 8):
        super().__init__()
        self.shared_residual_quant = shared_residual_quant
        self.hardtan = input_quantizer(input_bits, *INPUT_RANGE, learned_scale=True)
        blocks: list[DepthwiseSeparableConv] = []
        in_channels, length = 2, frame_len
        for kernel, stride, out_channels in BLOCKS:
            residual = stride == 1 and in_channels == out_channels
            shared = blocks[-1].pw.relu if (residual and shared_residual_quant) else None
            blocks.append(DepthwiseSeparableConv(in_channels, out_channels, kernel, stride,
                                                 weight_bits=weight_bits, act_bits=act_bits,
                                                 pw_relu=shared))
            length = (length + 2 * (kernel // 2) - kernel) // stride + 1
            in_channels = out_channels
        self.conv = nn.Sequential(*blocks)
        # Global max pool as the original: kernel = the remaining length (128), stride 1, one
        # output. Stride 1 also avoids the stall FINN's cycle model charges for stride 128.
        self.pool = nn.MaxPool2d((1, length), stride=1)
        self.flatten = nn.Flatten()
        self.fc = qnn.QuantLinear(in_channels, n_classes, bias=True, weight_bit_width=weight_bits,
                                  bias_quant=Int32Bias, input_quant=Int8ActPerTensorFloat,
                                  input_bit_width=fc_input_bits)

    def residual_add_quantizers(self) -> list[tuple[qnn.QuantReLU, qnn.QuantReLU]]:
        """For each residual add: (quantizer of the skip input, quantizer of the block output).
        In the deployable form each pair is one module."""
        pairs = []
        for i, block in enumerate(self.conv):
            if block.use_res_connect:
                pairs.append((self.conv[i - 1].pw.relu, block.pw.relu))
        return pairs

    def forward(self, x):
        x = self.hardtan(x)
        x = self.conv(x)
        x = self.flatten(self.pool(x))
        return self.fc(x)


@register_model("bacalhaunet", dataset="rml2018", input_shape=(2, 1, 1024), n_classes=24,
                default_bits=6,
                description="BacalhauNet, deployable: 5 DW+PW residual blocks, 6-bit, one shared "
                            "quantizer per residual add (FINN-mappable)")
def build_bacalhaunet(weight_bits: int = 6, act_bits: int = 6) -> BacalhauNet:
    return BacalhauNet(weight_bits, act_bits, shared_residual_quant=True)


@register_model("bacalhaunet-faithful", dataset="rml2018", input_shape=(2, 1, 1024),
                n_classes=24, default_bits=6,
                description="BacalhauNet as published (challenge winner): residual adds of two "
                            "differently scaled inputs, not FINN-mappable")
def build_bacalhaunet_faithful(weight_bits: int = 6, act_bits: int = 6) -> BacalhauNet:
    return BacalhauNet(weight_bits, act_bits, shared_residual_quant=False)
