"""The project's graph transformations, each on a small graph that reproduces the finn-plus bug.

A `test_stock_*` test shows the stock behaviour the class works around: when it starts failing,
finn-plus has fixed the bug and the project's class can be retired. The other tests show the
fix on the same graph. Every graph is checked by executing it against the untransformed graph.
"""

from __future__ import annotations

import numpy as np
import pytest
from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
    InferElementwiseBinaryOperation,
)
from finn.transformation.streamline.absorb import AbsorbScalarMulAddIntoTopK
from finn.transformation.streamline.reorder import (
    MakeMaxPoolNHWC,
    MoveLinearPastEltwiseAdd,
    MoveLinearPastFork,
)
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.transformation.insert_topk import InsertTopK
from qonnx.util.basic import get_by_name, qonnx_make_model

from hw.transforms import (
    OUTPUT_SCALE_KEY,
    IntegerizeAddConstant,
    MakeForkedMaxPoolNHWC,
    MoveLinearPastEltwiseAddForkSafe,
    RecordTopKInputScale,
    RepeatUntilFixpoint,
)


def _model(nodes, inputs, outputs, initializers=None) -> ModelWrapper:
    """A ModelWrapper from (name, shape) inputs/outputs and {name: array} initializers."""
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    vo = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs]
    graph = helper.make_graph(nodes, "g", vi, vo)
    model = ModelWrapper(qonnx_make_model(graph, producer_name="test"))
    for name, value in (initializers or {}).items():
        model.set_initializer(name, np.asarray(value, dtype=np.float32))
    return model.transform(InferShapes())


def _run(model: ModelWrapper, feed: dict) -> dict | None:
    """All graph outputs, or None when the graph no longer executes."""
    try:
        return execute_onnx(model, feed)
    except Exception:
        return None


def _same(out: dict | None, ref: dict) -> bool:
    return out is not None and all(
        out[k].shape == ref[k].shape and np.allclose(out[k], ref[k], atol=1e-6) for k in ref)


# --- MoveLinearPastEltwiseAddForkSafe ----------------------------------------------------------

def _forked_mul_join():
    """a = x * 2 feeds both the residual Add and a Relu branch; b = y * 2."""
    nodes = [
        helper.make_node("Mul", ["x", "c0"], ["a"], name="mul_a"),
        helper.make_node("Mul", ["y", "c1"], ["b"], name="mul_b"),
        helper.make_node("Add", ["a", "b"], ["sum"], name="add"),
        helper.make_node("Relu", ["a"], ["branch"], name="relu"),
    ]
    model = _model(nodes, [("x", [1, 4]), ("y", [1, 4])], [("sum", [1, 4]), ("branch", [1, 4])],
                   {"c0": [2.0], "c1": [2.0]})
    rng = np.random.default_rng(0)
    feed = {"x": rng.normal(size=(1, 4)).astype(np.float32),
            "y": rng.normal(size=(1, 4)).astype(np.float32)}
    return model, feed


def test_stock_move_linear_past_eltwise_add_corrupts_forked_mul():
    model, feed = _forked_mul_join()
    ref = execute_onnx(model, feed)
    out = _run(model.transform(MoveLinearPastEltwiseAdd()), feed)
    assert not _same(out, ref)  # the Relu branch now reads x + y instead of x * 2


def test_fork_safe_add_leaves_forked_mul_alone():
    model, feed = _forked_mul_join()
    ref = execute_onnx(model, feed)
    moved = model.transform(MoveLinearPastEltwiseAddForkSafe())
    assert [n.op_type for n in moved.graph.node] == [n.op_type for n in model.graph.node]
    assert _same(_run(moved, feed), ref)


def test_fork_safe_add_merges_scales_after_move_linear_past_fork():
    model, feed = _forked_mul_join()
    ref = execute_onnx(model, feed)
    moved = model.transform(MoveLinearPastFork()).transform(MoveLinearPastEltwiseAddForkSafe())
    add = moved.get_nodes_by_op_type("Add")[0]
    assert all(moved.find_producer(t) is None for t in add.input)  # x + y, no Mul in front
    assert moved.find_consumer(add.output[0]).op_type == "Mul"
    assert _same(_run(moved, feed), ref)


