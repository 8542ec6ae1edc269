"""Graph transformations that fill gaps in finn-plus 1.6.1 on residual 1D CNNs.

Each class follows the qonnx contract (`apply(model) -> (model, changed)`, where `changed`
asks `ModelWrapper.transform` to apply it once more), does one thing, and is written so it
could be proposed upstream. Which stock behaviour each one works around, with a graph that
shows it, is in `tests/hw/test_transforms.py`; the measurements are in the project notes on
finn-plus.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import get_by_name

__all__ = [
    "FINN_MAPPABLE_OP_TYPES",
    "OUTPUT_SCALE_KEY",
    "AbsorbChannelPermutationIntoConv",
    "AbsorbLinearIntoHostPartition",
    "AbsorbTransposeIntoFlattenStrict",
    "ConvBiasQuantParamsAs1d",
    "InferDuplicateStreamsBetweenHWLayers",
    "IntegerizeAddConstant",
    "LiftConv1dTo2d",
    "MakeForkedMaxPoolNHWC",
    "MoveLinearPastEltwiseAddForkSafe",
    "QuantSigmoidToMultiThreshold",
    "RecordTopKInputScale",
    "RepeatUntilFixpoint",
    "SplitOffHostBranch",
    "StreamlineTidyOnChange",
]

# Metadata key under which `RecordTopKInputScale` keeps the scale of the scores that enter the
# TopK / LabelSelect at the graph output: logits = scores * float(metadata[OUTPUT_SCALE_KEY]).
OUTPUT_SCALE_KEY = "output_scale"

_TO_NHWC = [0, 2, 3, 1]
_TO_NCHW = [0, 3, 1, 2]


def _graph_fingerprint(model: ModelWrapper) -> bytes:
    """Bytes that change whenever a node, its wiring or a constant changes (value_info and
    annotations are left out: shape and datatype inference rewrite them in every pass)."""
    graph = model.graph
    parts = [n.SerializeToString(deterministic=True) for n in graph.node]
    parts += [t.SerializeToString(deterministic=True) for t in graph.initializer]
    return b"\0".join(parts)


def _perm(node) -> list[int] | None:
    attr = get_by_name(node.attribute, "perm")
    return list(attr.ints) if attr is not None else None


class StreamlineTidyOnChange(Transformation):
    """finn's `Streamline`, tidying up only after a transformation that changed the graph.

    finn's version follows each of its 22 transformations with five tidy-ups (identity ops
    removed, node and tensor names regenerated, datatypes and layouts inferred), 130 passes
    over the graph, also after the many transformations that found nothing to do. Those
    tidy-ups are idempotent, so on a graph that the previous tidy-up left and the
    transformation did not touch they change nothing: this version skips them there. The
    result is byte-identical to finn's (tests/hw/test_transforms.py); a third of the
    streamlining time of the 8-bit VGG10.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        from finn.transformation.streamline import absorb, collapse_repeated, reorder
        from finn.transformation.streamline.sign_to_thres import ConvertSignToThres
        from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
        from qonnx.transformation.general import (ConvertDivToMul, ConvertSubToAdd,
                                                  GiveReadableTensorNames, GiveUniqueNodeNames)
        from qonnx.transformation.infer_data_layouts import InferDataLayouts
        from qonnx.transformation.remove import RemoveIdentityOps

        transformations = [  # finn-plus 1.6.1's Streamline.apply, in its order
            ConvertSubToAdd(), ConvertDivToMul(), BatchNormToAffine(), ConvertSignToThres(),
            reorder.MoveMulPastMaxPool(), absorb.AbsorbScalarBiasIntoMultiThreshold(),
            reorder.MoveScalesPastIm2Col(), reorder.MoveScalarLinearPastInvariants(),
            reorder.MoveAddPastMul(), reorder.MoveScalarAddPastMatMul(),
            reorder.MoveAddPastConv(), reorder.MoveScalarMulPastMatMul(),
            reorder.MoveScalarMulPastConv(), reorder.MoveAddPastMul(),
            collapse_repeated.CollapseRepeatedAdd(), collapse_repeated.CollapseRepeatedMul(),
            reorder.MoveMulPastMaxPool(), absorb.AbsorbAddIntoMultiThreshold(),
            absorb.FactorOutMulSignMagnitude(), absorb.AbsorbMulIntoMultiThreshold(),
            absorb.Absorb1BitMulIntoMatMul(), absorb.Absorb1BitMulIntoConv(),
        ]
        tidy = (RemoveIdentityOps, GiveUniqueNodeNames, GiveReadableTensorNames,
                InferDataTypes, InferDataLayouts)
        tidied = None  # the graph as the last tidy-up left it
        self.tidy_skipped = 0
        for transformation in transformations:
            model = model.transform(transformation)
            if tidied is not None and \
                    model.model.SerializeToString(deterministic=True) == tidied:
                self.tidy_skipped += 1
                continue
            for step in tidy:
                model = model.transform(step())
            tidied = model.model.SerializeToString(deterministic=True)
        return (model, False)


class RepeatUntilFixpoint(Transformation):
    """Apply a sequence of transformations over and over until a whole pass leaves the graph
    unchanged.

    Streamlining a residual network needs this: moving a scale past a fork creates the two
    equal scales that `MoveLinearPastEltwiseAdd` merges at the join, which `Streamline` then
    absorbs, which can expose the next fork. Raises if no fixpoint is reached within
    `max_passes` (a transformation pair that undoes each other).
    """

    def __init__(self, transformations: Sequence[Transformation], max_passes: int = 20):
        super().__init__()
        if not transformations:
            raise ValueError("RepeatUntilFixpoint needs at least one transformation")
        self.transformations = tuple(transformations)
        self.max_passes = max_passes
        self.passes_run = 0  # passes of the last apply(), the last one changing nothing

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for n_pass in range(1, self.max_passes + 1):
            before = _graph_fingerprint(model)
            for transformation in self.transformations:
                model = model.transform(transformation)
            if _graph_fingerprint(model) == before:
                self.passes_run = n_pass
                # Already at the fixpoint: asking for another application would be a no-op.
                return model, False
        names = ", ".join(type(t).__name__ for t in self.transformations)
        raise RuntimeError(f"no fixpoint after {self.max_passes} passes of [{names}]")


