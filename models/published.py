"""Published checkpoint layouts, mapped explicitly onto the zoo's models.

`--weights FILE` takes, besides the toolchain's own checkpoints, the state dicts that the 2021
challenge's authors published:

- `vgg10-challenge`: the organisers' 8-bit VGG10 (`pretrained_VGG10_w8a8_20.pth`, an
  `nn.Sequential` state dict: `1.weight` (64, 2, 3) ... `36.bias` (24,)), loads into `vgg10`.
- `bacalhaunet-challenge`: the winner's final 6-bit BacalhauNet (`bacalhaunet_gold_weights.pth`:
  `hardtan.*`, `conv.<i>.dw|pw.conv|norm|relu.*`, `fc.*`), loads into `bacalhaunet-faithful`
  (exactly) and into the deployable `bacalhaunet` (one shared grid per residual add, see below).

Each layout is a list of `TensorMap`s, one per tensor of the published file: its key and shape
there, the zoo key it becomes and how (`as_is`, or `conv1d`: a Conv1d weight (C, G, k) gains the
height axis of the zoo's (1, k) Conv2d, (C, G, 1, k)). BatchNorm1d and BatchNorm2d store the
same tensors. Loading is checked both ways: every tensor of the file is used and has its
published shape, every tensor of the zoo model is set, and the first offending key is named in
one `InputFileError` (file, key, expected and found shape).

Arithmetic, not only weights. The published models' learned activation scales (the stored
`...scaling_impl.value` of each QuantReLU, of BacalhauNet's input hard-tanh and of its final
layer's input quantizer) land in zoo quantizers of the same kind: learned per-tensor float
scales (Brevitas' `ParameterFromRuntimeStatsScaling` / `ParameterScaling`), unsigned 8-bit (or
6-bit) for ReLUs; loading a value also marks Brevitas' statistics collection as done, so eval
mode uses the published scale, not the statistics of the current batch. Weight scales are not
stored: both sides derive them from the weights (per-tensor max |w|, narrow range). VGG10's
input quantizer has no stored tensor: the zoo's is the same constant 8-bit grid, scale 2/128
over [-2, 2), which `check_arithmetic` verifies. The one known difference: the organisers' final
bias was quantized with an accumulator-wide integer (23 bits in their ONNX export), the zoo's
with 32 bits; both round to the same grid (input scale x weight scale), and a bias never
reaches 2^22 steps, so the results are equal. A test runs the published VGG10 through this
import and the organisers' own 2021 ONNX export on the same frames.

BacalhauNet's deployable form. FINN needs both inputs of a residual add on one grid, so the
deployable `bacalhaunet` has one QuantReLU where the published model has two (the skip input's
and the block output's). Its scale becomes the larger of the two published scales (no input
clips; the finer input is re-rounded by at most half of the coarser step): an approximation,
stated in `DEPLOYABLE_NOTE` and measured by its test; `bacalhaunet-faithful` is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from flows.errors import InputFileError, ToolchainError

SCALE = "act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value"
FC_INPUT_SCALE = "input_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl.value"
BN_TENSORS = (("weight", "c"), ("bias", "c"), ("running_mean", "c"), ("running_var", "c"),
              ("num_batches_tracked", None))
DEPLOYABLE_NOTE = ("deployable BacalhauNet: each residual add's two published activation scales "
                   "are merged into one shared quantizer (the larger scale)")


@dataclass(frozen=True)
class TensorMap:
    """One tensor of a published file and where it goes in the zoo model."""

    source: str  # key in the published state dict
    shape: tuple[int, ...]  # its shape there
    target: str  # key in the zoo model's state dict
    kind: str = "as_is"  # "as_is" or "conv1d" (C, G, k) -> (C, G, 1, k)

    def convert(self, value):
        return value.unsqueeze(2) if self.kind == "conv1d" else value


@dataclass(frozen=True)
class PublishedLayout:
    """A published checkpoint layout: its tensors and the zoo models it loads into."""

    name: str  # short name used in messages
    title: str  # what the file is, in words
    models: tuple[str, ...]  # zoo models it loads into
    weight_bits: int  # bit widths of the published model: the zoo model must use them
    act_bits: int
    tensors: tuple[TensorMap, ...]
    # (model, zoo model name) -> first arithmetic mismatch in words, or None
    check_arithmetic: Callable[[object, str], str | None]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(t.source for t in self.tensors)


def _bn(source: str, target: str, channels: int) -> list[TensorMap]:
    return [TensorMap(f"{source}.{name}", (channels,) if dim else (), f"{target}.{name}")
            for name, dim in BN_TENSORS]


def _same(key: str, shape: tuple[int, ...], kind: str = "as_is") -> TensorMap:
    return TensorMap(key, shape, key, kind)


# ---------------------------------------------------------------- VGG10 (challenge baseline)

def _vgg10_tensors(filters: int = 64, dense: int = 128, n_classes: int = 24,
                   n_blocks: int = 7, flat: int = 512) -> tuple[TensorMap, ...]:
    """`nn.Sequential` indices: 0 input quantizer (no tensor); block b: conv 1+4b, BN 2+4b,
    QuantReLU 3+4b, pool 4+4b; 29 flatten; 30 linear, 31 BN, 32 ReLU, 33 linear, 34 BN,
    35 ReLU, 36 linear with bias. The zoo's `VGG10` keeps these indices."""
    maps: list[TensorMap] = []
    cin = 2
    for b in range(n_blocks):
        conv, bn, relu = 1 + 4 * b, 2 + 4 * b, 3 + 4 * b
        maps.append(_same(f"{conv}.weight", (filters, cin, 3), "conv1d"))
        maps += _bn(str(bn), str(bn), filters)
        maps.append(_same(f"{relu}.{SCALE}", ()))
        cin = filters
    first_dense = 2 + 4 * n_blocks  # 30 (29 is the flatten)
    maps.append(_same(f"{first_dense}.weight", (dense, flat)))
    maps += _bn(str(first_dense + 1), str(first_dense + 1), dense)
    maps.append(_same(f"{first_dense + 2}.{SCALE}", ()))
    maps.append(_same(f"{first_dense + 3}.weight", (dense, dense)))
    maps += _bn(str(first_dense + 4), str(first_dense + 4), dense)
    maps.append(_same(f"{first_dense + 5}.{SCALE}", ()))
    maps.append(_same(f"{first_dense + 6}.weight", (n_classes, dense)))
    maps.append(_same(f"{first_dense + 6}.bias", (n_classes,)))
    return tuple(maps)