def test_fork_safe_add_sums_constant_biases():
    nodes = [helper.make_node("Add", ["x", "a"], ["xa"]),
             helper.make_node("Add", ["y", "b"], ["yb"]),
             helper.make_node("Add", ["xa", "yb"], ["out"])]
    model = _model(nodes, [("x", [1, 3]), ("y", [1, 3])], [("out", [1, 3])],
                   {"a": [1.0, 2.0, 3.0], "b": [0.5, 0.5, -1.0]})
    feed = {"x": np.ones((1, 3), np.float32), "y": np.full((1, 3), 2.0, np.float32)}
    ref = execute_onnx(model, feed)
    moved = model.transform(MoveLinearPastEltwiseAddForkSafe())
    last = moved.find_producer("out")
    assert last.op_type == "Add" and np.allclose(moved.get_initializer(last.input[1]),
                                                 [1.5, 2.5, 2.0])
    assert _same(_run(moved, feed), ref)


# --- MakeForkedMaxPoolNHWC ---------------------------------------------------------------------

def _forked_maxpool(dilations=None):
    """MaxPool (NCHW) whose output feeds an NHWC Transpose first and a Relu second."""
    pool_attrs = {"kernel_shape": [1, 2], "strides": [1, 2]}
    if dilations:
        pool_attrs["dilations"] = dilations
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], name="pool", **pool_attrs),
        helper.make_node("Transpose", ["p"], ["t"], perm=[0, 2, 3, 1], name="to_nhwc"),
        helper.make_node("Relu", ["t"], ["out_nhwc"], name="relu_nhwc"),
        helper.make_node("Relu", ["p"], ["out_nchw"], name="relu_nchw"),
    ]
    model = _model(nodes, [("x", [1, 4, 1, 8])],
                   [("out_nhwc", [1, 1, 4, 4]), ("out_nchw", [1, 4, 1, 4])])
    feed = {"x": np.random.default_rng(1).normal(size=(1, 4, 1, 8)).astype(np.float32)}
    return model, feed


def test_stock_make_maxpool_nhwc_breaks_the_other_branch():
    model, feed = _forked_maxpool()
    ref = execute_onnx(model, feed)
    out = _run(model.transform(MakeMaxPoolNHWC()), feed)
    assert not _same(out, ref)  # the NCHW branch reads the un-pooled input


def test_forked_maxpool_nhwc_keeps_every_branch():
    model, feed = _forked_maxpool()
    ref = execute_onnx(model, feed)
    nhwc = model.transform(MakeForkedMaxPoolNHWC()).transform(MakeMaxPoolNHWC())
    ops = [n.op_type for n in nhwc.graph.node]
    assert "MaxPool" not in ops and ops.count("MaxPoolNHWC") == 1
    assert ops.count("Transpose") == 2  # into the pool, and back to NCHW for the Relu branch
    assert _same(_run(nhwc, feed), ref)


def test_forked_maxpool_rejects_dilation():
    model, _ = _forked_maxpool(dilations=[1, 2])
    with pytest.raises(ValueError, match="dilation"):
        model.transform(MakeForkedMaxPoolNHWC())


# --- IntegerizeAddConstant ---------------------------------------------------------------------

def _int_bias_add(bias):
    """INT8 x plus a per-channel constant (an integer bias b_int * s / s left in float32)."""
    model = _model([helper.make_node("Add", ["x", "b"], ["out"], name="bias")],
                   [("x", [1, 4])], [("out", [1, 4])], {"b": bias})
    model.set_tensor_datatype("x", DataType["INT8"])
    return model.transform(InferDataTypes())


def test_stock_float_bias_becomes_float_hw_add():
    model = _int_bias_add([240.99998, -3.0000002, 0.0, 7.0])
    hw = model.transform(InferElementwiseBinaryOperation())
    assert hw.get_tensor_datatype("out") == DataType["FLOAT32"]