class MoveLinearPastEltwiseAddForkSafe(Transformation):
    """(x * C) + (y * C) -> (x + y) * C and (x + A) + (y + B) -> (x + y) + (A + B), skipping
    joins where a Mul/Add producer also feeds another node.

    finn's `MoveLinearPastEltwiseAdd` rewires such a producer regardless: its output tensor
    stops being produced and the other consumer silently reads a stale or zero tensor. Here
    those joins are left alone; run `MoveLinearPastFork` first to split the producer so the
    join can be simplified.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            producers = self._movable_producers(model, node)
            if producers is None:
                continue
            self._move(model, node, *producers)
            model = model.transform(InferShapes())
            model = model.transform(InferDataTypes())
            return model, True  # one join at a time: the node list has changed
        return model, False

    @staticmethod
    def _movable_producers(model: ModelWrapper, node):
        """(prod0, prod1) if `node` is a join Add whose inputs both come from single-consumer
        Mul nodes with equal constants or Add nodes with constants; else None."""
        if node.op_type != "Add" or len(node.input) != 2:
            return None
        if any(model.get_initializer(name) is not None for name in node.input):
            return None
        prod0, prod1 = (model.find_producer(name) for name in node.input)
        if prod0 is None or prod1 is None or prod0 is prod1:
            return None
        if prod0.op_type != prod1.op_type or prod0.op_type not in ("Mul", "Add"):
            return None
        if model.is_fork_node(prod0) or model.is_fork_node(prod1):
            return None
        c0, c1 = (model.get_initializer(p.input[1]) for p in (prod0, prod1))
        if c0 is None or c1 is None:
            return None
        if prod0.op_type == "Mul" and not np.array_equal(c0, c1):
            return None
        return prod0, prod1

    @staticmethod
    def _move(model: ModelWrapper, add, prod0, prod1) -> None:
        """Rewire x -> prod0 -> add <- prod1 <- y into (x, y) -> add -> prod0."""
        graph = model.graph
        if prod0.op_type == "Add":
            model.set_initializer(prod0.input[1], model.get_initializer(prod0.input[1])
                                  + model.get_initializer(prod1.input[1]))
        mid, out = add.input[0], add.output[0]
        add.input[0], add.input[1] = prod0.input[0], prod1.input[0]
        add.output[0] = mid
        prod0.input[0], prod0.output[0] = mid, out
        graph.node.remove(prod1)
        graph.node.remove(prod0)
        graph.node.insert(list(graph.node).index(add) + 1, prod0)
        # The two tensors changed meaning: let shape and datatype inference redo them.
        model.set_tensor_shape(mid, None)
        model.set_tensor_shape(out, None)
        model.set_tensor_datatype(mid, DataType["FLOAT32"])


class MakeForkedMaxPoolNHWC(Transformation):
    """Turn an NCHW MaxPool whose output forks, one branch into an NHWC Transpose, into
    Transpose(NHWC) -> MaxPoolNHWC, feeding the NHWC branches directly and the others through
    one Transpose back to NCHW.

    finn's `MakeMaxPoolNHWC` looks only at the first consumer: it swaps MaxPool and that
    Transpose and the other branches keep reading the old MaxPool output, which nothing
    produces any more. Run this before `MakeMaxPoolNHWC`, which then handles the unforked
    MaxPools; the Transpose left in front of the pool cancels with the one lowering put there.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            if node.op_type != "MaxPool":
                continue
            consumers = model.find_consumers(node.output[0])
            to_nhwc = [c for c in consumers
                       if c.op_type == "Transpose" and _perm(c) == _TO_NHWC]
            if len(consumers) < 2 or not to_nhwc:
                continue
            self._check_supported(model, node, to_nhwc)
            self._rewrite(model, node, consumers, to_nhwc)
            return model.transform(InferShapes()), True
        return model, False

    @staticmethod
    def _check_supported(model: ModelWrapper, node, to_nhwc) -> None:
        dilations = get_by_name(node.attribute, "dilations")
        if dilations is not None and any(d != 1 for d in dilations.ints):
            raise ValueError(f"{node.name}: MaxPoolNHWC has no dilation; got "
                             f"{list(dilations.ints)}")
        if len(model.get_tensor_shape(node.input[0])) != 4:
            raise ValueError(f"{node.name}: expected a 4D NCHW input")
        graph_outputs = {o.name for o in model.graph.output}
        for t in to_nhwc:
            if t.output[0] in graph_outputs:
                raise ValueError(f"{t.name}: an NHWC Transpose that is a graph output cannot "
                                 "be absorbed; add an Identity behind it")

    @staticmethod
    def _rewrite(model: ModelWrapper, pool, consumers, to_nhwc) -> None:
        graph = model.graph
        x, y = pool.input[0], pool.output[0]
        b, c, h, w = model.get_tensor_shape(x)
        _, _, ho, wo = model.get_tensor_shape(y)
        x_nhwc, y_nhwc = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
        model.set_tensor_shape(x_nhwc, [b, h, w, c])
        model.set_tensor_shape(y_nhwc, [b, ho, wo, c])
        model.set_tensor_datatype(x_nhwc, model.get_tensor_datatype(x))
        model.set_tensor_datatype(y_nhwc, model.get_tensor_datatype(y))

        def attr(name, default):
            found = get_by_name(pool.attribute, name)
            return default if found is None else (found.i if name == "ceil_mode" else
                                                  list(found.ints))

        # MaxPoolNHWC wants every attribute that ONNX MaxPool lets default
        nhwc_pool = helper.make_node(
            "MaxPoolNHWC", [x_nhwc], [y_nhwc], name=pool.name, domain="qonnx.custom_op.general",
            kernel_shape=attr("kernel_shape", None), pads=attr("pads", [0, 0, 0, 0]),
            strides=attr("strides", [1, 1]), ceil_mode=attr("ceil_mode", 0))
        index = list(graph.node).index(pool)
        graph.node.remove(pool)
        new_nodes = [helper.make_node("Transpose", [x], [x_nhwc], perm=_TO_NHWC,
                                      name=pool.name + "_to_nhwc"), nhwc_pool]
        if len(to_nhwc) < len(consumers):  # NCHW branches remain: give them y back
            new_nodes.append(helper.make_node("Transpose", [y_nhwc], [y], perm=_TO_NCHW,
                                              name=pool.name + "_to_nchw"))
        for offset, new in enumerate(new_nodes):
            graph.node.insert(index + offset, new)
        for t in to_nhwc:
            for reader in model.find_consumers(t.output[0]):
                for i, name in enumerate(reader.input):
                    if name == t.output[0]:
                        reader.input[i] = y_nhwc
            graph.node.remove(t)


