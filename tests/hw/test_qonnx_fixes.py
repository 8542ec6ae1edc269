"""The project's fixes to qonnx itself (hw/qonnx_fixes.py)."""

import numpy as np


def _square_model():
    """x -> Sub(x, c) -> d -> Mul(d, d): one node reading the same tensor twice, as the
    TorchScript exporter writes `d ** 2`."""
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    c = helper.make_tensor("c", TensorProto.FLOAT, [1, 4], [0.5, 1.0, 1.5, 2.0])
    nodes = [helper.make_node("Sub", ["x", "c"], ["/Sub_output_0"], name="/Sub"),
             helper.make_node("Mul", ["/Sub_output_0", "/Sub_output_0"], ["y"], name="/Mul")]
    return ModelWrapper(qonnx_make_model(helper.make_graph(nodes, "g", [x], [y], [c])))


def test_readable_names_keep_a_node_that_reads_one_tensor_twice_executable():
    import hw.finn_flow  # noqa: F401  (installs the fixes)
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    model = cleanup_model(_square_model())
    mul = model.get_nodes_by_op_type("Mul")[0]
    assert mul.input[0] == mul.input[1] == model.get_nodes_by_op_type("Sub")[0].output[0]
    x = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
    y = execute_onnx(model, {model.graph.input[0].name: x})[model.graph.output[0].name]
    assert np.allclose(y, (x - [0.5, 1.0, 1.5, 2.0]) ** 2)


def test_without_the_fix_qonnx_leaves_the_second_input_unrenamed():
    """Documents the upstream bug the fix exists for: if this starts failing, qonnx fixed it
    and hw/qonnx_fixes.py can go."""
    from qonnx.transformation.general import GiveReadableTensorNames

    from hw.qonnx_fixes import _ORIGINAL_RENAME, rename_tensor_everywhere
    from qonnx.core.modelwrapper import ModelWrapper

    ModelWrapper.rename_tensor = _ORIGINAL_RENAME
    try:
        model = _square_model().transform(GiveReadableTensorNames())
    finally:
        ModelWrapper.rename_tensor = rename_tensor_everywhere
    mul = model.get_nodes_by_op_type("Mul")[0]
    assert mul.input[0] != mul.input[1]