def test_integerized_bias_becomes_integer_hw_add():
    model = _int_bias_add([240.99998, -3.0000002, 0.0, 7.0])
    feed = {"x": np.array([[-128, 5, 0, 127]], np.float32)}
    fixed = model.transform(IntegerizeAddConstant())
    assert np.array_equal(fixed.get_initializer("b"), [241, -3, 0, 7])
    assert fixed.get_tensor_datatype("b") == DataType["INT9"]
    hw = fixed.transform(InferElementwiseBinaryOperation())
    assert hw.get_tensor_datatype("out").is_integer()
    assert np.abs(execute_onnx(fixed, feed)["out"] - execute_onnx(model, feed)["out"]).max() < 1e-4


def test_integerize_leaves_real_fractions_alone():
    model = _int_bias_add([0.4, 1.0, 2.0, 3.0])
    fixed = model.transform(IntegerizeAddConstant())
    assert np.allclose(fixed.get_initializer("b"), [0.4, 1.0, 2.0, 3.0])
    assert fixed.get_tensor_datatype("out") == DataType["FLOAT32"]


# --- RecordTopKInputScale ----------------------------------------------------------------------

def _scaled_scores():
    model = _model([helper.make_node("Mul", ["x", "s"], ["logits"], name="scale")],
                   [("x", [1, 5])], [("logits", [1, 5])], {"s": [0.25]})
    return model.transform(InsertTopK(k=1)).transform(InferShapes())


def test_stock_topk_absorption_loses_the_output_scale():
    model = _scaled_scores().transform(AbsorbScalarMulAddIntoTopK())
    assert not model.get_nodes_by_op_type("Mul")
    assert model.get_metadata_prop(OUTPUT_SCALE_KEY) is None


def test_recorded_scale_recovers_logits_from_topk_scores():
    model = _scaled_scores()
    x = np.array([[1.0, -2.0, 8.0, 3.0, 0.0]], np.float32)
    logits = execute_onnx(model, {"x": x}, return_full_exec_context=True)["logits"]
    absorbed = model.transform(RecordTopKInputScale()).transform(AbsorbScalarMulAddIntoTopK())
    topk = absorbed.get_nodes_by_op_type("TopK")[0]
    scores = execute_onnx(absorbed, {"x": x}, return_full_exec_context=True)[topk.input[0]]
    scale = float(absorbed.get_metadata_prop(OUTPUT_SCALE_KEY))
    assert np.allclose(scores * scale, logits)
    # applying it twice records the same scale, not its square
    again = model.transform(RecordTopKInputScale()).transform(RecordTopKInputScale())
    assert float(again.get_metadata_prop(OUTPUT_SCALE_KEY)) == 0.25


def test_record_scale_needs_a_topk():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 2])], [("y", [1, 2])])
    with pytest.raises(ValueError, match="TopK"):
        model.transform(RecordTopKInputScale())


# --- RepeatUntilFixpoint -----------------------------------------------------------------------

def test_fixpoint_loop_streamlines_the_forked_join():
    model, feed = _forked_mul_join()
    ref = execute_onnx(model, feed)
    loop = RepeatUntilFixpoint([MoveLinearPastFork(), MoveLinearPastEltwiseAddForkSafe()])
    fixed = model.transform(loop)
    assert loop.passes_run == 2  # one pass that changes the graph, one that confirms
    assert _same(_run(fixed, feed), ref)


class _Flip(Transformation):
    """Negates a constant on every application: never reaches a fixpoint."""

    def apply(self, model):
        model.set_initializer("c0", -model.get_initializer("c0"))
        return model, False


def test_fixpoint_loop_raises_when_it_never_settles():
    model, _ = _forked_mul_join()
    with pytest.raises(RuntimeError, match="no fixpoint after 3 passes"):
        model.transform(RepeatUntilFixpoint([_Flip()], max_passes=3))


# --------------------------------------------------------------------- LiftConv1dTo2d