def _vgg10_arithmetic(model, model_name: str) -> str | None:
    """The published input quantizer: constant scale 2/128, 8-bit signed, not learned."""
    import torch

    quant = model[0].act_quant
    bits, scale = int(quant.bit_width()), float(quant.scale())
    if bits != 8 or abs(scale - 2.0 / 128) > 1e-9:
        return f"input quantizer {bits} bits scale {scale:g}, published 8 bits scale 2/128"
    learned = [n for n, p in model[0].named_parameters() if p.requires_grad]
    if learned:
        return f"input quantizer has learned parameters ({learned[0]}), published: constant"
    with torch.no_grad():
        probe = model[0](torch.tensor([-3.0, -2.0, 1.99, 2.5]))
    if [float(v) for v in probe] != [-2.0, -2.0, 1.984375, 1.984375]:
        return f"input quantizer maps -3, -2, 1.99, 2.5 to {probe.tolist()}"
    return None


# ---------------------------------------------------------------- BacalhauNet (winner)

def _bacalhaunet_tensors() -> tuple[TensorMap, ...]:
    """The team's module names, which the zoo's `BacalhauNet` keeps (see its docstring)."""
    from models.bacalhaunet import BLOCKS

    maps = [_same(f"hardtan.{SCALE}", ())]
    cin = 2
    for i, (kernel, _stride, cout) in enumerate(BLOCKS):
        # block 1's DW conv keeps the 2 input channels (groups = 2), its PW conv lifts them
        for part, (out_ch, per_group, k) in (("dw", (cin, 1, kernel)), ("pw", (cout, cin, 1))):
            prefix = f"conv.{i}.{part}"
            maps.append(_same(f"{prefix}.conv.weight", (out_ch, per_group, k), "conv1d"))
            maps += _bn(f"{prefix}.norm", f"{prefix}.norm", out_ch)
            maps.append(_same(f"{prefix}.relu.{SCALE}", ()))
        cin = cout
    maps += [_same("fc.bias", (24,)), _same("fc.weight", (24, cin)),
             _same(f"fc.{FC_INPUT_SCALE}", ())]
    return tuple(maps)