class IntegerizeAddConstant(Transformation):
    """Add(x, c) with an integer x and a constant c whose every value lies within rounding
    error of an integer: round c and annotate it with the smallest integer datatype.

    Streamlining a quantized linear layer with an integer bias (Brevitas `Int32Bias`, bias =
    b_int * s) and moving its scale to the end (`MoveMulPastAdd`) leaves b / s in float32,
    e.g. 240.99998 for 241. As float, the Add becomes a FLOAT32 hardware layer; rounded, it is
    an exact integer add. The change is at most `atol + rtol * |c|` per element.
    """

    def __init__(self, atol: float = 1e-3, rtol: float = 1e-6):
        super().__init__()
        self.atol = atol
        self.rtol = rtol

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        changed = False
        for node in model.graph.node:
            if node.op_type != "Add" or len(node.input) != 2:
                continue
            const_name = next((n for n in node.input if model.get_initializer(n) is not None),
                              None)
            dyn_name = next((n for n in node.input if model.get_initializer(n) is None), None)
            if const_name is None or dyn_name is None:
                continue
            if not model.get_tensor_datatype(dyn_name).is_integer():
                continue
            const = model.get_initializer(const_name)
            if model.get_tensor_datatype(const_name).is_integer():
                continue
            rounded = np.round(const)
            if not np.all(np.abs(const - rounded) <= self.atol + self.rtol * np.abs(const)):
                continue
            model.set_initializer(const_name, rounded.astype(np.float32))
            model.set_tensor_datatype(const_name, _smallest_int_type(rounded))
            changed = True
        if changed:
            model = model.transform(InferDataTypes())
        return model, False


def _smallest_int_type(values: np.ndarray) -> DataType:
    """Smallest (U)INT datatype holding every value."""
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0:
        return DataType.get_smallest_possible(hi)
    # INTn holds [-2^(n-1), 2^(n-1) - 1]: the type holding min(lo, -hi - 1) holds both ends
    return DataType.get_smallest_possible(min(lo, -hi - 1))