def _conv1d_graph(extra_transpose: bool = False) -> ModelWrapper:
    """x (1, 2, 16) -> Conv1d k=3 pad 1 (per-channel Mul (4, 1)) -> MaxPool1d 2 [-> Transpose]"""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 16])
    out_shape = [1, 8, 4] if extra_transpose else [1, 4, 8]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 2, 3], rng.normal(size=24).tolist())
    c = helper.make_tensor("c", TensorProto.FLOAT, [4, 1], [0.5, 1.0, 2.0, -1.0])
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], kernel_shape=[3], pads=[1, 1],
                              strides=[1], dilations=[1], name="Conv_0"),
             helper.make_node("Mul", ["conv", "c"], ["scaled"], name="Mul_0"),
             helper.make_node("MaxPool", ["scaled"], ["pooled" if extra_transpose else "y"],
                              kernel_shape=[2], strides=[2], name="MaxPool_0")]
    if extra_transpose:
        nodes.append(helper.make_node("Transpose", ["pooled"], ["y"], perm=[0, 2, 1],
                                      name="Transpose_0"))
    model = ModelWrapper(qonnx_make_model(helper.make_graph(nodes, "g", [x], [y], [w, c])))
    return model.transform(InferShapes())


def test_lift_conv1d_to_2d_computes_the_same():
    from hw.transforms import LiftConv1dTo2d

    model = _conv1d_graph()
    x = np.random.default_rng(1).normal(size=(1, 2, 16)).astype(np.float32)
    expected = execute_onnx(model, {"x": x})["y"]
    lifted = model.transform(LiftConv1dTo2d())
    assert lifted.get_tensor_shape("x") == [1, 2, 1, 16]
    conv = lifted.get_nodes_by_op_type("Conv")[0]
    attrs = {a.name: list(a.ints) for a in conv.attribute if a.ints}
    assert attrs["kernel_shape"] == [1, 3] and attrs["pads"] == [0, 1, 0, 1]
    assert lifted.get_initializer("c").shape == (1, 4, 1, 1)
    got = execute_onnx(lifted, {"x": x.reshape(1, 2, 1, 16)})["y"]
    assert got.shape == (1, 4, 1, 8) and np.allclose(got.reshape(expected.shape), expected)


def test_lift_conv1d_to_2d_names_a_node_it_cannot_lift():
    from flows.errors import ToolchainError
    from hw.transforms import LiftConv1dTo2d

    with pytest.raises(ToolchainError, match="node Transpose_0 \\(Transpose\\)"):
        _conv1d_graph(extra_transpose=True).transform(LiftConv1dTo2d())


# ------------------------------------------------------------- ConvBiasQuantParamsAs1d