def _bacalhaunet_arithmetic(model, model_name: str) -> str | None:
    """Residual structure as published (faithful) or with one quantizer per add (deployable)."""
    for skip, out in model.residual_add_quantizers():
        shared = skip is out
        if shared != (model_name == "bacalhaunet"):
            return (f"residual add quantizers {'shared' if shared else 'separate'}, "
                    f"expected {'shared' if model_name == 'bacalhaunet' else 'separate'}")
    return None


LAYOUTS: dict[str, PublishedLayout] = {
    "vgg10-challenge": PublishedLayout(
        "vgg10-challenge", "the 2021 challenge organisers' VGG10 state dict (w8a8, Conv1d)",
        ("vgg10",), 8, 8, _vgg10_tensors(), _vgg10_arithmetic),
    "bacalhaunet-challenge": PublishedLayout(
        "bacalhaunet-challenge", "the 2021 challenge winner's BacalhauNet state dict (6-bit, "
        "Conv1d)", ("bacalhaunet-faithful", "bacalhaunet"), 6, 6, _bacalhaunet_tensors(),
        _bacalhaunet_arithmetic),
}


# ---------------------------------------------------------------- detection and loading

def _is_conv1d_weight(key: str, value) -> bool:
    return key.endswith("weight") and getattr(value, "ndim", 0) == 3


def detect_layout(state: Mapping) -> PublishedLayout | None:
    """The published layout of a state dict, or None for anything else.

    A published file holds Conv1d weights (3-D `*.weight`); no zoo model has any (all its
    convolutions are (1, k) Conv2d), so the toolchain's own checkpoints are never taken for a
    published one. Among the layouts, the one sharing the most keys (at least half of its own)
    wins, so a file with a renamed or reshaped key is still recognised and then refused with
    that key named.
    """
    if not any(_is_conv1d_weight(k, v) for k, v in state.items()):
        return None
    best, best_share = None, 0.5
    for layout in LAYOUTS.values():
        share = len(set(layout.keys) & set(state)) / len(layout.keys)
        if share >= best_share:
            best, best_share = layout, share
    return best


def _model_bits(model) -> tuple[set[int], set[int]]:
    """(weight bit widths, ReLU activation bit widths) of the model's quantized layers."""
    import brevitas.nn as qnn

    weights, acts = set(), set()
    for module in model.modules():
        if isinstance(module, (qnn.QuantConv1d, qnn.QuantConv2d, qnn.QuantLinear)):
            weights.add(int(module.weight_quant.bit_width()))
        elif isinstance(module, qnn.QuantReLU):
            acts.add(int(module.act_quant.bit_width()))
    return weights, acts


