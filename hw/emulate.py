"""Fast, batched, bit-exact execution of a FINN dataflow graph (the accelerator's arithmetic).

FINN's own Python execution runs one frame at a time (qonnx's Im2Col mixes frames at batch > 1)
at about 13 frames/s. `DataflowEmulator` executes the same HW layers on a whole batch, cut into
chunks of 64 frames (their tensors stay in the caches) run by 2 threads: integer values held
in float32 where every partial sum fits its 24-bit mantissa (accumulator datatypes of at most
24 bits; float64 otherwise), so the results are the exact integers the hardware computes.
A test compares it with `hw.finn_flow.execute` node for node.

Thresholds (`_Threshold`), the bulk of the work: on integer inputs a line per channel,
floor(x * s + c) clamped to [0, steps], fitted to the thresholds and checked exactly where the
count changes (a rounded uniform quantizer always has one); a lookup table for the channels
without one (repeated thresholds); on float inputs a linear guess corrected against the
thresholds. MVAU is a matrix product, VVAU a depthwise convolution on the sliding windows
(never materialized; FMPadding's zeros are left to the convolution).

Layers (specialized `_hls`/`_rtl` variants run as their generic op): Thresholding, MVAU and VVAU
(with or without embedded thresholds), FMPadding, ConvolutionInputGenerator (its windows are
kept as a strided view and consumed by VVAU/Pool without building the im2col matrix),
Pool (MaxPool, AccPool, QuantAvgPool), GlobalAccPool, DuplicateStreams, Elementwise
Add/Sub/Mul/Max/Min, LabelSelect, Requant, and the identity layers FIFO and width converter.
Anything else raises `ToolchainError` naming the layer.

Needs numpy and the `onnx` package only (the board): the graph is read from the ONNX file
(weights and thresholds from its initializers, datatypes from FINN's quantization annotations).
Where torch is importable (the host) its kernels run the convolutions, products, pools and
thresholds, about 3x faster; the numpy path computes the same values (tested equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flows.errors import ToolchainError

__all__ = ["DataflowEmulator"]

_LUT_MAX_ENTRIES = 1 << 23  # thresholds on integer inputs become a lookup table up to this size
_EXACT_F32_BITS = 24  # integers up to 2^24 are exact in float32
_CHUNK = 64  # frames per piece of a batch: the intermediate tensors stay in the caches


@dataclass(frozen=True)
class _Type:
    name: str

    @property
    def integer(self) -> bool:
        return self.name != "FLOAT32" and not self.name.startswith("FIXED")

    @property
    def bits(self) -> int:
        if self.name in ("BIPOLAR", "BINARY"):
            return 1
        if self.name == "TERNARY":
            return 2
        digits = "".join(ch for ch in self.name if ch.isdigit())
        return int(digits) if digits else 32

    @property
    def range(self) -> tuple[int, int]:
        if self.name == "BIPOLAR":
            return -1, 1
        if self.name == "TERNARY":
            return -1, 1
        if self.name.startswith("UINT") or self.name == "BINARY":
            return 0, (1 << self.bits) - 1
        return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1


class _Lazy:
    """A tensor kept in a cheaper form until a consumer needs it dense (`materialize`)."""

    def materialize(self) -> np.ndarray:
        raise NotImplementedError


@dataclass
class _Padded(_Lazy):
    """FMPadding's output: `x` (N, H, W, C) and the zeros around it (top, left, bottom, right),
    added only when a consumer cannot take the padding itself (torch's convolution can)."""

    x: np.ndarray
    pad: tuple[int, int, int, int]

    def materialize(self) -> np.ndarray:
        top, left, bottom, right = self.pad
        if not any(self.pad):
            return self.x
        return np.pad(self.x, ((0, 0), (top, bottom), (left, right), (0, 0)))


@dataclass
class _Windows(_Lazy):
    """Sliding windows of a (N, H, W, C) tensor (zero-padded by `pad`), as a
    ConvolutionInputGenerator streams them; materialized (im2col, kernel position major,
    channel minor) only when a consumer needs it."""

    x: np.ndarray
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    out_dim: tuple[int, int]
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def padded(self) -> np.ndarray:
        return _Padded(self.x, self.pad).materialize()

    def taps(self):
        """(kernel index, (N, OH, OW, C) view) for every kernel position, row-major."""
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = (self.kernel, self.stride, self.dilation,
                                                  self.out_dim)
        x = self.padded
        for i in range(kh):
            for j in range(kw):
                yield i * kw + j, x[:, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                                    j * dw: j * dw + sw * (ow - 1) + 1: sw, :]

    def view(self) -> np.ndarray:
        """(N, OH, OW, C, KH, KW) strided view of the windows (no copy)."""
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = (self.kernel, self.stride, self.dilation,
                                                  self.out_dim)
        x = self.padded
        v = np.lib.stride_tricks.sliding_window_view(
            x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
        return v[:, : sh * (oh - 1) + 1: sh, : sw * (ow - 1) + 1: sw, :, ::dh, ::dw]

    def materialize(self) -> np.ndarray:
        taps = [view for _, view in self.taps()]
        n, oh, ow, c = taps[0].shape
        return np.stack(taps, axis=3).reshape(n, oh, ow, len(taps) * c)


def _attr_value(attr):
    from onnx import helper

    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


class _Node:
    def __init__(self, proto, graph: "DataflowEmulator"):
        self.name = proto.name or proto.op_type
        op = proto.op_type
        for suffix in ("_hls", "_rtl"):
            if op.endswith(suffix):
                op = op[: -len(suffix)]
        self.op = op
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.attrs = {a.name: _attr_value(a) for a in proto.attribute}
        self.graph = graph

    def attr(self, name, default=None):
        return self.attrs.get(name, default)

    def init(self, index: int) -> np.ndarray:
        name = self.inputs[index]
        if name not in self.graph.initializers:
            raise ToolchainError(f"{self.name} ({self.op}): input {index} ({name}) is not a "
                                 "constant in the graph")
        return self.graph.initializers[name]


class _Lut:
    """Per-channel lookup table of y over the integers from lo[c] (below every threshold) to
    hi[c] (at or above every finite threshold), all channels in one flat float32 table:
    y(x) = table[clamp(x, lo[c], hi[c]) + shift[c]]. Clamp, shift and index are exact
    integers in float32 (every bound is below 2^23), in numpy as in torch."""

    def __init__(self, thresholds: np.ndarray, out_scale: float, out_bias: float):
        finite = np.where(np.isfinite(thresholds), thresholds, np.nan)
        with np.errstate(invalid="ignore"):
            first, last = np.nanmin(finite, axis=1), np.nanmax(finite, axis=1)
        none = np.isnan(first)  # no finite threshold: the count is constant
        lo = np.where(none, 0, np.floor(np.where(none, 0, first)) - 1)
        hi = np.where(none, 0, np.ceil(np.where(none, 0, last)))
        widths = (hi - lo + 1).astype(np.int64)
        self.ok = not (np.abs(lo).max() >= _LUT_MAX_ENTRIES
                       or np.abs(hi).max() >= _LUT_MAX_ENTRIES
                       or widths.sum() > _LUT_MAX_ENTRIES)
        if not self.ok:
            return
        base = np.concatenate([[0], np.cumsum(widths)[:-1]])
        self.counts = [np.searchsorted(t, np.arange(l, h + 1, dtype=np.float64), side="right")
                       for t, l, h in zip(thresholds, lo, hi)]
        self.table = (np.concatenate(self.counts) * out_scale + out_bias).astype(np.float32)
        self.lo, self.hi = lo.astype(np.float32), hi.astype(np.float32)
        self.shift = (base - lo).astype(np.float32)  # x + shift[c]: x's entry in the table
        if len(lo) == 1:  # one threshold vector for every channel: scalars broadcast
            self.lo, self.hi, self.shift = (float(v[0]) for v in (self.lo, self.hi,
                                                                  self.shift))

    @staticmethod
    def _cast(v, dtype):
        return v if np.isscalar(v) else v.astype(dtype, copy=False)

    def numpy(self, x: np.ndarray) -> np.ndarray:
        z = np.maximum(x, self._cast(self.lo, x.dtype))
        np.minimum(z, self._cast(self.hi, x.dtype), out=z)
        z += self._cast(self.shift, x.dtype)
        return np.take(self.table, z.astype(np.int32))

    def torch(self, xt):
        torch = _torch()

        dtype = np.float64 if xt.dtype == torch.float64 else np.float32

        def bound(v):
            return v if np.isscalar(v) else torch.from_numpy(self._cast(v, dtype))

        z = torch.clamp(xt, bound(self.lo), bound(self.hi))
        z.add_(bound(self.shift))
        index = z.to(torch.int32).view(-1)
        return torch.index_select(torch.from_numpy(self.table), 0, index).view(xt.shape)


def _fit_affine(u: np.ndarray):
    """Per channel (rows of sorted integer thresholds u, (C, K)): a slope s and offset c with
    floor(s * x + c) = the number of u <= x for every integer x in [u[0] - 1, u[-1]] (clamped
    to [0, K] outside), if one exists: the thresholds of a uniform quantizer after a scale
    and bias, rounded up to integers, have one. Returns (possible, s, c); s, c in float64,
    to be checked in the precision they are used in."""
    channels, steps = u.shape
    k = np.arange(1, steps + 1, dtype=np.float64)
    # count >= k exactly from x = u[k-1] on: k - s u[k-1] <= c < k - s (u[k-1] - 1). With
    # g_k(s) = k - s u[k-1], a c exists when max_k g_k - min_k g_k < s: a convex condition
    # in s, minimized by golden-section search between the bounds that consecutive
    # thresholds give (s > 1 / (step + 1), s <= 1 / (step - 1)).
    with np.errstate(all="ignore"):
        d = np.diff(u, axis=1)
        # repeated thresholds need s > 1, which only fits if no step is longer than one
        possible = np.isfinite(u).all(axis=1) & (np.abs(u) < _LUT_MAX_ENTRIES).all(axis=1)
        lo = np.maximum(np.max(1.0 / (d + 1), axis=1, initial=0.0), 1e-12)
        hi = np.minimum(np.min(np.where(d > 1, 1.0 / (d - 1), np.inf), axis=1,
                               initial=np.inf), steps + 1.0)  # all thresholds equal: a step
        u = np.where(np.isfinite(u), u, 0.0)

        def excess(s):
            g = k - s[:, None] * u
            return g.max(axis=1) - g.min(axis=1) - s

        a, b = lo, np.maximum(hi, lo)
        ratio = (np.sqrt(5) - 1) / 2
        for _ in range(80):
            m1, m2 = b - ratio * (b - a), a + ratio * (b - a)
            left = excess(m1) < excess(m2)
            a, b = np.where(left, a, m1), np.where(left, m2, b)
        s = (a + b) / 2
        g = k - s[:, None] * u
        c = (g.max(axis=1) + g.min(axis=1) + s) / 2  # the middle of the allowed interval
        possible &= excess(s) < 0
    return possible, s, c


class _Threshold:
    """y = (number of thresholds t[c] <= x) * out_scale + out_bias, channels last: the
    MultiThreshold of FINN, three ways, all exact and equal in numpy and torch.

    - Integer input, thresholds of a rounded uniform quantizer (the usual case): y is
      floor(x * s[c] + c[c]) clamped to [0, steps], four elementwise passes; s and c are
      fitted per channel and checked in float32, with these very operations, on every
      integer where the count changes (below and above, the clamp holds the count since the
      operations are monotonic). Channels with no such line (repeated thresholds) are
      looked up in a table (`_Lut`).
    - Other integer inputs: the table for every channel.
    - Float inputs (or thresholds too far apart for a table): a linear guess of the count
      from the first and last threshold, corrected until t[count - 1] <= x < t[count]."""

    def __init__(self, thresholds: np.ndarray, integer_input: bool, out_bias: float,
                 out_scale: float = 1.0):
        thresholds = np.sort(np.asarray(thresholds, dtype=np.float64)
                             .reshape(len(thresholds), -1), axis=1)  # counting ignores order
        self.thresholds = thresholds
        self.out_bias, self.out_scale = float(out_bias), float(out_scale)
        channels, steps = thresholds.shape
        self.lut = self.affine = None
        self.bad = np.zeros(0, np.int64)
        if integer_input:
            self._fit(thresholds)
            if self.affine is None:
                lut = _Lut(thresholds, self.out_scale, self.out_bias)
                self.lut = lut if lut.ok else None
        # For other inputs: a linear guess of the count from the first and last threshold,
        # then corrected until t[count - 1] <= x < t[count] holds (exact, like searchsorted).
        # Table row c: -inf, t[c], +inf. For float32 x the thresholds are rounded up to
        # float32: x >= t exactly when x >= (the least float32 >= t).
        padded = np.concatenate([np.full((channels, 1), -np.inf), thresholds,
                                 np.full((channels, 1), np.inf)], axis=1)
        up32 = padded.astype(np.float32)
        low = up32.astype(np.float64) < padded
        up32[low] = np.nextafter(up32[low], np.float32(np.inf))
        self.padded = {np.dtype(np.float64): padded.ravel(), np.dtype(np.float32): up32.ravel()}
        with np.errstate(invalid="ignore"):
            span = thresholds[:, -1] - thresholds[:, 0]
            t0 = np.nan_to_num(thresholds[:, 0], posinf=0.0, neginf=0.0)
            inv_step = np.where(span > 0, (steps - 1) / np.where(span > 0, span, 1), 0.0)
        inv_step = np.nan_to_num(inv_step, posinf=0.0, neginf=0.0)
        self.guess = {dt: (t0.astype(dt), inv_step.astype(dt)) for dt in self.padded}
        self.rows = (np.arange(channels) * (steps + 2)).astype(np.int32)
        self.one_step = {dt: self._guess_within_one(dt) for dt in self.padded}

    def _count_guess(self, x: np.ndarray) -> np.ndarray:
        t0, inv_step = self.guess[x.dtype]
        guess = np.subtract(x, t0)
        guess *= inv_step
        np.floor(guess, out=guess)
        guess += 1
        np.nan_to_num(guess, copy=False)
        np.clip(guess, 0, self.thresholds.shape[1], out=guess)
        return guess.astype(np.int32)

    def _levels(self, count: np.ndarray) -> np.ndarray:
        """count * out_scale + out_bias in float32 (integers below 2^24 exactly; FINN's
        scales and biases are integers: else computed in float64 and rounded once)."""
        if not (float(self.out_scale).is_integer() and float(self.out_bias).is_integer()
                and abs(self.out_scale) * self.thresholds.shape[1] + abs(self.out_bias)
                < 2 ** _EXACT_F32_BITS):
            return (count * self.out_scale + self.out_bias).astype(np.float32)
        y = count.astype(np.float32)
        if self.out_scale != 1.0:
            y *= np.float32(self.out_scale)
        if self.out_bias != 0.0:
            y += np.float32(self.out_bias)
        return y

    def _guess_within_one(self, dtype) -> bool:
        """Whether the linear guess is never more than one step off, so that one correction
        is exact. Guess and count are both non-decreasing in x, so checking where the count
        changes (the least `dtype` value >= each threshold, and the value before it) bounds
        the guess everywhere in between, and below and above all thresholds."""
        table = self.padded[dtype].reshape(len(self.thresholds), -1)[:, 1:-1]
        if not np.isfinite(table).all():
            return False
        at = table.T.astype(dtype)  # (steps, channels): channels last, as at run time
        before = np.nextafter(at, dtype.type(-np.inf))
        for x in (at, before):
            count = np.stack([np.searchsorted(table[c], x[:, c], side="right")
                              for c in range(table.shape[0])], axis=1)
            if np.abs(self._count_guess(x) - count).max() > 1:
                return False
        return True

    def _fit(self, thresholds: np.ndarray) -> None:
        channels, steps = thresholds.shape
        if (np.any(thresholds != np.round(thresholds))
                or not (self.out_scale.is_integer() and self.out_bias.is_integer())
                or abs(self.out_scale) * steps + abs(self.out_bias) >= 2 ** _EXACT_F32_BITS):
            return  # (levels computed in float32 must be exact integers)
        possible, s, c = _fit_affine(thresholds)  # False for channels with infinities
        s32, c32 = s.astype(np.float32), c.astype(np.float32)
        s32[~possible], c32[~possible] = 0, 0
        # Both sides are non-decreasing in x, so they agree on every integer when they agree
        # at each threshold and the integer before it (where the count changes); checked
        # with the operations `_affine_*` use, channels last as at run time.
        x = np.concatenate([thresholds.T, thresholds.T - 1])
        x = np.where(np.isfinite(x), x, 0).astype(np.float32)
        want = np.stack([np.searchsorted(t, x[:, ch], side="right")
                         for ch, t in enumerate(thresholds)], axis=1)
        got = self._affine_numpy(x, s32, c32, steps, 1.0, 0.0)
        possible &= (got == want).all(axis=0)
        if _torch() is not None:
            torch = _torch()
            got = self._affine_torch(torch.from_numpy(x), torch.from_numpy(s32),
                                     torch.from_numpy(c32), steps, 1.0, 0.0).numpy()
            possible &= (got == want).all(axis=0)
        if not possible.any() or (channels == 1 and not possible[0]):
            return
        bad = np.flatnonzero(~possible)
        if len(bad):  # channels without a line: a table
            self.bad_lut = _Lut(thresholds[bad], self.out_scale, self.out_bias)
            if not self.bad_lut.ok:
                return
        s32[~possible], c32[~possible] = 0, 0
        self.affine = (s32 if channels > 1 else float(s32[0]),
                       c32 if channels > 1 else float(c32[0]), steps)
        self.bad = bad

    @staticmethod
    def _affine_numpy(x, s, c, steps, out_scale, out_bias):
        z = np.multiply(x, s)
        z += c
        np.floor(z, out=z)
        np.maximum(z, 0, out=z)
        np.minimum(z, steps, out=z)
        if (out_scale, out_bias) != (1.0, 0.0):
            z *= out_scale
            z += out_bias
        return z

    @staticmethod
    def _affine_torch(xt, s, c, steps, out_scale, out_bias):
        z = xt * s
        z.add_(c).floor_().clamp_(0, steps)
        if (out_scale, out_bias) != (1.0, 0.0):
            z.mul_(out_scale).add_(out_bias)
        return z

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Numpy (the board's path; equal to `torch_call`)."""
        if self.affine is not None and x.dtype == np.float32:
            s, c, steps = self.affine
            z = self._affine_numpy(x, s, c, steps, self.out_scale, self.out_bias)
            if len(self.bad):
                z[..., self.bad] = self.bad_lut.numpy(x[..., self.bad])
            return z
        if self.lut is not None:
            return self.lut.numpy(x)
        x = self._search_input(x)
        table = self.padded[x.dtype]
        steps = self.thresholds.shape[1]
        count = self._count_guess(x)
        row = self.rows if len(self.rows) > 1 else 0
        if self.one_step[x.dtype]:  # one correction is exact (checked when prepared)
            at = count + row
            count -= x < np.take(table, at)
            count += x >= np.take(table, at + 1)
            return self._levels(count)
        for _ in range(steps + 1):  # each pass moves every wrong count one step closer
            at = count + row
            below = x < np.take(table, at)  # t[count - 1] > x: count too high
            above = x >= np.take(table, at + 1)  # t[count] <= x: count too low
            if not (below.any() or above.any()):
                break
            count = count - below + above
        return self._levels(count)

    @staticmethod
    def _search_input(x: np.ndarray) -> np.ndarray:
        return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)

    def torch_call(self, x: np.ndarray) -> np.ndarray:
        """The same values with torch kernels (the host; several times faster)."""
        torch = _torch()
        if self.affine is not None and x.dtype == np.float32:
            xt = torch.from_numpy(np.ascontiguousarray(x))
            s, c, steps = self.affine
            if not np.isscalar(s):
                s, c = torch.from_numpy(s), torch.from_numpy(c)
            z = self._affine_torch(xt, s, c, steps, self.out_scale, self.out_bias)
            z = z.numpy()
            if len(self.bad):  # numpy's take/put along the channels is the faster here
                sub = torch.from_numpy(np.take(x, self.bad, axis=-1))
                z[..., self.bad] = self.bad_lut.torch(sub).numpy()
            return z
        if self.lut is not None:
            return self.lut.torch(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        return self(x)  # the search: numpy's small steps are the faster here


def _torch():
    """torch if installed (the host): its convolution, clamp and gather kernels are several
    times faster than numpy's; the board (no torch) takes the numpy path. Both are exact."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _torch_exact() -> bool:
    """Whether torch computes float32 products and sums in IEEE float32 (the default):
    integer arithmetic below 2^24 is then exact. Lower precision modes (TF32/bf16) take
    the numpy path."""
    torch = _torch()
    if torch.get_float32_matmul_precision() != "highest":
        return False
    mkldnn = torch.backends.mkldnn
    for scope in (mkldnn, getattr(mkldnn, "conv", None), getattr(mkldnn, "matmul", None)):
        if getattr(scope, "fp32_precision", "none") not in ("none", "ieee"):
            return False
    return True


def _depthwise_torch(windows: "_Windows", weights: np.ndarray, cdt) -> np.ndarray:
    torch = _torch()
    x = torch.from_numpy(np.ascontiguousarray(windows.x, dtype=cdt)).permute(0, 3, 1, 2)
    top, left, bottom, right = windows.pad
    padding = (0, 0)
    if (top, left) == (bottom, right):
        padding = (top, left)
    elif any(windows.pad):
        x = torch.nn.functional.pad(x, (left, right, top, bottom))
    w = torch.from_numpy(np.array(weights, dtype=cdt))  # a writable copy
    channels = w.shape[0]
    with torch.no_grad():
        y = torch.nn.functional.conv2d(x, w, stride=windows.stride, dilation=windows.dilation,
                                       padding=padding, groups=channels)
    oh, ow = windows.out_dim
    if tuple(y.shape[2:]) != (oh, ow):
        raise ToolchainError(f"depthwise convolution gave {tuple(y.shape[2:])} positions, the "
                             f"graph says {(oh, ow)}")
    return y.permute(0, 2, 3, 1).contiguous().numpy()


class DataflowEmulator:
    """A FINN dataflow graph (HW layers only) executed batched and bit-exact on the host."""

    def __init__(self, model_proto):
        from onnx import numpy_helper

        graph = model_proto.graph
        self.initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.datatypes = {a.tensor_name: _Type(p.value) for a in graph.quantization_annotation
                          for p in a.quant_parameter_tensor_names if p.key == "finn_datatype"}
        self.shapes = {}
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            dims = vi.type.tensor_type.shape.dim
            self.shapes[vi.name] = tuple(d.dim_value for d in dims)
        self.input_name = graph.input[0].name
        self.output_name = graph.output[0].name
        self.nodes = [_Node(n, self) for n in graph.node]
        consumers: dict[str, int] = {}
        for node in self.nodes:
            for name in node.inputs:
                consumers[name] = consumers.get(name, 0) + 1
        self._consumers = consumers
        self._prepared: dict[str, object] = {}
        self._weights: dict[str, np.ndarray] = {}
        for node in self.nodes:
            handler = getattr(self, f"_op_{node.op}", None)
            if handler is None:
                raise ToolchainError(
                    f"layer {node.name}: {node.op} is not supported by the fast emulator "
                    f"(supported: {', '.join(sorted(self.supported_ops()))})")
        self._prepare()

    @classmethod
    def from_file(cls, path) -> "DataflowEmulator":
        import onnx

        path = Path(path)
        try:
            proto = onnx.load(str(path))
        except Exception as exc:  # noqa: BLE001  (onnx raises DecodeError and others)
            raise ToolchainError(f"{path}: not a readable ONNX graph ({exc})") from None
        return cls(proto)

    @classmethod
    def supported_ops(cls) -> set[str]:
        return {name[4:] for name in dir(cls) if name.startswith("_op_")}

    def dtype(self, name: str) -> _Type:
        return self.datatypes.get(name, _Type("FLOAT32"))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shapes[self.input_name]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[self.output_name]

    # --- execution ------------------------------------------------------------------------

    def run(self, x: np.ndarray, threads: int = 2, chunk: int = _CHUNK) -> np.ndarray:
        """Execute on a batch `x` of shape (N, *input_shape[1:]); returns (N, *output_shape[1:]).

        Uses `threads` cores: the batch is cut into chunks of at most `chunk` frames (their
        intermediate tensors stay in the caches) executed by `threads` threads, each with
        one torch thread (numpy and torch release the GIL in the heavy loops; frames are
        independent, so the result does not depend on the split)."""
        x = np.asarray(x, dtype=np.float32)
        threads = max(int(threads), 1)
        parts = max(-(-len(x) // max(int(chunk), 1)), min(threads, len(x)), 1)
        pieces = np.array_split(x, parts) if parts > 1 else [x]
        torch = _torch()
        torch_threads = torch.get_num_threads() if torch is not None else None
        if torch is not None and torch_threads != 1:
            torch.set_num_threads(1)  # read by every new thread; restored below
        try:
            if threads == 1 or len(pieces) == 1:
                outs = [self.run_with_tensors(piece)[0] for piece in pieces]
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(threads) as pool:
                    outs = list(pool.map(lambda piece: self.run_with_tensors(piece)[0], pieces))
        finally:
            if torch is not None and torch_threads != 1:
                torch.set_num_threads(torch_threads)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def run_with_tensors(self, x: np.ndarray, tensors=()) -> tuple[np.ndarray, dict]:
        """`run` in this thread, also returning the named intermediate `tensors` (dense,
        batch first)."""
        x = np.asarray(x, dtype=np.float32)
        expected = self.input_shape[1:]
        if tuple(x.shape[1:]) != tuple(expected):
            raise ToolchainError(f"emulator input must have shape (N, {', '.join(map(str, expected))}),"
                                 f" got {x.shape}")
        env = {self.input_name: x}
        kept: dict[str, np.ndarray] = {}
        left = dict(self._consumers)
        use_torch = _torch() is not None and _torch_exact()
        for node in self.nodes:
            values = getattr(self, f"_op_{node.op}")(node, env, use_torch)
            for name, value in zip(node.outputs, values):
                shape = self.shapes.get(name)
                if isinstance(value, np.ndarray) and shape:
                    value = value.reshape(len(x), *shape[1:])
                env[name] = value
                if name in tensors:
                    kept[name] = (value.materialize().reshape(len(x), *shape[1:])
                                  if isinstance(value, _Lazy) else value)
            for name in node.inputs:
                if name in env and name in left:
                    left[name] -= 1
                    if left[name] == 0 and name != self.output_name:
                        del env[name]
        out = env[self.output_name]
        return (out.materialize() if isinstance(out, _Lazy) else out), kept

    def _dense(self, env, name: str) -> np.ndarray:
        value = env[name]
        return value.materialize() if isinstance(value, _Lazy) else value

    def _compute_dtype(self, node: _Node, acc_attr: str = "accDataType"):
        acc = node.attr(acc_attr)
        bits = _Type(acc).bits if acc else 32
        return np.float32 if bits <= _EXACT_F32_BITS else np.float64

    def _prepare(self) -> None:
        for node in self.nodes:
            if node.op == "Thresholding":
                act_val = node.attr("ActVal", 0)
                bipolar = node.attr("outputDataType") == "BIPOLAR"  # FINN: 2 * y - 1
                self._prepared[node.name] = _Threshold(
                    node.init(1), self.dtype(node.inputs[0]).integer,
                    2 * act_val - 1 if bipolar else act_val, 2 if bipolar else 1)
            elif node.op in ("MVAU", "VVAU") and node.attr("noActivation", 0) == 0:
                bipolar = node.attr("outputDataType") == "BIPOLAR"
                self._prepared[node.name] = _Threshold(
                    node.init(2), _Type(node.attr("accDataType") or "FLOAT32").integer,
                    -1 if bipolar else node.attr("ActVal", 0), 2 if bipolar else 1)
            if node.op == "MVAU":
                self._weights[node.name] = np.array(  # a writable copy (torch wants one)
                    node.init(1), dtype=self._compute_dtype(node), order="C")

    def _threshold(self, node, x: np.ndarray, use_torch: bool) -> np.ndarray:
        fn = self._prepared[node.name]
        return fn.torch_call(x) if use_torch else fn(x)

    # --- layers ---------------------------------------------------------------------------

    def _op_Thresholding(self, node, env, use_torch):
        x = self._dense(env, node.inputs[0])
        return [self._threshold(node, x, use_torch)]

    def _op_FMPadding(self, node, env, use_torch):
        x = self._dense(env, node.inputs[0])
        img = node.attr("ImgDim")
        x = x.reshape(len(x), img[0], img[1], node.attr("NumChannels"))
        return [_Padded(x, tuple(node.attr("Padding")))]

    def _op_ConvolutionInputGenerator(self, node, env, use_torch):
        value = env[node.inputs[0]]
        ifm, channels = node.attr("IFMDim"), node.attr("IFMChannels")
        pad = (0, 0, 0, 0)
        if isinstance(value, _Padded) and value.x.shape[1:] == (
                ifm[0] - value.pad[0] - value.pad[2], ifm[1] - value.pad[1] - value.pad[3],
                channels):
            x, pad = value.x, value.pad
        else:
            x = self._dense(env, node.inputs[0])
            x = x.reshape(len(x), ifm[0], ifm[1], channels)
        return [_Windows(x, tuple(node.attr("ConvKernelDim")), tuple(node.attr("Stride")),
                         tuple(node.attr("Dilation", [1, 1])), tuple(node.attr("OFMDim")), pad)]

    def _op_VVAU(self, node, env, use_torch):
        value = env[node.inputs[0]]
        kh, kw = node.attr("Kernel")
        channels = node.attr("Channels")
        w = node.init(1).reshape(channels, kh * kw)  # (C, 1, kh, kw)
        cdt = self._compute_dtype(node)
        bipolar = (node.attr("inputDataType") == "BIPOLAR"
                   and node.attr("weightDataType") == "BIPOLAR")
        if isinstance(value, _Windows) and use_torch and not bipolar:
            acc = _depthwise_torch(value, node.init(1), cdt)
            if node.attr("noActivation", 0) == 0:
                acc = self._threshold(node, acc, use_torch)
            return [acc.astype(np.float32, copy=False)]
        if isinstance(value, _Windows):
            taps = value.taps()
        else:  # dense input: FINN's layout, PE-interleaved
            value = self._dense(env, node.inputs[0])
            n, h, wd = value.shape[:3]
            pe = node.attr("PE")
            dense = value.reshape(n, h, wd, channels // pe, kh * kw, pe).transpose(
                0, 1, 2, 4, 3, 5).reshape(n, h, wd, kh * kw, channels)
            taps = ((k, dense[..., k, :]) for k in range(kh * kw))
        acc = tmp = None
        for k, view in taps:
            if acc is None:
                acc = view.astype(cdt) * w[:, k].astype(cdt)
                tmp = np.empty_like(acc)
            else:
                np.multiply(view, w[:, k].astype(cdt), out=tmp)
                acc += tmp
        if bipolar:
            acc = (acc + kh * kw) / 2
        if node.attr("noActivation", 0) == 0:
            acc = self._threshold(node, acc, use_torch)
        return [acc.astype(np.float32, copy=False)]

    def _op_MVAU(self, node, env, use_torch):
        x = self._dense(env, node.inputs[0])
        mw = node.attr("MW")
        w = self._weights[node.name]
        cdt = w.dtype
        # rows of MW inputs: also when the graph declares the input unflattened, e.g. a
        # (N, 1, 8, 128) feature map into a 1024-input fully connected layer
        lead = x.shape[:-1] if x.shape[-1] == mw else (len(x), x[0].size // mw)
        x2 = x.reshape(-1, mw).astype(cdt, copy=False)
        if node.attr("binaryXnorMode", 0):
            acc = x2 @ w + (1 - x2) @ (1 - w)
        elif (node.attr("inputDataType") == "BIPOLAR"
              and node.attr("weightDataType") == "BIPOLAR"):
            acc = (x2 @ w + mw) / 2
        elif use_torch:
            torch = _torch()
            acc = torch.mm(torch.from_numpy(np.ascontiguousarray(x2)),
                           torch.from_numpy(w)).numpy()
        else:
            acc = x2 @ w
        acc = acc.reshape(*lead, w.shape[1])
        if node.attr("noActivation", 0) == 0:
            acc = self._threshold(node, acc, use_torch)
        return [acc.astype(np.float32, copy=False)]

    def _op_Pool(self, node, env, use_torch):
        value = env[node.inputs[0]]
        fn = node.attr("Function")
        ch = node.attr("Channels")
        kh, kw = node.attr("KernelSize")
        if fn == "MaxPool" and use_torch and isinstance(value, _Windows):
            torch = _torch()
            x = torch.from_numpy(np.ascontiguousarray(value.padded)).permute(0, 3, 1, 2)
            y = torch.nn.functional.max_pool2d(x, value.kernel, value.stride,
                                               dilation=value.dilation)
            if tuple(y.shape[2:]) == tuple(value.out_dim):
                return [y.permute(0, 2, 3, 1).contiguous().numpy()]
        if isinstance(value, _Windows):
            windows = value.view()  # (N, OH, OW, C, KH, KW)
            axes = (-2, -1)
        else:
            windows = self._dense(env, node.inputs[0])
            windows = windows.reshape(*windows.shape[:-1], kh * kw, ch)
            axes = (-2,)
        if fn == "MaxPool":
            return [windows.max(axis=axes).astype(np.float32)]
        total = windows.sum(axis=axes, dtype=np.float64)  # exact integer sums
        if fn == "AccPool":
            return [total.astype(np.float32)]
        if fn == "QuantAvgPool":
            ibits = _Type(node.attr("InputDataType")).bits
            obits = _Type(node.attr("OutputDataType")).bits
            max_bits = int((2 ** ibits - 1) * kh * kw).bit_length()
            shift = max(max_bits - obits, 0)
            return [np.right_shift(total.astype(np.int64), shift).astype(np.float32)]
        raise ToolchainError(f"layer {node.name}: Pool function {fn} is not supported by the "
                             "fast emulator")

    def _op_GlobalAccPool(self, node, env, use_torch):
        x = self._dense(env, node.inputs[0])
        return [x.astype(np.float64).sum(axis=(1, 2), keepdims=True).astype(np.float32)]

    def _op_DuplicateStreams(self, node, env, use_torch):
        x = env[node.inputs[0]]
        return [x] * len(node.outputs)

    def _elementwise(self, node, env, fn, use_torch=False):
        out = node.attr("out_dtype")
        cdt = np.float32 if out and _Type(out).integer and _Type(out).bits < _EXACT_F32_BITS \
            else np.float64

        def operand(i):
            name = node.inputs[i]
            if name in self.initializers:
                return self.initializers[name].astype(cdt, copy=False)
            return self._dense(env, name).astype(cdt, copy=False)

        return [fn(operand(0), operand(1)).astype(np.float32, copy=False)]

    def _op_ElementwiseAdd(self, node, env, use_torch):
        return self._elementwise(node, env, np.add)

    def _op_ElementwiseSub(self, node, env, use_torch):
        return self._elementwise(node, env, np.subtract)

    def _op_ElementwiseMul(self, node, env, use_torch):
        return self._elementwise(node, env, np.multiply)

    def _op_ElementwiseMaximum(self, node, env, use_torch):
        return self._elementwise(node, env, np.maximum)

    def _op_ElementwiseMinimum(self, node, env, use_torch):
        return self._elementwise(node, env, np.minimum)

    def _op_LabelSelect(self, node, env, use_torch):
        x = self._dense(env, node.inputs[0])
        k = node.attr("K")
        flat = x.reshape(len(x), -1)
        if k == 1:  # ties: the lowest index, as onnx TopK (FINN's reference) orders them
            return [flat.argmax(axis=1)[:, None].astype(np.float32)]
        order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
        return [order.astype(np.float32)]

    def _op_Requant(self, node, env, use_torch):
        x = self._dense(env, node.inputs[0]).astype(np.float64)
        scale = node.init(1).astype(np.float64) if len(node.inputs) > 1 else 1.0
        bias = node.init(2).astype(np.float64) if len(node.inputs) > 2 else 0.0
        out = _Type(node.attr("outputDataType"))
        lo, hi = out.range
        if node.attr("narrow", 0) and out.name.startswith("INT"):
            lo += 1
        return [np.clip(np.floor(x * scale + bias + 0.5), lo, hi).astype(np.float32)]

    def _identity(self, node, env, use_torch):
        return [env[node.inputs[0]]]

    _op_StreamingFIFO = _identity
    _op_StreamingDataWidthConverter = _identity