class RecordTopKInputScale(Transformation):
    """Record, as model metadata `output_scale`, the positive scalar Mul feeding the TopK at the
    graph output.

    finn's `AbsorbScalarMulAddIntoTopK` deletes that Mul: class indices do not change, but the
    scores that reach TopK (and later LabelSelect) are then logits / scale. Recording the scale
    lets a driver or a verification step recover the logits. Run it just before the absorption,
    after streamlining has collapsed consecutive Muls into one (a chain is not followed). When
    the TopK reads a tensor no Mul or Add produces (a host part ends the graph), the scale is 1.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        topks = model.get_nodes_by_op_type("TopK")
        if len(topks) != 1:
            raise ValueError(f"expected one TopK node, found {len(topks)}; run InsertTopK first")
        producer = model.find_producer(topks[0].input[0])
        if producer is None or producer.op_type not in ("Mul", "Add"):
            # nothing for the absorption to delete: the scores are the logits
            model.set_metadata_prop(OUTPUT_SCALE_KEY, repr(1.0))
            return model, False
        if producer.op_type != "Mul":
            return model, False
        scale = model.get_initializer(producer.input[1])
        if scale is None or scale.size != 1 or float(scale.item()) <= 0:
            return model, False
        model.set_metadata_prop(OUTPUT_SCALE_KEY, repr(float(scale.item())))
        return model, False


class LiftConv1dTo2d(Transformation):
    """A 1D graph (input (N, C, L): QuantConv1d, BatchNorm1d, MaxPool1d, ...) becomes the
    (1, k)-Conv2d graph FINN maps: every (N, C, L) activation becomes (N, C, 1, L), kernels
    (k,) become (1, k), and constants that broadcast over (N, C, L) gain the same unit axis.

    qonnx's `Change3DTo4DTensors` lifts to (N, C, L, 1) with (k, 1) kernels, leaves
    `dilations=[1]` beside a 2-D `kernel_shape` on MaxPool (onnxruntime rejects it) and skips
    Quant graphs altogether; FINN's 1D support (SWG, pooling, the project's fixes) is built for
    the (1, k) form. Rank-3 activations are assumed channels-first, as QuantConv1d's are;
    a node this cannot lift (a Reshape to 3D, axis-bearing reductions, ...) is an error naming
    it. The graph input becomes (N, C, 1, L): a view of the same bytes, fed by the host.
    """

    # ops whose 1D form this knows how to lift; 2D tensors after a Flatten pass untouched
    ELEMENTWISE = ("Quant", "Trunc", "BipolarQuant", "MultiThreshold", "Relu", "Add", "Sub",
                   "Mul", "Div", "BatchNormalization", "Identity", "HardTanh", "Clip",
                   "Sigmoid", "Tanh")
    SPATIAL = ("Conv", "MaxPool", "AveragePool")
    SHAPE_FREE = ("Flatten", "GlobalAveragePool", "GlobalMaxPool", "MatMul", "Gemm",
                  "Transpose", "Ceil", "TopK", "ArgMax", "Reshape", "Concat")

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        in_name = graph.input[0].name
        if len(model.get_tensor_shape(in_name)) != 3:
            return model, False
        inits = {init.name for init in graph.initializer}
        rank3 = {name for name in _activation_names(model)
                 if name not in inits and len(model.get_tensor_shape(name) or ()) == 3}
        for node in graph.node:
            self._check(model, node, rank3)
        for node in graph.node:
            if node.op_type in self.SPATIAL and node.input[0] in rank3:
                _lift_spatial_attributes(node)
            lifts_constants = (node.op_type in self.ELEMENTWISE + self.SPATIAL
                               and any(name in rank3 for name in node.input))
            for name in node.input:
                const = model.get_initializer(name) if name in inits else None
                if const is None:
                    continue
                if const.ndim == 3:  # weights (O, I, k), per-channel (O, 1, 1) / (1, C, 1)
                    model.set_initializer(name, np.expand_dims(const, 2))
                elif const.ndim == 2 and lifts_constants:  # (C, 1) broadcast over (N, C, L)
                    model.set_initializer(name, const[None, :, None, :])
        shape = model.get_tensor_shape(in_name)
        model.set_tensor_shape(in_name, [shape[0], shape[1], 1, shape[2]])
        for out in graph.output:
            out_shape = model.get_tensor_shape(out.name)
            if len(out_shape) == 3:
                model.set_tensor_shape(out.name, [out_shape[0], out_shape[1], 1, out_shape[2]])
        keep = {graph.input[0].name} | {o.name for o in graph.output}
        for info in list(graph.value_info):
            if info.name not in keep and len(model.get_tensor_shape(info.name) or ()) in (3, 4):
                graph.value_info.remove(info)  # recomputed below
        return model.transform(InferShapes()), False

    def _check(self, model: ModelWrapper, node, rank3: set[str]) -> None:
        from flows.errors import ToolchainError

        touches = [name for name in list(node.input) + list(node.output) if name in rank3]
        if not touches:
            return
        known = self.ELEMENTWISE + self.SPATIAL + self.SHAPE_FREE
        problem = None
        if node.op_type not in known:
            problem = f"its op type {node.op_type} has no known (1, k) form here"
        elif node.op_type == "Reshape" and any(
                len(model.get_tensor_shape(o) or ()) == 3 for o in node.output):
            problem = "it reshapes to a 3D tensor, whose layout cannot be told"
        elif node.op_type in ("Transpose", "Concat", "TopK", "ArgMax", "MatMul", "Gemm"):
            problem = f"its {node.op_type} acts on a 3D tensor's axes"
        if problem:
            raise ToolchainError(
                f"cannot turn the 1D graph into the (1, k) 2D form FINN maps: node {node.name} "
                f"({node.op_type}) on {touches[0]}: {problem}. Write the model with (1, k) "
                "Conv2d layers on (N, C, 1, L) input instead")


def _activation_names(model: ModelWrapper) -> list[str]:
    names = [i.name for i in model.graph.input] + [o.name for o in model.graph.output]
    return names + [o for node in model.graph.node for o in node.output]


def _lift_spatial_attributes(node) -> None:
    """(k,) kernel, [b, e] pads, (s,) strides, (d,) dilations -> their (1, k) forms."""
    for attr in node.attribute:
        if attr.name in ("kernel_shape", "strides", "dilations") and len(attr.ints) == 1:
            attr.ints.insert(0, 1)
        elif attr.name == "pads" and len(attr.ints) == 2:
            begin, end = attr.ints
            del attr.ints[:]
            attr.ints.extend([0, begin, 0, end])


class ConvBiasQuantParamsAs1d(Transformation):
    """A Conv whose bias comes from a Quant node (Brevitas `Int32Bias`) with a 0-d zero point
    or scale: reshape those to (1,).

    qonnx 1.0.0's `ExtractBiasFromConv` (run by FINN's `ConvertQONNXtoFINN`) keeps a Quant
    parameter as it is only when its shape is (1,); a 0-d one is reshaped to the bias shape
    (1, C, 1, 1) and fails ("cannot reshape array of size 1"). Hakimi7's int32 biases hit it.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 3:
                continue
            producer = model.find_producer(node.input[2])
            if producer is None or producer.op_type not in ("Quant", "IntQuant", "BipolarQuant"):
                continue
            for name in producer.input[1:3]:
                value = model.get_initializer(name)
                if value is not None and value.ndim == 0:
                    model.set_initializer(name, value.reshape(1))
        return model, False


# --- host branch -------------------------------------------------------------------------------

# Op types the project's FINN flow streamlines or maps onto HW layers. Anything else has no HW
# layer: `SplitOffHostBranch` moves it to the host when the model computes it from the raw input.
FINN_MAPPABLE_OP_TYPES = frozenset({
    "Quant", "BipolarQuant", "Trunc", "MultiThreshold", "Conv", "MatMul", "Gemm",
    "BatchNormalization", "Relu", "Add", "Sub", "Mul", "Div", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Concat",
    "Identity", "Pad", "Clip", "TopK", "Unsqueeze", "Squeeze",
})