def convert(layout: PublishedLayout, state: Mapping, origin) -> dict:
    """The zoo state dict of a published one, after checking its keys and shapes.

    Raises an `InputFileError` naming `origin`, the first offending key of the file (in the
    file's order) and the expected and found shape, or the first key the file lacks.
    """
    import torch

    by_source = {t.source: t for t in layout.tensors}
    missing = [k for k in layout.keys if k not in state]
    for key, value in state.items():
        spec = by_source.get(key)
        if spec is None:
            lack = f"; the layout's key {missing[0]!r} {by_source[missing[0]].shape} is " \
                   f"missing" if missing else ""
            raise InputFileError(origin, f"key {key!r} {_shape(value)} is not part of "
                                         f"{layout.title}{lack}",
                                 expected=f"exactly the {len(layout.keys)} keys of the "
                                          f"{layout.name} layout")
        if not isinstance(value, torch.Tensor):
            raise InputFileError(origin, f"key {key!r} holds a {type(value).__name__}",
                                 expected="a tensor")
        if tuple(value.shape) != spec.shape:
            raise InputFileError(origin, f"key {key!r}: found shape {tuple(value.shape)}",
                                 expected=f"shape {spec.shape} in {layout.title}")
    if missing:
        raise InputFileError(origin, f"lacks key {missing[0]!r} {by_source[missing[0]].shape} "
                                     f"of {layout.title} ({len(missing)} missing)",
                             expected=f"all {len(layout.keys)} keys of the {layout.name} layout")
    return {t.target: t.convert(state[t.source]) for t in layout.tensors}


def _shape(value) -> str:
    return str(tuple(value.shape)) if hasattr(value, "shape") else type(value).__name__


def _merge_shared(model, state: dict) -> dict:
    """Deployable BacalhauNet: each shared residual quantizer takes the larger published scale."""
    by_module: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        by_module.setdefault(id(module), []).append(name)
    merged = dict(state)
    for skip, out in model.residual_add_quantizers():
        if skip is not out:
            continue
        keys = [f"{n}.{SCALE}" for n in by_module[id(skip)]]
        value = max((state[k] for k in keys), key=float)
        for k in keys:
            merged[k] = value
    return merged


def load_published(model, state: Mapping, model_name: str, origin,
                   layout: PublishedLayout | None = None) -> PublishedLayout:
    """Load a published state dict into zoo model `model` (named `model_name`); return its
    layout. Checks: the layout loads into this model at the published bit widths, every
    tensor of the file is used with its published shape, every tensor of the model is set, and
    the model's fixed quantizers match the published arithmetic."""
    from models.checkpoints import full_state_dict

    layout = layout or detect_layout(state)
    if layout is None:
        raise InputFileError(origin, "is not a published checkpoint layout",
                             expected=f"one of: {', '.join(LAYOUTS)}")
    if model_name not in layout.models:
        raise InputFileError(origin, f"is {layout.title}",
                             expected=f"--model {' or '.join(layout.models)}",
                             fix="Pass the --model the weights were published for")
    weights, acts = _model_bits(model)
    if weights != {layout.weight_bits} or acts != {layout.act_bits}:
        raise InputFileError(origin, f"is {layout.title}, published at {layout.weight_bits}-bit "
                                     f"weights and {layout.act_bits}-bit activations",
                             expected=f"{model_name} at those widths, not weights "
                                      f"{sorted(weights)} / activations {sorted(acts)} bits",
                             fix=f"Pass --bits {layout.weight_bits} (or leave --bits out)")
    zoo_state = convert(layout, state, origin)
    if model_name == "bacalhaunet":
        zoo_state = _merge_shared(model, zoo_state)
    with full_state_dict():
        own = model.state_dict()
    for key, value in zoo_state.items():  # a mapping bug, not a user error: say so
        if key not in own or tuple(own[key].shape) != tuple(value.shape):
            raise ToolchainError(f"internal: the {layout.name} mapping sends {key!r} "
                                 f"{tuple(value.shape)} to {model_name}, whose state has "
                                 f"{tuple(own[key].shape) if key in own else 'no such key'}")
    unset = [k for k in own if k not in zoo_state]
    if unset:
        raise ToolchainError(f"internal: the {layout.name} mapping leaves {model_name}'s "
                             f"{unset[0]!r} unset ({len(unset)} tensors)")
    with full_state_dict():
        model.load_state_dict(zoo_state, strict=True)
    problem = layout.check_arithmetic(model, model_name)
    if problem:
        raise ToolchainError(f"{origin}: {model_name} cannot reproduce {layout.title}: {problem}")
    return layout
