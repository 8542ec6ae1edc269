"""Fast, batched, bit-exact execution of a FINN dataflow graph (the accelerator's arithmetic).

FINN's own Python execution runs one frame at a time (qonnx's Im2Col mixes frames at batch > 1)
at about 13 frames/s. `DataflowEmulator` executes the same HW layers on a whole batch with numpy:
integer values held in float32 where every partial sum fits its 24-bit mantissa (accumulator
datatypes of at most 24 bits; float64 otherwise), so the results are the exact integers the
hardware computes. A test compares it with `hw.finn_flow.execute` node for node.

Layers (specialized `_hls`/`_rtl` variants run as their generic op): Thresholding, MVAU and VVAU
(with or without embedded thresholds), FMPadding, ConvolutionInputGenerator (its windows are
kept as a strided view and consumed by VVAU/Pool without building the im2col matrix),
Pool (MaxPool, AccPool, QuantAvgPool), GlobalAccPool, DuplicateStreams, Elementwise
Add/Sub/Mul/Max/Min, LabelSelect, Requant, and the identity layers FIFO and width converter.
Anything else raises `ToolchainError` naming the layer.

Needs numpy and the `onnx` package only: the graph is read from the ONNX file (weights and
thresholds from its initializers, datatypes from FINN's quantization annotations).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flows.errors import ToolchainError

__all__ = ["DataflowEmulator"]

_LUT_MAX_ENTRIES = 1 << 23  # thresholds on integer inputs become a lookup table up to this size
_EXACT_F32_BITS = 24  # integers up to 2^24 are exact in float32


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


@dataclass
class _Windows:
    """Sliding windows of a (N, H, W, C) tensor, as a ConvolutionInputGenerator streams them;
    materialized (im2col, kernel position major, channel minor) only when a consumer needs it."""

    x: np.ndarray
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    out_dim: tuple[int, int]

    def taps(self):
        """(kernel index, (N, OH, OW, C) view) for every kernel position, row-major."""
        (kh, kw), (sh, sw), (dh, dw), (oh, ow) = (self.kernel, self.stride, self.dilation,
                                                  self.out_dim)
        for i in range(kh):
            for j in range(kw):
                yield i * kw + j, self.x[:, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                                         j * dw: j * dw + sw * (ow - 1) + 1: sw, :]

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


class _Threshold:
    """y = (number of thresholds t[c] <= x) * out_scale + out_bias, channels last: the
    MultiThreshold of FINN; a lookup table when the input is an integer type of small range."""

    def __init__(self, thresholds: np.ndarray, in_type: _Type, out_bias: float,
                 out_scale: float = 1.0):
        thresholds = np.sort(np.asarray(thresholds, dtype=np.float64)
                             .reshape(len(thresholds), -1), axis=1)  # counting ignores order
        self.thresholds = thresholds
        self.out_bias, self.out_scale = float(out_bias), float(out_scale)
        self.lut = None
        channels, steps = thresholds.shape
        if in_type.integer and in_type.bits <= 24:
            lo, hi = in_type.range
            if channels * (hi - lo + 1) <= _LUT_MAX_ENTRIES:
                values = np.arange(lo, hi + 1, dtype=np.float64)
                counts = np.stack([np.searchsorted(t, values, side="right") for t in thresholds])
                # (channels, range) flattened; channel c's entry for x sits at x + offset[c]
                self.lut = (counts * self.out_scale + self.out_bias).astype(np.float32).ravel()
                self.offset = (np.arange(channels) * (hi - lo + 1) - lo).astype(np.float32)
                self.lo, self.hi = lo, hi
        # For other inputs: a linear guess of the count from the first and last threshold,
        # then corrected until t[count - 1] <= x < t[count] holds (exact, like searchsorted).
        self.padded = np.concatenate([np.full((channels, 1), -np.inf), thresholds,
                                      np.full((channels, 1), np.inf)], axis=1)
        span = thresholds[:, -1] - thresholds[:, 0]
        self.t0 = thresholds[:, 0]
        self.inv_step = np.where(span > 0, (steps - 1) / np.where(span > 0, span, 1), 0.0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        channels, steps = self.thresholds.shape
        if self.lut is not None and x.size and x.min() >= self.lo and x.max() <= self.hi:
            # x + offset[c] is an exact integer in float32 (below 2^23 entries)
            idx = (x + (self.offset if channels > 1 else self.offset[0])).astype(np.int32)
            return np.take(self.lut, idx)
        ch = np.arange(channels) if channels > 1 else 0
        guess = np.floor((x - self.t0) * self.inv_step) + 1
        count = np.clip(np.nan_to_num(guess), 0, steps).astype(np.int64)
        row = ch * (steps + 2)
        flat = self.padded.ravel()
        for _ in range(steps + 1):  # each pass moves every wrong count one step closer
            below = x < flat[row + count]  # t[count - 1] > x: count too high
            above = x >= flat[row + count + 1]  # t[count] <= x: count too low
            if not (below.any() or above.any()):
                break
            count = count - below + above
        return (count * self.out_scale + self.out_bias).astype(np.float32)


def _torch():
    """torch if installed (the host): its channels-last depthwise convolution is ~5x faster than
    numpy's; the board (no torch) takes the numpy path. Both are exact (integer sums < 2^24)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _depthwise_torch(windows: _Windows, weights: np.ndarray, cdt) -> np.ndarray:
    torch = _torch()
    x = torch.from_numpy(np.ascontiguousarray(windows.x, dtype=cdt)).permute(0, 3, 1, 2)
    w = torch.from_numpy(np.array(weights, dtype=cdt))  # a writable copy
    channels = w.shape[0]
    with torch.no_grad():
        y = torch.nn.functional.conv2d(x, w, stride=windows.stride, dilation=windows.dilation,
                                       groups=channels)
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

    def run(self, x: np.ndarray, threads: int = 2) -> np.ndarray:
        """Execute on a batch `x` of shape (N, *input_shape[1:]); returns (N, *output_shape[1:]).

        The batch is split over `threads` threads (numpy and torch release the GIL in the
        heavy loops; frames are independent, so the result does not depend on the split)."""
        x = np.asarray(x, dtype=np.float32)
        if threads <= 1 or len(x) < 2 * threads:
            return self.run_with_tensors(x)[0]
        from concurrent.futures import ThreadPoolExecutor

        parts = np.array_split(x, threads)
        with ThreadPoolExecutor(threads) as pool:
            outs = list(pool.map(lambda part: self.run_with_tensors(part)[0], parts))
        return np.concatenate(outs)

    def run_with_tensors(self, x: np.ndarray, tensors=()) -> tuple[np.ndarray, dict]:
        """`run`, also returning the named intermediate `tensors` (dense, batch first)."""
        x = np.asarray(x, dtype=np.float32)
        expected = self.input_shape[1:]
        if tuple(x.shape[1:]) != tuple(expected):
            raise ToolchainError(f"emulator input must have shape (N, {', '.join(map(str, expected))}),"
                                 f" got {x.shape}")
        env = {self.input_name: x}
        kept: dict[str, np.ndarray] = {}
        left = dict(self._consumers)
        for node in self.nodes:
            values = getattr(self, f"_op_{node.op}")(node, env)
            for name, value in zip(node.outputs, values):
                shape = self.shapes.get(name)
                if isinstance(value, np.ndarray) and shape:
                    value = value.reshape(len(x), *shape[1:])
                env[name] = value
                if name in tensors:
                    kept[name] = value.materialize() if isinstance(value, _Windows) else value
            for name in node.inputs:
                if name in env and name in left:
                    left[name] -= 1
                    if left[name] == 0 and name != self.output_name:
                        del env[name]
        out = env[self.output_name]
        return (out.materialize() if isinstance(out, _Windows) else out), kept

    def _dense(self, env, name: str) -> np.ndarray:
        value = env[name]
        return value.materialize() if isinstance(value, _Windows) else value

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
                    node.init(1), self.dtype(node.inputs[0]),
                    2 * act_val - 1 if bipolar else act_val, 2 if bipolar else 1)
            elif node.op in ("MVAU", "VVAU") and node.attr("noActivation", 0) == 0:
                bipolar = node.attr("outputDataType") == "BIPOLAR"
                self._prepared[node.name] = _Threshold(
                    node.init(2), _Type(node.attr("accDataType") or "FLOAT32"),
                    -1 if bipolar else node.attr("ActVal", 0), 2 if bipolar else 1)

    # --- layers ---------------------------------------------------------------------------

    def _op_Thresholding(self, node, env):
        x = self._dense(env, node.inputs[0])
        return [self._prepared[node.name](x)]

    def _op_FMPadding(self, node, env):
        x = self._dense(env, node.inputs[0])
        top, left, bottom, right = node.attr("Padding")
        return [np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))]

    def _op_ConvolutionInputGenerator(self, node, env):
        x = self._dense(env, node.inputs[0])
        n = len(x)
        ifm = node.attr("IFMDim")
        x = x.reshape(n, ifm[0], ifm[1], node.attr("IFMChannels"))
        return [_Windows(x, tuple(node.attr("ConvKernelDim")), tuple(node.attr("Stride")),
                         tuple(node.attr("Dilation", [1, 1])), tuple(node.attr("OFMDim")))]

    def _op_VVAU(self, node, env):
        value = env[node.inputs[0]]
        kh, kw = node.attr("Kernel")
        channels = node.attr("Channels")
        w = node.init(1).reshape(channels, kh * kw)  # (C, 1, kh, kw)
        cdt = self._compute_dtype(node)
        bipolar = (node.attr("inputDataType") == "BIPOLAR"
                   and node.attr("weightDataType") == "BIPOLAR")
        if isinstance(value, _Windows) and _torch() is not None and not bipolar:
            acc = _depthwise_torch(value, node.init(1), cdt)
            if node.attr("noActivation", 0) == 0:
                acc = self._prepared[node.name](acc)
            return [acc.astype(np.float32, copy=False)]
        if isinstance(value, _Windows):
            taps = value.taps()
        else:  # dense input: FINN's layout, PE-interleaved
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
            acc = self._prepared[node.name](acc)
        return [acc.astype(np.float32, copy=False)]

    def _op_MVAU(self, node, env):
        x = self._dense(env, node.inputs[0])
        mw = node.attr("MW")
        w = node.init(1)
        cdt = self._compute_dtype(node)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, mw).astype(cdt, copy=False)
        w = w.astype(cdt, copy=False)
        if node.attr("binaryXnorMode", 0):
            acc = x2 @ w + (1 - x2) @ (1 - w)
        elif (node.attr("inputDataType") == "BIPOLAR"
              and node.attr("weightDataType") == "BIPOLAR"):
            acc = (x2 @ w + mw) / 2
        else:
            acc = x2 @ w
        acc = acc.reshape(*lead, w.shape[1])
        if node.attr("noActivation", 0) == 0:
            acc = self._prepared[node.name](acc)
        return [acc.astype(np.float32, copy=False)]

    def _op_Pool(self, node, env):
        value = env[node.inputs[0]]
        fn = node.attr("Function")
        ch = node.attr("Channels")
        kh, kw = node.attr("KernelSize")
        if isinstance(value, _Windows):
            views = [v for _, v in value.taps()]
        else:
            tmp = value.reshape(*value.shape[:-1], kh * kw, ch)
            views = [tmp[..., k, :] for k in range(kh * kw)]
        if fn == "MaxPool":
            out = views[0]
            for v in views[1:]:
                out = np.maximum(out, v)
            return [np.array(out, dtype=np.float32)]
        total = np.zeros(views[0].shape, dtype=np.float64)
        for v in views:
            total = total + v
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

    def _op_GlobalAccPool(self, node, env):
        x = self._dense(env, node.inputs[0])
        return [x.astype(np.float64).sum(axis=(1, 2), keepdims=True).astype(np.float32)]

    def _op_DuplicateStreams(self, node, env):
        x = env[node.inputs[0]]
        return [x] * len(node.outputs)

    def _elementwise(self, node, env, fn):
        out = node.attr("out_dtype")
        cdt = np.float32 if out and _Type(out).integer and _Type(out).bits < _EXACT_F32_BITS \
            else np.float64

        def operand(i):
            name = node.inputs[i]
            if name in self.initializers:
                return self.initializers[name].astype(cdt, copy=False)
            return self._dense(env, name).astype(cdt, copy=False)

        return [fn(operand(0), operand(1)).astype(np.float32, copy=False)]

    def _op_ElementwiseAdd(self, node, env):
        return self._elementwise(node, env, np.add)

    def _op_ElementwiseSub(self, node, env):
        return self._elementwise(node, env, np.subtract)

    def _op_ElementwiseMul(self, node, env):
        return self._elementwise(node, env, np.multiply)

    def _op_ElementwiseMaximum(self, node, env):
        return self._elementwise(node, env, np.maximum)

    def _op_ElementwiseMinimum(self, node, env):
        return self._elementwise(node, env, np.minimum)

    def _op_LabelSelect(self, node, env):
        x = self._dense(env, node.inputs[0])
        k = node.attr("K")
        flat = x.reshape(len(x), -1)
        if k == 1:  # ties: the lowest index, as onnx TopK (FINN's reference) orders them
            return [flat.argmax(axis=1)[:, None].astype(np.float32)]
        order = np.argsort(-flat, axis=1, kind="stable")[:, :k]
        return [order.astype(np.float32)]

    def _op_Requant(self, node, env):
        x = self._dense(env, node.inputs[0]).astype(np.float64)
        scale = node.init(1).astype(np.float64) if len(node.inputs) > 1 else 1.0
        bias = node.init(2).astype(np.float64) if len(node.inputs) > 2 else 0.0
        out = _Type(node.attr("outputDataType"))
        lo, hi = out.range
        if node.attr("narrow", 0) and out.name.startswith("INT"):
            lo += 1
        return [np.clip(np.floor(x * scale + bias + 0.5), lo, hi).astype(np.float32)]

    def _identity(self, node, env):
        return [env[node.inputs[0]]]

    _op_StreamingFIFO = _identity
    _op_StreamingDataWidthConverter = _identity
