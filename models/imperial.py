"""The Imperial College team's two-branch network (2021 challenge), with training-time helpers.

Conv branch: AvgPool 2 -> 7 x [conv k3 stride 2 -> BN -> QuantReLU] (5-bit, last conv 4-bit)
-> FC 128. Statistics branch: 32 hand-made features of the raw frame -> linear. Both concatenated
-> classifier. An auxiliary classifier per branch serves training only (summed cross-entropy):
`forward` returns the main logits, `forward_with_aux` returns (main, aux_conv, aux_stats).

Choices where the description is silent (documented, not published): the average pool runs on
the raw frame before the 8-bit input quantizer (range [-2, 2] as VGG10), so the first conv sees an
integer tensor; convs pad 1 (1024 -> 512 -> ... -> 4); the statistics branch is BN -> 8-bit
quantizer -> Linear(32 -> 64) -> BN -> QuantReLU; the feature list is `STAT_FEATURES`.

The statistics need atan2, sqrt, pow and reductions FINN cannot map: on an FPGA they run on the
host processor (or need a hardware-friendly reformulation); only the conv branch is for FINN.
"""

from __future__ import annotations

import math

import torch
from torch import nn

import brevitas.nn as qnn

from models.layers import ConvBnAct, input_quantizer, quant_linear, quant_relu
from models.registry import register_model

INPUT_RANGE = (-2.0, 2.0)
N_CONVS = 7
CONV_FILTERS = 64
CONV_FC = 128
STAT_HIDDEN = 64
_EPS = 1e-8

# The 32 features of `statistics_features`, in order. The frame z = I + jQ is first scaled to
# unit mean power; Mpq = E[z^(p-q) conj(z)^q], Cpq the cumulants (Swami & Sadler 2000).
STAT_FEATURES: tuple[str, ...] = (
    "log10_power",
    "abs_M20", "abs_M40", "abs_M41", "M42", "abs_M60", "abs_M61", "abs_M62", "M63",
    "abs_C40", "abs_C41", "C42", "abs_C60", "abs_C61", "abs_C62", "abs_C63",
    "amp_mean", "amp_std", "amp_skew", "amp_kurt", "amp_peak", "amp_sigma_aa",
    "phase_std", "phase_abs_std", "phase_coherence_1", "phase_coherence_2", "phase_coherence_4",
    "freq_mean", "freq_std", "freq_skew", "freq_kurt", "freq_abs_std",
)


def _cmul(a, b):
    """Product of complex numbers held as (re, im) pairs of real tensors."""
    return a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]


def _cadd(*terms):
    """Sum of (coefficient, (re, im)) terms."""
    return (sum(c * t[0] for c, t in terms), sum(c * t[1] for c, t in terms))


def _cabs(a):
    return torch.sqrt(a[0] ** 2 + a[1] ** 2 + _EPS)


def _standardized(x):
    """mean, std, skewness, kurtosis along the last axis."""
    mean = x.mean(-1, keepdim=True)
    d = x - mean
    var = (d ** 2).mean(-1)
    std = torch.sqrt(var + _EPS)
    skew = (d ** 3).mean(-1) / (std ** 3)
    kurt = (d ** 4).mean(-1) / (var ** 2 + _EPS)
    return mean.squeeze(-1), std, skew, kurt


