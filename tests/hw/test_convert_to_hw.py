"""convert_to_hw refuses what it cannot map with the node's name (hw.finn_flow)."""

import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from flows.errors import ToolchainError
from hw.finn_flow import convert_to_hw


def test_a_broadcast_product_of_two_computed_tensors_is_named():
    # a channel attention in small: features (1, 4, 1, 8) times a mask (1, 4, 1, 1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 8])
    nodes = [helper.make_node("GlobalMaxPool", ["x"], ["mask"], name="pool"),
             helper.make_node("Mul", ["x", "mask"], ["y"], name="attention")]
    model = ModelWrapper(qonnx_make_model(helper.make_graph(nodes, "g", [x], [y])))
    model.set_tensor_shape("mask", [1, 4, 1, 1])
    model.set_tensor_datatype("x", DataType["UINT4"])
    with pytest.raises(ToolchainError, match=r"attention \(Mul\) combines x \[1, 4, 1, 8\] UINT4 "
                                             r"and mask \[1, 4, 1, 1\]"):
        convert_to_hw(model)