# Layers that make a feature map (what a host branch must not be computed from).
_LAYER_OP_TYPES = frozenset({"Conv", "MatMul", "Gemm", "MultiThreshold", "MaxPool",
                             "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})
_QUANT_OP_TYPES = frozenset({"Quant", "BipolarQuant", "Trunc"})


class SplitOffHostBranch(Transformation):
    """Move a branch the model computes in software from the raw input (and the layers that
    combine it with the network's result) into one `HostPartition` node (`hw.host_ops`).

    The branch is found from the op types FINN has no HW layer for (`mappable` lists those it
    has): such a node is allowed only if it is computed from the graph input without passing
    a layer (conv, matmul, activation quantizer, pool); every node computed from it joins it,
    and so do the shape-only producers that feed nothing else. A node FINN cannot map that is
    computed from a layer's output is an error naming it: that is part of the network, not a
    host branch. The host part has to end at the graph output (so the HW partition stays
    one). Its activation quantizers become plain ONNX ops with the same arithmetic (clip, then
    round) and weight quantizers are folded, so the part runs in one onnxruntime session.
    """

    def __init__(self, mappable=FINN_MAPPABLE_OP_TYPES):
        super().__init__()
        self.mappable = frozenset(mappable)

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        from flows.errors import ToolchainError

        graph = model.graph
        nodes = list(graph.node)
        if any(n.domain == "hw.host_ops" for n in nodes):
            return model, False
        producers = {o: n for n in nodes for o in n.output}
        consumers: dict[str, list] = {}
        for n in nodes:
            for name in n.input:
                consumers.setdefault(name, []).append(n)
        graph_inputs = {i.name for i in graph.input}
        graph_outputs = {o.name for o in graph.output}

        def dynamic_inputs(n):
            return [t for t in n.input if t and (t in producers or t in graph_inputs)]

        def ancestors(n) -> list:
            seen, stack, out = set(), [n], []
            while stack:
                for t in dynamic_inputs(stack.pop()):
                    p = producers.get(t)
                    if p is not None and id(p) not in seen:
                        seen.add(id(p))
                        out.append(p)
                        stack.append(p)
            return out

        seeds = [n for n in nodes if dynamic_inputs(n) and (
            n.op_type not in self.mappable or _beyond_4d(model, n))]
        if not seeds:
            return model, False
        blocked = []  # (seed, the layer it is computed from)
        for seed in seeds:
            layer = next((a for a in ancestors(seed) if a.op_type in _LAYER_OP_TYPES
                          or (a.op_type in _QUANT_OP_TYPES and
                              a.input[0] in producers | dict.fromkeys(graph_inputs))), None)
            if layer is not None:
                blocked.append((seed, layer))
        if blocked:
            raise ToolchainError(_unmappable_message(model, blocked))
        host: set[int] = set()
        stack = list(seeds)
        while stack:  # everything computed from a host node
            n = stack.pop()
            if id(n) in host:
                continue
            host.add(id(n))
            stack += [c for o in n.output for c in consumers.get(o, [])]
        feeds_seed = {id(a) for s in seeds for a in ancestors(s)}
        changed = True
        while changed:  # producers that only feed the host, and weight quantizers of it
            changed = False
            for n in nodes:
                if id(n) in host or any(o in graph_outputs for o in n.output):
                    continue
                users = [c for o in n.output for c in consumers.get(o, [])]
                if users and all(id(c) in host for c in users) and (
                        id(n) in feeds_seed or not dynamic_inputs(n)):
                    host.add(id(n))
                    changed = True
        host_nodes = [n for n in nodes if id(n) in host]
        body_outputs = [o for n in host_nodes for o in n.output if o in graph_outputs]
        if len(body_outputs) != 1:
            raise ToolchainError(f"the host part ({len(host_nodes)} nodes from "
                                 f"{seeds[0].name}) must give the one graph output; it gives "
                                 f"{body_outputs}")
        body_inputs = list(dict.fromkeys(
            t for n in host_nodes for t in dynamic_inputs(n)
            if t in graph_inputs or id(producers[t]) not in host))
        body = _host_body(model, host_nodes, body_inputs, body_outputs)
        host_node = helper.make_node(
            "HostPartition", body_inputs, body_outputs, name="HostPartition_0",
            domain="hw.host_ops", body=body,
            opset=next(o.version for o in model.model.opset_import if o.domain in ("", "ai.onnx")),
            node_names=[n.name for n in host_nodes])
        for n in host_nodes:
            graph.node.remove(n)
        graph.node.append(host_node)  # nothing outside the host reads its output
        return model.transform(InferShapes()), False


def _beyond_4d(model: ModelWrapper, node) -> bool:
    """Does `node` make a tensor of more than 4 dimensions (FINN streams 4-D NHWC tensors)?"""
    return any(len(model.get_tensor_shape(o) or ()) > 4 for o in node.output)


def _unmappable_reason(model: ModelWrapper, node) -> str:
    if _beyond_4d(model, node):
        return (f"{node.op_type} to a 5-D or wider tensor (a channel shuffle is one): FINN's HW "
                "layers stream 4-D NHWC tensors; a channel permutation would have to be folded "
                "into the weights of the layer producing it")
    if node.op_type in ("Sigmoid", "Tanh", "Exp", "Softmax"):
        return (f"no HW layer for {node.op_type}; followed by a quantizer it could become "
                "thresholds, which neither FINN nor this flow does yet")
    return f"no FINN HW layer for {node.op_type}"


def _unmappable_message(model: ModelWrapper, blocked) -> str:
    """All nodes FINN cannot map inside the network, grouped by why."""
    groups: dict[str, list[str]] = {}
    for seed, _layer in blocked:
        groups.setdefault(_unmappable_reason(model, seed), []).append(seed.name)
    parts = []
    for reason, names in groups.items():
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        parts.append(f"{shown}: {reason}")
    first, layer = blocked[0]
    return (f"{len(blocked)} nodes cannot be mapped onto FINN HW layers and are computed from "
            f"the network's layers (node {first.name} ({first.op_type}) from {layer.name} "
            f"({layer.op_type})), so they cannot be left to the host either (only a branch "
            "computed from the raw input can): " + "; ".join(parts))


def _host_body(model: ModelWrapper, host_nodes, inputs, outputs):
    """The host nodes as a plain-ONNX GraphProto: constant subgraphs folded (weight
    quantizers), activation quantizers expanded into standard ops."""
    import copy

    from qonnx.core.onnx_exec import execute_node
    from qonnx.util.basic import qonnx_make_model

    def info(name):
        return helper.make_tensor_value_info(name, 1, model.get_tensor_shape(name))

    used = {t for n in host_nodes for t in n.input}
    inits = [copy.deepcopy(i) for i in model.graph.initializer if i.name in used]
    graph = helper.make_graph([copy.deepcopy(n) for n in host_nodes], "host",
                              [info(t) for t in inputs], [info(t) for t in outputs], inits)
    opset = next(o.version for o in model.model.opset_import if o.domain in ("", "ai.onnx"))
    body = ModelWrapper(qonnx_make_model(graph, opset_imports=[
        helper.make_opsetid("", opset), helper.make_opsetid("qonnx.custom_op.general", 1)]))
    body = body.transform(InferShapes())
    for node in list(body.graph.node):  # topological order: constants fold front to back
        if all(body.get_initializer(t) is not None for t in node.input if t):
            context = {t: body.get_initializer(t) for t in node.input if t}
            execute_node(node, context, body.graph, opset)
            for o in node.output:
                body.set_initializer(o, context[o])
            body.graph.node.remove(node)
    for node in list(body.graph.node):
        if node.op_type == "Quant":
            _expand_quant(body, node)
        elif node.domain not in ("", "ai.onnx"):
            raise ValueError(f"host node {node.name} ({node.domain}.{node.op_type}) has no "
                             "plain-ONNX form")
    for info_ in list(body.graph.value_info):
        body.graph.value_info.remove(info_)
    keep = {t for n in body.graph.node for t in n.input}
    for init in list(body.graph.initializer):
        if init.name not in keep:
            body.graph.initializer.remove(init)
    return body.graph


def _expand_quant(model: ModelWrapper, node) -> None:
    """qonnx Quant(x, scale, zero point, bits) -> (round(clip(x / scale + zp)) - zp) * scale
    in standard ONNX ops, clipping before rounding as qonnx's `int_quant` does."""
    from qonnx.custom_op.general.intquant import max_int, min_int

    x, scale, zeropt, bits = node.input
    bitwidth = model.get_initializer(bits)
    if bitwidth is None:
        raise ValueError(f"{node.name}: a Quant with a dynamic bit width has no plain-ONNX form")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    signed, narrow = int(attrs.get("signed", 1)), int(attrs.get("narrow", 0))
    mode = attrs.get("rounding_mode", b"ROUND")
    mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
    rounding = {"ROUND": "Round", "HALF_EVEN": "Round", "CEIL": "Ceil", "FLOOR": "Floor"}.get(mode)
    if rounding is None or float(bitwidth) == 1 and signed:
        raise ValueError(f"{node.name}: Quant with rounding {mode} / bit width "
                         f"{float(bitwidth)} has no plain-ONNX form here")
    lo = np.asarray(min_int(signed, narrow, float(bitwidth)), dtype=np.float32)
    hi = np.asarray(max_int(signed, narrow, float(bitwidth)), dtype=np.float32)
    base = node.name + "_q"
    names = {k: f"{base}_{k}" for k in ("div", "add", "clip", "round", "sub", "lo", "hi")}
    model.set_initializer(names["lo"], lo)
    model.set_initializer(names["hi"], hi)
    new = [
        helper.make_node("Div", [x, scale], [names["div"]], name=base + "_div"),
        helper.make_node("Add", [names["div"], zeropt], [names["add"]], name=base + "_add"),
        helper.make_node("Clip", [names["add"], names["lo"], names["hi"]], [names["clip"]],
                         name=base + "_clip"),
        helper.make_node(rounding, [names["clip"]], [names["round"]], name=base + "_round"),
        helper.make_node("Sub", [names["round"], zeropt], [names["sub"]], name=base + "_sub"),
        helper.make_node("Mul", [names["sub"], scale], [node.output[0]], name=base + "_mul"),
    ]
    index = list(model.graph.node).index(node)
    model.graph.node.remove(node)
    for offset, n in enumerate(new):
        model.graph.node.insert(index + offset, n)


class AbsorbLinearIntoHostPartition(Transformation):
    """Move a Mul or Add by a constant that only feeds a `HostPartition` into the host part.

    Streamlining leaves the scale of the last HW activation (a MultiThreshold output times its
    step) in front of the host part; it is the host's arithmetic, and left outside it would be
    one more software node between the HW partition and the host part.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for host in [n for n in model.graph.node if n.op_type == "HostPartition"]:
            for index, name in enumerate(host.input):
                producer = model.find_producer(name)
                if producer is None or producer.op_type not in ("Mul", "Add"):
                    continue
                consts = [model.get_initializer(t) for t in producer.input]
                if sum(c is not None for c in consts) != 1 or consts[0] is not None:
                    continue
                if len(model.find_consumers(name)) != 1 or name in \
                        {o.name for o in model.graph.output}:
                    continue
                self._absorb(model, host, index, producer, consts[1])
                return model.transform(InferShapes()), True
        return model, False

    @staticmethod
    def _absorb(model: ModelWrapper, host, index: int, producer, const) -> None:
        from onnx import numpy_helper

        body = get_by_name(host.attribute, "body").g
        inner = body.input[index].name
        new_input = inner + "_before_" + producer.op_type.lower()
        const_name = inner + "_" + producer.op_type.lower() + "_const"
        shape = model.get_tensor_shape(producer.input[0])
        body.input[index].CopyFrom(helper.make_tensor_value_info(new_input, 1, shape))
        body.initializer.append(numpy_helper.from_array(np.asarray(const, np.float32),
                                                        const_name))
        body.node.insert(0, helper.make_node(producer.op_type, [new_input, const_name],
                                             [inner], name="host_" + producer.name))
        host.input[index] = producer.input[0]
        model.graph.node.remove(producer)


def _is_hw(node) -> bool:
    return node.domain.startswith("finn.custom_op.fpgadataflow")


class InferDuplicateStreamsBetweenHWLayers(Transformation):
    """Insert a DuplicateStreams HW layer where a tensor forks into HW layers only.

    finn's `InferDuplicateStreamsLayer` duplicates every fork: a graph input read by both the
    accelerator and a host part (imperial's raw frame feeds the conv branch and the statistics)
    gets a DuplicateStreams in front of the input's software layout change, and partitioning
    then fails ("not a HW layer but sits between HW layers"). Here a fork becomes a
    DuplicateStreams only if every reader is a HW layer (and the tensor is no graph output);
    forks into software are the host's, which reads the tensor itself.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        outputs = {o.name for o in graph.output}
        producers = {t: n for n in graph.node for t in n.output}
        candidates = [i.name for i in graph.input] + [t for n in graph.node if _is_hw(n)
                                                      for t in n.output]
        for name in candidates:
            readers = model.find_consumers(name)
            if len(readers) < 2 or name in outputs or not all(_is_hw(r) for r in readers):
                continue
            self._duplicate(model, name, readers, producers.get(name))
            return model.transform(InferShapes()).transform(InferDataTypes()), True
        return model, False

    @staticmethod
    def _duplicate(model: ModelWrapper, name: str, readers, producer) -> None:
        shape = model.get_tensor_shape(name)
        clones = []
        for reader in readers:
            clone = model.make_new_valueinfo_name()
            model.set_tensor_shape(clone, shape)
            clones.append(clone)
            for i, tensor in enumerate(reader.input):
                if tensor == name:
                    reader.input[i] = clone
                    break
        node = helper.make_node(
            "DuplicateStreams", [name], clones, domain="finn.custom_op.fpgadataflow",
            backend="fpgadataflow", NumChannels=int(shape[-1]), PE=1,
            inputDataType=model.get_tensor_datatype(name).name,
            numInputVectors=list(shape[:-1]), NumOutputStreams=len(clones),
            outFIFODepths=[2] * len(clones), name="DuplicateStreams_" + name,
            cpp_interface="hls_vector", hls_style="freerunning")
        index = 0 if producer is None else list(model.graph.node).index(producer) + 1
        model.graph.node.insert(index, node)


class AbsorbTransposeIntoFlattenStrict(Transformation):
    """Transpose(perm[0] = 0) -> Flatten, or -> Reshape to [1, -1] on a batch of one, becomes
    one Flatten when the transposed tensor is (N, C, 1, 1) or (N, 1, 1, C) (the transpose then
    moves no data).

    finn's `AbsorbTransposeIntoFlatten` tests a Reshape with
    `(model.get_initializer(shape) == [1, -1]).all()`: a shape of another length (imperial's
    (N, 2, L) view of the frame, ulcnn's 5-D channel shuffle) raises "operands could not be
    broadcast", and a shape computed at run time (no initializer) raises AttributeError. It
    also deletes a Transpose that feeds other nodes as well, and unpacks any 4-D shape. Here
    only a real flatten qualifies, the Transpose must feed it alone, and the layout must be
    NCHW or NHWC; every other Reshape is left as it is.
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        import qonnx.core.data_layout as DataLayout

        graph = model.graph
        for node in graph.node:
            if not self._is_flatten(model, node):
                continue
            transpose = model.find_producer(node.input[0])
            if transpose is None or transpose.op_type != "Transpose":
                continue
            perm = _perm(transpose)
            if not perm or perm[0] != 0 or len(model.find_consumers(transpose.output[0])) != 1:
                continue
            if transpose.output[0] in {o.name for o in graph.output}:
                continue
            shape = model.get_tensor_shape(transpose.input[0])
            layout = model.get_tensor_layout(transpose.input[0])
            if shape is None or len(shape) != 4:
                continue
            if layout == DataLayout.NCHW:
                batch, spatial = shape[0], shape[2:]
            elif layout == DataLayout.NHWC:
                batch, spatial = shape[0], shape[1:3]
            else:
                continue
            if any(d != 1 for d in spatial) or (node.op_type == "Reshape" and batch != 1):
                continue
            flatten = helper.make_node("Flatten", [transpose.input[0]], [node.output[0]],
                                       name=node.name, axis=1)
            index = list(graph.node).index(node)
            graph.node.remove(node)
            graph.node.remove(transpose)
            graph.node.insert(index - 1, flatten)
            return model.transform(InferShapes()).transform(InferDataTypes()), True
        return model, False

    @staticmethod
    def _is_flatten(model: ModelWrapper, node) -> bool:
        if node.op_type == "Flatten":
            axis = get_by_name(node.attribute, "axis")
            return axis is None or axis.i == 1
        if node.op_type != "Reshape" or len(node.input) < 2:
            return False
        target = model.get_initializer(node.input[1])
        return target is not None and list(np.asarray(target).reshape(-1)) == [1, -1]


class AbsorbChannelPermutationIntoConv(Transformation):
    """Fold a channel permutation written as Reshape -> Transpose -> Reshape (ShuffleNet's
    channel shuffle: (N, C, H, W) -> (N, G, C/G, H, W) -> swap -> (N, C, H, W)) into the
    output channels of the Conv that produces its input.

    FINN streams 4-D NHWC tensors and has no layer for the 5-D intermediate. A permutation of
    output channels is free in the producing Conv: its weight rows and bias, and every
    per-channel parameter between it and the shuffle (BatchNorm, per-channel quantizer scales,
    constant Add/Mul), are permuted instead. The nodes between must be per-channel ops that
    feed nothing else, and the Conv must not be grouped. Works on QONNX graphs (weights as
    Quant of an initializer, as exported).
    """

    PER_CHANNEL = ("Quant", "Relu", "BatchNormalization", "Add", "Mul", "Identity")

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            found = self._shuffle(model, node)
            if found is None:
                continue
            first, last, source = found
            chain = self._chain_to_conv(model, first.input[0])
            if chain is None:
                continue
            for chain_node in chain:
                self._permute_params(model, chain_node, source)
            # the permuted tensor takes the shuffle's output name: its readers stay as they are
            chain[0].output[0] = last.output[0]
            transpose = model.find_producer(last.input[0])
            for dead in (last, transpose, first):
                model.graph.node.remove(dead)
            return model.transform(InferShapes()), True
        return model, False

    @staticmethod
    def _shuffle(model: ModelWrapper, node):
        """(first Reshape, last Reshape, source channel of every output channel) if `node` is
        the first Reshape of a channel permutation on a 4-D tensor; else None."""
        if node.op_type != "Reshape":
            return None
        shape_in = model.get_tensor_shape(node.input[0])
        consumers = model.find_consumers(node.output[0])
        if shape_in is None or len(shape_in) != 4 or len(consumers) != 1:
            return None
        transpose = consumers[0]
        if transpose.op_type != "Transpose":
            return None
        after = model.find_consumers(transpose.output[0])
        if len(after) != 1 or after[0].op_type != "Reshape":
            return None
        last = after[0]
        if model.get_tensor_shape(last.output[0]) != shape_in:
            return None
        shapes = [model.get_initializer(n.input[1]) for n in (node, last)]
        if any(s is None for s in shapes):
            return None
        _, c, h, w = shape_in
        probe = np.arange(c * h * w, dtype=np.int64).reshape(1, c, h, w)
        split = [1] + [int(d) for d in shapes[0][1:]]  # the probe is a batch of one
        try:
            moved = probe.reshape(split).transpose(_perm(transpose)).reshape(1, c, h, w)
        except ValueError:
            return None
        source = moved[0, :, 0, 0] // (h * w)
        if not np.array_equal(moved, probe[:, source]):  # not a pure channel permutation
            return None
        return node, last, source

    def _chain_to_conv(self, model: ModelWrapper, tensor: str):
        """The nodes from the producing Conv down to `tensor`, if all are per-channel ops
        feeding only the next one; else None."""
        chain = []
        while True:
            producer = model.find_producer(tensor)
            if producer is None or len(model.find_consumers(tensor)) != 1:
                return None
            chain.append(producer)
            if producer.op_type == "Conv":
                group = get_by_name(producer.attribute, "group")
                return chain if group is None or group.i == 1 else None
            if producer.op_type not in self.PER_CHANNEL:
                return None
            dynamic = [t for t in producer.input if model.get_initializer(t) is None and
                       model.find_producer(t) is not None and
                       not _is_constant_quant(model, model.find_producer(t))]
            if len(dynamic) != 1 or dynamic[0] != producer.input[0]:
                return None
            tensor = producer.input[0]

    @staticmethod
    def _permute_params(model: ModelWrapper, node, source) -> None:
        channels = len(source)
        params = list(node.input[1:])
        if node.op_type == "Conv":
            weight = model.find_producer(node.input[1])
            params = ([node.input[1]] if weight is None else list(weight.input)) + \
                list(node.input[2:])
            bias = model.find_producer(node.input[2]) if len(node.input) > 2 else None
            if bias is not None:
                params += list(bias.input)
        for name in params:
            value = model.get_initializer(name)
            if value is None or value.ndim == 0 or value.size == 1:
                continue
            axis = next((a for a, d in enumerate(value.shape) if d == channels and
                         (a == 0 or value.ndim == 4)), None)
            if node.op_type in ("Add", "Mul", "Quant") and value.ndim == 4:
                axis = 1 if value.shape[1] == channels else None
            if node.op_type == "Conv" or node.op_type == "BatchNormalization":
                axis = 0 if value.shape[0] == channels else None
            if axis is None:
                raise ValueError(f"{node.name}: cannot tell the channel axis of {name} "
                                 f"{value.shape}")
            model.set_initializer(name, np.take(value, source, axis=axis))


def _is_constant_quant(model: ModelWrapper, node) -> bool:
    return node.op_type == "Quant" and all(model.get_initializer(t) is not None
                                           for t in node.input)


class QuantSigmoidToMultiThreshold(Transformation):
    """Sigmoid -> Quant (unsigned or signed, zero point 0, per-tensor scale s) becomes
    MultiThreshold -> Mul(s): level k is reached where sigmoid(x) / s >= k - 1/2, that is at
    x >= logit((k - 1/2) s), so the thresholds are those logits.

    FINN has no HW layer for Sigmoid and qonnx's `ConvertQuantActToMultiThreshold` handles
    only quantizers after ReLU, HardTanh and identity. A quantized monotonic activation is a
    staircase, which is what thresholds compute; the streamlining then absorbs the scales in
    front into them as for any other activation. Levels that sigmoid cannot reach get a
    threshold beyond any input (+-3.4e38).
    """

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        from qonnx.custom_op.general.intquant import max_int, min_int

        for node in model.graph.node:
            if node.op_type != "Sigmoid":
                continue
            readers = model.find_consumers(node.output[0])
            if len(readers) != 1 or readers[0].op_type != "Quant":
                continue
            quant = readers[0]
            scale, zeropt, bits = (model.get_initializer(t) for t in quant.input[1:4])
            if scale is None or zeropt is None or bits is None or scale.size != 1 or \
                    np.any(zeropt != 0):
                continue
            attrs = {a.name: helper.get_attribute_value(a) for a in quant.attribute}
            signed, narrow = int(attrs.get("signed", 1)), int(attrs.get("narrow", 0))
            mode = attrs.get("rounding_mode", b"ROUND")
            if (mode.decode() if isinstance(mode, bytes) else mode).upper() not in \
                    ("ROUND", "HALF_EVEN"):
                continue
            lo = int(min_int(signed, narrow, float(bits)))
            hi = int(max_int(signed, narrow, float(bits)))
            s = float(scale.item())
            p = (np.arange(lo + 1, hi + 1, dtype=np.float64) - 0.5) * s
            with np.errstate(divide="ignore", invalid="ignore"):
                thresholds = np.where(p <= 0, -np.inf, np.where(
                    p >= 1, np.inf, np.log(p) - np.log1p(-p)))
            big = float(np.finfo(np.float32).max)
            thresholds = np.clip(thresholds, -big, big).astype(np.float32)[None, :]
            t_name = model.make_new_valueinfo_name()
            model.set_initializer(t_name, thresholds)
            levels = model.make_new_valueinfo_name()
            s_name = model.make_new_valueinfo_name()
            model.set_initializer(s_name, np.asarray(s, dtype=np.float32))
            out_dtype = f"INT{int(bits)}" if signed else f"UINT{int(bits)}"
            index = list(model.graph.node).index(node)
            new = [helper.make_node("MultiThreshold", [node.input[0], t_name], [levels],
                                    domain="qonnx.custom_op.general", out_dtype=out_dtype,
                                    out_bias=float(lo), name=node.name + "_thresholds"),
                   helper.make_node("Mul", [levels, s_name], [quant.output[0]],
                                    name=quant.name + "_scale")]
            model.graph.node.remove(node)
            model.graph.node.remove(quant)
            for offset, n in enumerate(new):
                model.graph.node.insert(index + offset, n)
            model.set_tensor_datatype(levels, DataType[out_dtype])
            return model.transform(InferShapes()).transform(InferDataTypes()), True
        return model, False