def _conv_with_quantized_bias() -> ModelWrapper:
    """Conv(x, w, Quant(b, scale (4,), zero point 0-d, 32 bits)): Brevitas' Int32Bias."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 6])
    inits = [
        helper.make_tensor("w", TensorProto.FLOAT, [4, 2, 1, 3], rng.normal(size=24).tolist()),
        helper.make_tensor("b", TensorProto.FLOAT, [4], [1.0, -2.0, 0.5, 3.0]),
        helper.make_tensor("s", TensorProto.FLOAT, [4], [0.01, 0.02, 0.01, 0.05]),
        helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("bw", TensorProto.FLOAT, [], [32.0]),
    ]
    nodes = [helper.make_node("Quant", ["b", "s", "z", "bw"], ["bq"], domain="qonnx.custom_op.general",
                              narrow=0, signed=1, rounding_mode="ROUND", name="Quant_b"),
             helper.make_node("Conv", ["x", "w", "bq"], ["y"], kernel_shape=[1, 3], name="Conv_0")]
    model = ModelWrapper(qonnx_make_model(helper.make_graph(nodes, "g", [x], [y], inits)))
    return model.transform(InferShapes())


def test_stock_extract_bias_fails_on_a_0d_zero_point():
    from qonnx.transformation.extract_conv_bias import ExtractBiasFromConv

    with pytest.raises(ValueError, match="cannot reshape array of size 1"):
        _conv_with_quantized_bias().transform(ExtractBiasFromConv())


def test_conv_bias_quant_params_as_1d_lets_the_bias_be_extracted():
    from qonnx.transformation.extract_conv_bias import ExtractBiasFromConv

    from hw.transforms import ConvBiasQuantParamsAs1d

    model = _conv_with_quantized_bias()
    x = np.random.default_rng(1).normal(size=(1, 2, 1, 8)).astype(np.float32)
    expected = execute_onnx(model, {"x": x})["y"]
    fixed = model.transform(ConvBiasQuantParamsAs1d())
    assert fixed.get_initializer("z").shape == (1,)
    extracted = fixed.transform(ExtractBiasFromConv()).transform(InferShapes())
    assert "Add" in [n.op_type for n in extracted.graph.node]
    assert np.allclose(execute_onnx(extracted, {"x": x})["y"], expected, atol=1e-5)


# --- AbsorbTransposeIntoFlattenStrict ----------------------------------------------------------

def _transpose_then_reshape(shape, spatial=(1, 1)):
    """Transpose (NCHW -> NHWC) of x (1, 4, h, w), then Reshape to `shape`."""
    h, w = spatial
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1], name="to_nhwc"),
             helper.make_node("Reshape", ["t", "shape"], ["y"], name="reshape")]
    out = [int(d) for d in np.empty((1, h, w, 4)).reshape(shape).shape]
    model = _model(nodes, [("x", [1, 4, h, w])], [("y", out)])
    model.set_initializer("shape", np.asarray(shape, dtype=np.int64))
    from qonnx.core import data_layout
    model.set_tensor_layout("x", data_layout.NCHW)
    feed = {"x": np.random.default_rng(2).normal(size=(1, 4, h, w)).astype(np.float32)}
    return model, feed


def test_stock_absorb_transpose_into_flatten_fails_on_a_3d_reshape():
    from finn.transformation.streamline.absorb import AbsorbTransposeIntoFlatten

    model, _ = _transpose_then_reshape([1, 2, -1], spatial=(1, 2))
    with pytest.raises(ValueError, match="broadcast"):
        model.transform(AbsorbTransposeIntoFlatten())


def test_strict_absorb_leaves_other_reshapes_alone():
    from hw.transforms import AbsorbTransposeIntoFlattenStrict

    model, feed = _transpose_then_reshape([1, 2, -1], spatial=(1, 2))
    ref = execute_onnx(model, feed)
    fixed = model.transform(AbsorbTransposeIntoFlattenStrict())
    assert [n.op_type for n in fixed.graph.node] == ["Transpose", "Reshape"]
    assert _same(_run(fixed, feed), ref)


def test_strict_absorb_turns_a_real_flatten_into_one_flatten():
    from hw.transforms import AbsorbTransposeIntoFlattenStrict

    model, feed = _transpose_then_reshape([1, -1])
    ref = execute_onnx(model, feed)
    fixed = model.transform(AbsorbTransposeIntoFlattenStrict())
    assert [n.op_type for n in fixed.graph.node] == ["Flatten"]
    assert _same(_run(fixed, feed), ref)


def test_strict_absorb_keeps_a_transpose_with_spatial_extent():
    from hw.transforms import AbsorbTransposeIntoFlattenStrict

    model, feed = _transpose_then_reshape([1, -1], spatial=(1, 3))  # moves data: must stay
    ref = execute_onnx(model, feed)
    fixed = model.transform(AbsorbTransposeIntoFlattenStrict())
    assert [n.op_type for n in fixed.graph.node] == ["Transpose", "Reshape"]
    assert _same(_run(fixed, feed), ref)


# --- SplitOffHostBranch / HostPartition / AbsorbLinearIntoHostPartition ------------------------

def _quant(name, x, out, bits, signed=1):
    return helper.make_node("Quant", [x, name + "_s", name + "_z", name + "_b"], [out],
                            domain="qonnx.custom_op.general", signed=signed, narrow=0,
                            rounding_mode="ROUND", name=name)


def _two_branch(stats_op="Sqrt"):
    """Imperial in small: x (1, 2, 1, 8) -> Quant -> Conv -> Relu -> Quant -> Flatten (the
    network) and x -> Reshape -> Mul -> ReduceMean -> `stats_op` -> Quant (statistics of the
    raw frame); Concat -> MatMul -> logits (the classifier combining both)."""
    nodes = [
        _quant("q_in", "x", "xq", 8),
        helper.make_node("Conv", ["xq", "w"], ["c"], kernel_shape=[1, 8], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        _quant("q_act", "r", "rq", 4, signed=0),
        helper.make_node("Flatten", ["rq"], ["feat"], name="flatten"),
        helper.make_node("Reshape", ["x", "shape"], ["iq"], name="view"),
        helper.make_node("Mul", ["iq", "iq"], ["sq"], name="square"),
        helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[2], keepdims=0, name="mean"),
        helper.make_node(stats_op, ["ms"], ["st"], name="stat"),
        _quant("q_st", "st", "stq", 8),
        helper.make_node("Concat", ["feat", "stq"], ["both"], axis=1, name="concat"),
        helper.make_node("MatMul", ["both", "wc"], ["logits"], name="classifier"),
    ]
    rng = np.random.default_rng(3)
    inits = {"w": rng.normal(size=(3, 2, 1, 8)), "shape": [1, 2, 8],
             "wc": rng.normal(size=(5, 4)),
             "q_in_s": 2 ** -6, "q_in_z": 0.0, "q_in_b": 8.0,
             "q_act_s": 0.5, "q_act_z": 0.0, "q_act_b": 4.0,
             "q_st_s": 2 ** -4, "q_st_z": 0.0, "q_st_b": 8.0}
    model = _model(nodes, [("x", [1, 2, 1, 8])], [("logits", [1, 4])])
    for name, value in inits.items():
        dtype = np.int64 if name == "shape" else np.float32
        model.set_initializer(name, np.asarray(value, dtype=dtype))
    model = model.transform(InferShapes())
    feed = {"x": np.abs(rng.normal(size=(1, 2, 1, 8))).astype(np.float32)}
    return model, feed


def test_split_off_host_branch_moves_statistics_and_classifier_to_one_node():
    from hw.transforms import SplitOffHostBranch

    model, feed = _two_branch()
    ref = execute_onnx(model, feed)
    split = model.transform(SplitOffHostBranch())
    ops = sorted(n.op_type for n in split.graph.node)
    assert ops == ["Conv", "Flatten", "HostPartition", "Quant", "Quant", "Relu"]
    host = split.get_nodes_by_op_type("HostPartition")[0]
    assert list(host.input) == ["x", "feat"]
    names = [s.decode() for s in get_by_name(host.attribute, "node_names").strings]
    assert names == ["view", "square", "mean", "stat", "q_st", "concat", "classifier"]
    body_ops = {n.op_type for n in get_by_name(host.attribute, "body").g.node}
    assert "Quant" not in body_ops and {"Clip", "Round"} <= body_ops  # plain ONNX
    assert _same(_run(split, feed), ref)


def test_host_partition_takes_the_last_scale_of_the_network():
    from hw.transforms import AbsorbLinearIntoHostPartition, SplitOffHostBranch

    model, feed = _two_branch()
    flatten = model.find_producer("feat")
    flatten.output[0] = "feat_int"  # Flatten -> Mul(0.5) -> feat
    index = list(model.graph.node).index(flatten) + 1
    model.graph.node.insert(index, helper.make_node("Mul", ["feat_int", "half"], ["feat"],
                                                    name="scale"))
    model.set_initializer("half", np.asarray([0.5], np.float32))
    model = model.transform(InferShapes())
    ref = execute_onnx(model, feed)
    split = model.transform(SplitOffHostBranch())
    assert "Mul" in [n.op_type for n in split.graph.node]
    absorbed = split.transform(AbsorbLinearIntoHostPartition())
    assert "Mul" not in [n.op_type for n in absorbed.graph.node]
    assert list(absorbed.get_nodes_by_op_type("HostPartition")[0].input) == ["x", "feat_int"]
    assert _same(_run(absorbed, feed), ref)


def test_split_refuses_an_unmappable_node_inside_the_network():
    from flows.errors import ToolchainError
    from hw.transforms import SplitOffHostBranch

    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 3], name="conv"),
             helper.make_node("Sigmoid", ["c"], ["y"], name="attention")]
    model = _model(nodes, [("x", [1, 2, 1, 8])], [("y", [1, 3, 1, 6])],
                   {"w": np.ones((3, 2, 1, 3))})
    with pytest.raises(ToolchainError, match=r"attention \(Sigmoid\) from conv \(Conv\)"):
        model.transform(SplitOffHostBranch())


def test_split_leaves_a_fully_mappable_graph_alone():
    from hw.transforms import SplitOffHostBranch

    model, _ = _two_branch()
    keep = ("q_in", "conv", "relu", "q_act", "flatten")
    network = _model([n for n in model.graph.node if n.name in keep], [("x", [1, 2, 1, 8])],
                     [("feat", [1, 3])])
    for init in model.graph.initializer:
        network.graph.initializer.append(init)
    assert network.transform(SplitOffHostBranch()).get_nodes_by_op_type("HostPartition") == []


def test_topk_behind_a_host_part_records_scale_one():
    from hw.transforms import SplitOffHostBranch

    model, _ = _two_branch()
    split = model.transform(SplitOffHostBranch()).transform(InsertTopK(k=1))
    split = split.transform(InferShapes()).transform(RecordTopKInputScale())
    assert float(split.get_metadata_prop(OUTPUT_SCALE_KEY)) == 1.0


# --- InferDuplicateStreamsBetweenHWLayers ------------------------------------------------------

def _input_fork(second="Sqrt"):
    """x (INT4) read by a MultiThreshold (-> Thresholding HW) and by `second`."""
    nodes = [helper.make_node("MultiThreshold", ["x", "t"], ["y"], domain="qonnx.custom_op.general",
                              out_dtype="UINT2", name="mt"),
             helper.make_node(second, ["x"] if second != "MultiThreshold" else ["x", "t"],
                              ["z"], name="second",
                              **({"domain": "qonnx.custom_op.general", "out_dtype": "UINT2"}
                                 if second == "MultiThreshold" else {}))]
    model = _model(nodes, [("x", [1, 4])], [("y", [1, 4]), ("z", [1, 4])],
                   {"t": np.tile([[-1.0, 0.0, 1.0]], (4, 1))})
    model.set_tensor_datatype("x", DataType["INT4"])
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import (
        InferThresholdingLayer,
    )
    return model.transform(InferDataTypes()).transform(InferThresholdingLayer())


def test_stock_duplicate_streams_feeds_a_software_reader():
    from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import (
        InferDuplicateStreamsLayer,
    )

    model = _input_fork().transform(InferDuplicateStreamsLayer())
    dup = model.get_nodes_by_op_type("DuplicateStreams")
    assert dup and "Sqrt" in [c.op_type for c in model.find_consumers(dup[0].output[1])]


def test_duplicate_streams_only_between_hw_layers():
    from hw.transforms import InferDuplicateStreamsBetweenHWLayers

    model = _input_fork().transform(InferDuplicateStreamsBetweenHWLayers())
    assert model.get_nodes_by_op_type("DuplicateStreams") == []
    both_hw = _input_fork("MultiThreshold").transform(InferDuplicateStreamsBetweenHWLayers())
    assert len(both_hw.get_nodes_by_op_type("DuplicateStreams")) == 1


# --- AbsorbChannelPermutationIntoConv ----------------------------------------------------------

def _conv_then_shuffle(groups=2, conv_group=1):
    """Conv (6 channels, bias) -> BatchNorm -> Relu -> channel shuffle (5-D) -> output."""
    c = 6
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[1, 3], pads=[0, 1, 0, 1],
                         group=conv_group, name="conv"),
        helper.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "s5"], ["r5"], name="split_groups"),
        helper.make_node("Transpose", ["r5"], ["t5"], perm=[0, 2, 1, 3, 4], name="swap"),
        helper.make_node("Reshape", ["t5", "s4"], ["y"], name="merge_groups"),
    ]
    rng = np.random.default_rng(4)
    cin = c if conv_group == c else 2
    model = _model(nodes, [("x", [1, cin, 1, 8])], [("y", [1, c, 1, 8])],
                   {"w": rng.normal(size=(c, cin // conv_group, 1, 3)), "b": rng.normal(size=c),
                    "g": rng.uniform(0.5, 2, c), "beta": rng.normal(size=c),
                    "mu": rng.normal(size=c), "var": rng.uniform(0.5, 2, c)})
    model.set_initializer("s5", np.asarray([1, groups, c // groups, 1, 8], np.int64))
    model.set_initializer("s4", np.asarray([1, c, 1, 8], np.int64))
    model = model.transform(InferShapes())
    feed = {"x": rng.normal(size=(1, cin, 1, 8)).astype(np.float32)}
    return model, feed


def test_channel_shuffle_folds_into_the_conv():
    from hw.transforms import AbsorbChannelPermutationIntoConv

    model, feed = _conv_then_shuffle()
    ref = execute_onnx(model, feed)
    fixed = model.transform(AbsorbChannelPermutationIntoConv())
    assert sorted(n.op_type for n in fixed.graph.node) == ["BatchNormalization", "Conv", "Relu"]
    assert _same(_run(fixed, feed), ref)


def test_channel_shuffle_after_a_grouped_conv_stays():
    from hw.transforms import AbsorbChannelPermutationIntoConv

    model, _ = _conv_then_shuffle(conv_group=6)
    fixed = model.transform(AbsorbChannelPermutationIntoConv())
    assert "Transpose" in [n.op_type for n in fixed.graph.node]


# --- QuantSigmoidToMultiThreshold --------------------------------------------------------------

def _quant_sigmoid(bits=4, scale=1 / 15):
    nodes = [helper.make_node("Sigmoid", ["x"], ["p"], name="sigmoid"),
             _quant("q", "p", "y", bits, signed=0)]
    model = _model(nodes, [("x", [1, 64])], [("y", [1, 64])],
                   {"q_s": scale, "q_z": 0.0, "q_b": float(bits)})
    feed = {"x": np.linspace(-6, 6, 64, dtype=np.float32)[None, :]}
    return model, feed


def test_stock_qonnx_to_finn_keeps_the_sigmoid():
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN

    model, _ = _quant_sigmoid()
    assert "Sigmoid" in [n.op_type for n in model.transform(ConvertQONNXtoFINN()).graph.node]


def test_quant_sigmoid_becomes_thresholds():
    from hw.transforms import QuantSigmoidToMultiThreshold

    for bits, scale in ((4, 1 / 15), (3, 0.2)):  # 0.2 x 7 > 1: the top levels are unreachable
        model, feed = _quant_sigmoid(bits, scale)
        ref = execute_onnx(model, feed)
        fixed = model.transform(QuantSigmoidToMultiThreshold())
        assert [n.op_type for n in fixed.graph.node] == ["MultiThreshold", "Mul"]
        assert _same(_run(fixed, feed), ref)


def _vgg10_to_finn(tmp_path):
    import torch

    from hw import finn_flow as ff
    from models.registry import get_model_spec
    from models.zoo import build_model

    torch.manual_seed(0)
    model = build_model("vgg10", 8).eval()
    qonnx = ff.export_qonnx(model, get_model_spec("vgg10").input_shape, tmp_path / "vgg10.onnx")
    return ff.to_finn(qonnx)


@pytest.mark.parametrize("graph", ["bacalhaunet", "vgg10"])
def test_streamline_tidying_on_change_gives_finns_graph(graph, bacalhaunet_build, tmp_path,
                                                          monkeypatch):
    """finn's Streamline and the version that skips the idempotent tidy-ups after a
    transformation that changed nothing give byte-identical graphs, alone and inside the
    project's whole streamlining (residual loop included; some finn transformations name new
    tensors at random: both runs start from the same seed)."""
    import copy
    import random

    from finn.transformation.streamline import Streamline
    from qonnx.core.modelwrapper import ModelWrapper

    from hw import finn_flow as ff
    from hw.transforms import StreamlineTidyOnChange

    if graph == "bacalhaunet":
        model = ModelWrapper(str(bacalhaunet_build / "intermediate" / "04_to_finn.onnx"))
    else:
        model = _vgg10_to_finn(tmp_path)

    def serialized(m):
        return m.model.SerializeToString(deterministic=True)

    ours = StreamlineTidyOnChange()
    assert serialized(copy.deepcopy(model).transform(ours)) == \
        serialized(copy.deepcopy(model).transform(Streamline()))
    assert ours.tidy_skipped >= 10  # it did skip: most transformations find nothing to do
    random.seed(0)
    fast = ff.streamline(copy.deepcopy(model))
    monkeypatch.setattr(ff, "StreamlineTidyOnChange", Streamline)
    random.seed(0)
    assert serialized(fast) == serialized(ff.streamline(copy.deepcopy(model)))