def statistics_features(x: torch.Tensor) -> torch.Tensor:
    """The 32 features (`STAT_FEATURES`) of frames x (N, 2, 1, L) or (N, 2, L) -> (N, 32).

    Real arithmetic only (amplitude and phase instead of complex tensors), so it traces to ONNX.
    """
    x = x.reshape(x.shape[0], 2, -1)
    i, q = x[:, 0], x[:, 1]
    power = (i ** 2 + q ** 2).mean(-1)
    scale = torch.rsqrt(power + _EPS)[:, None]
    i, q = i * scale, q * scale
    amp2 = i ** 2 + q ** 2
    amp = torch.sqrt(amp2 + _EPS)
    phase = torch.atan2(q, i)

    def moment(p: int, harmonic: int):  # E[|z|^p e^{j harmonic phase}] as (re, im)
        w = amp ** p
        return ((w * torch.cos(harmonic * phase)).mean(-1),
                (w * torch.sin(harmonic * phase)).mean(-1))

    m20, m21, m40, m41 = moment(2, 2), moment(2, 0), moment(4, 4), moment(4, 2)
    m42, m60, m61, m62, m63 = moment(4, 0), moment(6, 6), moment(6, 4), moment(6, 2), moment(6, 0)
    m22, m43 = (m20[0], -m20[1]), (m41[0], -m41[1])  # conjugates
    m20_2 = _cmul(m20, m20)
    c40 = _cadd((1, m40), (-3, m20_2))
    c41 = _cadd((1, m41), (-3, _cmul(m20, m21)))
    c42 = m42[0] - (m20[0] ** 2 + m20[1] ** 2) - 2 * m21[0] ** 2
    c60 = _cadd((1, m60), (-15, _cmul(m20, m40)), (30, _cmul(m20_2, m20)))
    c61 = _cadd((1, m61), (-5, _cmul(m21, m40)), (-10, _cmul(m20, m41)),
                (30, _cmul(m20_2, m21)))
    c62 = _cadd((1, m62), (-6, _cmul(m20, m42)), (-8, _cmul(m21, m41)), (-1, _cmul(m22, m40)),
                (6, _cmul(m20_2, m22)), (24, _cmul(_cmul(m21, m21), m20)))
    c63 = _cadd((1, m63), (-9, _cmul(m21, m42)), (12, _cmul(_cmul(m21, m21), m21)),
                (-3, _cmul(m20, m43)), (-3, _cmul(m22, m41)),
                (18, _cmul(_cmul(m20, m21), m22)))

    amp_mean, amp_std, amp_skew, amp_kurt = _standardized(amp)
    amp_n = amp / (amp_mean[:, None] + _EPS) - 1
    amp_peak = amp_n.amax(-1)
    amp_sigma_aa = amp_n.abs().std(-1)

    def coherence(k: int):  # |E[e^{j k phase}]|: 1 for a k-fold symmetric constellation
        return _cabs((torch.cos(k * phase).mean(-1), torch.sin(k * phase).mean(-1)))

    # instantaneous frequency (cycles/sample): angle of z[n+1] conj(z[n])
    freq = torch.atan2(q[:, 1:] * i[:, :-1] - i[:, 1:] * q[:, :-1],
                       i[:, 1:] * i[:, :-1] + q[:, 1:] * q[:, :-1]) / (2 * math.pi)
    freq_mean, freq_std, freq_skew, freq_kurt = _standardized(freq)

    features = [
        torch.log10(power + _EPS),
        _cabs(m20), _cabs(m40), _cabs(m41), m42[0], _cabs(m60), _cabs(m61), _cabs(m62), m63[0],
        _cabs(c40), _cabs(c41), c42, _cabs(c60), _cabs(c61), _cabs(c62), _cabs(c63),
        amp_mean, amp_std, amp_skew, amp_kurt, amp_peak, amp_sigma_aa,
        phase.std(-1), phase.abs().std(-1), coherence(1), coherence(2), coherence(4),
        freq_mean, freq_std, freq_skew, freq_kurt, freq.abs().std(-1),
    ]
    return torch.stack(features, dim=1)


class Imperial(nn.Module):
    def __init__(self, weight_bits: int = 5, act_bits: int = 5, *,
                 last_conv_bits: int | None = None, n_classes: int = 24, frame_len: int = 1024,
                 input_bits: int = 8):
        """`last_conv_bits` defaults to weight_bits - 1 (5 -> 4 as published), at least 2."""
        super().__init__()
        if last_conv_bits is None:
            last_conv_bits = max(weight_bits - 1, 2)
        # conv branch (the FINN part)
        self.avgpool = nn.AvgPool2d((1, 2))
        self.input_quant = input_quantizer(input_bits, *INPUT_RANGE)
        convs, in_channels, length = [], 2, frame_len // 2
        for k in range(N_CONVS):
            bits = last_conv_bits if k == N_CONVS - 1 else weight_bits
            convs.append(ConvBnAct(in_channels, CONV_FILTERS, 3, stride=2, padding=1,
                                   weight_bits=bits, act_bits=act_bits))
            in_channels, length = CONV_FILTERS, (length - 1) // 2 + 1
        self.convs = nn.Sequential(*convs)
        self.conv_fc = nn.Sequential(
            nn.Flatten(),
            quant_linear(CONV_FILTERS * length, CONV_FC, weight_bits=weight_bits),
            nn.BatchNorm1d(CONV_FC),
            quant_relu(act_bits),
        )
        # statistics branch (the host part)
        self.stats = nn.Sequential(
            nn.BatchNorm1d(len(STAT_FEATURES)),
            qnn.QuantIdentity(bit_width=8),
            quant_linear(len(STAT_FEATURES), STAT_HIDDEN, weight_bits=weight_bits),
            nn.BatchNorm1d(STAT_HIDDEN),
            quant_relu(act_bits),
        )
        self.classifier = quant_linear(CONV_FC + STAT_HIDDEN, n_classes, weight_bits=weight_bits,
                                       bias=True)
        # training only: one classifier per branch
        self.aux_heads = nn.ModuleDict({
            "conv": quant_linear(CONV_FC, n_classes, weight_bits=weight_bits, bias=True),
            "stats": quant_linear(STAT_HIDDEN, n_classes, weight_bits=weight_bits, bias=True),
        })

    def _branches(self, x):
        conv = self.conv_fc(self.convs(self.input_quant(self.avgpool(x))))
        stats = self.stats(statistics_features(x))
        return conv, stats

    def forward(self, x):
        conv, stats = self._branches(x)
        return self.classifier(torch.cat([conv, stats], dim=1))

    def forward_with_aux(self, x):
        """(main, aux_conv, aux_stats) logits, for the summed cross-entropy of training."""
        conv, stats = self._branches(x)
        main = self.classifier(torch.cat([conv, stats], dim=1))
        return main, self.aux_heads["conv"](conv), self.aux_heads["stats"](stats)


@register_model("imperial", dataset="rml2018", input_shape=(2, 1, 1024), n_classes=24,
                default_bits=5,
                description="Imperial two-branch net: 7-conv branch (5-bit, last 4-bit) + 32 "
                            "signal statistics; the statistics branch runs on the host")
def build_imperial(weight_bits: int = 5, act_bits: int = 5) -> Imperial:
    return Imperial(weight_bits, act_bits)
