"""The project's fixes to qonnx and finn-plus themselves (hw/qonnx_fixes.py)."""

import numpy as np
import pytest


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
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueTensorNames

    import hw.finn_flow  # noqa: F401  (installs the fixes)
    from hw import qonnx_fixes

    # qonnx as it is: its rename, and its renaming transformations, which call it
    ModelWrapper.rename_tensor = qonnx_fixes._ORIGINAL_RENAME
    GiveReadableTensorNames.apply = qonnx_fixes._ORIGINAL_READABLE_NAMES
    GiveUniqueTensorNames.apply = qonnx_fixes._ORIGINAL_UNIQUE_NAMES
    try:
        model = _square_model().transform(GiveReadableTensorNames())
    finally:
        ModelWrapper.rename_tensor = qonnx_fixes.rename_tensor_everywhere
        GiveReadableTensorNames.apply = qonnx_fixes.give_readable_tensor_names
        GiveUniqueTensorNames.apply = qonnx_fixes.give_unique_tensor_names
    mul = model.get_nodes_by_op_type("Mul")[0]
    assert mul.input[0] != mul.input[1]


def _thresholding(thresholds: np.ndarray, idt: str, pe: int = 2, rtl: bool = False):
    """One (specialized, when `rtl`) FINN Thresholding node on 4 channels of `idt`."""
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    channels, steps = thresholds.shape
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels])
    node = helper.make_node(
        "Thresholding_rtl" if rtl else "Thresholding", ["x", "t"], ["y"], name="th",
        domain="finn.custom_op.fpgadataflow" + (".rtl" if rtl else ""), backend="fpgadataflow",
        NumChannels=channels, PE=pe, numSteps=steps, inputDataType=idt,
        weightDataType="INT32", outputDataType=f"UINT{max(1, int(np.log2(steps + 1)))}",
        numInputVectors=[1], ActVal=0)
    model = ModelWrapper(qonnx_make_model(helper.make_graph([node], "g", [x], [y])))
    model.set_initializer("t", thresholds.astype(np.float32))
    model.set_tensor_datatype("x", DataType[idt])
    model.set_tensor_datatype("t", DataType["INT32"])
    return model


def test_threshold_width_fix_chooses_what_finn_chooses():
    """The vectorized check picks the same datatype as finn's own method on signed, unsigned,
    all-zero and negative thresholds, for the HLS and the RTL node (the RTL one adds one value
    of headroom on top)."""
    import copy

    import hw.finn_flow  # noqa: F401  (installs the fixes)
    from qonnx.custom_op.registry import getCustomOp

    from hw import qonnx_fixes

    assert qonnx_fixes._ORIGINAL_MINIMIZE_THRESHOLDS is not None
    rng = np.random.default_rng(0)
    cases = [(np.sort(rng.integers(0, 60, (4, 3)), axis=1), "UINT6"),
             (np.sort(rng.integers(-200, 300, (4, 7)), axis=1), "INT12"),
             (np.zeros((4, 3)), "INT4"), (np.zeros((4, 3)), "UINT4"),
             (np.sort(rng.integers(-9, -1, (4, 3)), axis=1), "INT8"),
             (np.sort(rng.integers(0, 100, (4, 3)), axis=1), "INT8")]
    chosen = []
    for thresholds, idt in cases:
        for rtl in (False, True):
            model = _thresholding(thresholds, idt, rtl=rtl)
            stock = copy.deepcopy(model)
            node, stock_node = model.graph.node[0], stock.graph.node[0]
            fixed_type = getCustomOp(node).minimize_weight_bit_width(model)
            inst = getCustomOp(stock_node)
            original = qonnx_fixes._ORIGINAL_MINIMIZE_THRESHOLDS
            if rtl:  # the RTL method calls the base class's: swap it in for the stock run
                from finn.custom_op.fpgadataflow.thresholding import Thresholding
                Thresholding.minimize_weight_bit_width = original
                try:
                    stock_type = inst.minimize_weight_bit_width(stock)
                finally:
                    Thresholding.minimize_weight_bit_width = qonnx_fixes.minimize_threshold_width
            else:
                stock_type = original(inst, stock)
            assert fixed_type == stock_type, (thresholds, idt, rtl)
            assert model.get_tensor_datatype("t") == stock.get_tensor_datatype("t")
            chosen.append(fixed_type.name)
    assert len(set(chosen)) >= 4  # the cases exercise several widths, not one


@pytest.mark.parametrize("stage", ["02_export_qonnx", "04_to_finn", "05_streamline",
                                   "07_convert_to_hw", "partition_parent"])
def test_linear_sort_graph_orders_as_qonnx_does(bacalhaunet_build, stage):
    """On each stage graph of the BacalhauNet build (residual forks and joins), with its nodes
    shuffled, plus a node floating free: the same node order as qonnx's SortGraph, the same
    node dropped."""
    import copy
    import random

    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper

    import hw.finn_flow  # noqa: F401  (installs the fixes)
    from hw import qonnx_fixes

    model = ModelWrapper(str(bacalhaunet_build / "intermediate" / f"{stage}.onnx"))
    nodes = list(model.graph.node)
    random.Random(0).shuffle(nodes)
    nodes.append(helper.make_node("Relu", ["nowhere"], ["floating"], name="floating"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    ours, stock = copy.deepcopy(model), copy.deepcopy(model)
    qonnx_fixes.sort_graph_linear(None, ours)
    qonnx_fixes._ORIGINAL_SORT_GRAPH(None, stock)
    names = [n.name for n in ours.graph.node]
    assert names == [n.name for n in stock.graph.node]
    assert "floating" not in names and len(names) == len(nodes) - 1 >= 2


def test_multithreshold_by_binary_search_counts_as_qonnx_does():
    """Values on, between, below and above the thresholds (ties count), per-channel and global
    thresholds, channel axis first or last, float32 values against float64 thresholds, scale
    and bias: the same array, dtype included, as qonnx's comparison-and-count."""
    import hw.finn_flow  # noqa: F401  (installs the fixes)
    from hw import qonnx_fixes

    original = qonnx_fixes._ORIGINAL_MULTITHRESHOLD
    assert original is not None and original is not qonnx_fixes.multithreshold_sorted
    rng = np.random.default_rng(1)
    checked = 0
    for channels in (1, 5):
        for steps in (1, 3, 15):
            thresholds = np.sort(rng.integers(-20, 20, (channels, steps)), axis=1)
            for thr_dtype in (np.float32, np.float64):
                thr = thresholds.astype(thr_dtype)
                for channels_last in (False, True):
                    shape = (2, 7, 5) if channels_last else (2, 5, 7)
                    # integers hit the thresholds exactly; halves fall between them
                    v = (rng.integers(-25, 25, shape) + rng.choice([0, 0.5], shape)) \
                        .astype(np.float32)
                    for scale, bias in ((None, None), (2.0, -3.0)):
                        ours = qonnx_fixes.multithreshold_sorted(v, thr, scale, bias,
                                                                 channels_last)
                        stock = original(v, thr, scale, bias, channels_last)
                        assert ours.dtype == stock.dtype and ours.shape == stock.shape
                        np.testing.assert_array_equal(ours, stock)
                        checked += 1
    assert checked == 48


def test_multithreshold_leaves_unsorted_thresholds_and_nan_to_qonnx():
    """Thresholds that are not ascending (binary search would miscount) and NaN values take
    qonnx's path and give its result."""
    import hw.finn_flow  # noqa: F401  (installs the fixes)
    from hw import qonnx_fixes

    v = np.array([[[0.0, 1.0, 2.0, np.nan]]], dtype=np.float32).transpose(0, 2, 1)  # (1, 4, 1)
    unsorted = np.array([[1.5, 0.5]], dtype=np.float32)
    got = qonnx_fixes.multithreshold_sorted(v, unsorted)
    np.testing.assert_array_equal(got, qonnx_fixes._ORIGINAL_MULTITHRESHOLD(v, unsorted))
    np.testing.assert_array_equal(got[0, :, 0], [0, 1, 2, 0])


def test_finn_execution_uses_the_binary_search():
    """MultiThreshold (qonnx) and Thresholding, MVAU, VVAU (finn) call the fixed function."""
    import importlib

    import hw.finn_flow  # noqa: F401  (installs the fixes)
    from hw import qonnx_fixes

    for name in qonnx_fixes._MULTITHRESHOLD_USERS:
        assert importlib.import_module(name).multithreshold is qonnx_fixes.multithreshold_sorted


@pytest.mark.parametrize("stage", ["02_export_qonnx", "04_to_finn", "05_streamline",
                                   "07_convert_to_hw", "partition_parent", "09_specialize"])
def test_readable_tensor_names_in_one_pass_name_as_qonnx_does(bacalhaunet_build, stage):
    """On each stage graph of the BacalhauNet build, with its tensors renamed at random first:
    the same graph, byte for byte, as qonnx's one-rename-at-a-time GiveUniqueTensorNames and
    GiveReadableTensorNames."""
    import copy
    import random

    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueTensorNames

    import hw.finn_flow  # noqa: F401  (installs the fixes)
    from hw import qonnx_fixes

    model = ModelWrapper(str(bacalhaunet_build / "intermediate" / f"{stage}.onnx"))
    rng = random.Random(0)
    for name in model.get_all_tensor_names() + [t.name for t in model.graph.initializer]:
        model.rename_tensor(name, f"t{rng.getrandbits(40):x}")
    renamed_before = model.model.SerializeToString()
    for fixed, original in ((qonnx_fixes.give_unique_tensor_names,
                             qonnx_fixes._ORIGINAL_UNIQUE_NAMES),
                            (qonnx_fixes.give_readable_tensor_names,
                             qonnx_fixes._ORIGINAL_READABLE_NAMES)):
        assert original is not None and original is not fixed
        ours = fixed(None, copy.deepcopy(model))[0]
        GiveUniqueTensorNames.apply = qonnx_fixes._ORIGINAL_UNIQUE_NAMES
        try:
            stock = original(None, copy.deepcopy(model))[0]
        finally:
            GiveUniqueTensorNames.apply = qonnx_fixes.give_unique_tensor_names
        assert ours.model.SerializeToString() == stock.model.SerializeToString()
        assert ours.model.SerializeToString() != renamed_before
    assert GiveReadableTensorNames.apply is qonnx_fixes.give_readable_tensor_names


def test_name_lookups_find_what_qonnx_finds(bacalhaunet_build):
    """get_by_name and get_initializer without name lists: on every tensor of a stage graph
    (and a missing one) the same item or value, and the same error on a duplicate name."""
    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper

    import hw.finn_flow  # noqa: F401  (installs the fixes)
    from hw import qonnx_fixes

    get_init, stock_init = qonnx_fixes.get_initializer_scan, qonnx_fixes._ORIGINAL_GET_INITIALIZER
    lookup, stock_lookup = qonnx_fixes.get_by_name_scan, qonnx_fixes._ORIGINAL_GET_BY_NAME
    assert stock_init is not None and stock_lookup is not None
    model = ModelWrapper(str(bacalhaunet_build / "intermediate" / "05_streamline.onnx"))
    graph = model.graph
    names = list(dict.fromkeys(model.get_all_tensor_names()
                               + [t.name for t in graph.initializer] + ["missing"]))
    found = 0
    for name in names:
        ours, stock = get_init(model, name, True), stock_init(model, name, True)
        assert (ours[0] is None) == (stock[0] is None) and ours[1] == stock[1], name
        if ours[0] is not None:
            np.testing.assert_array_equal(ours[0], stock[0])
            found += 1
        for container, field in ((graph.quantization_annotation, "tensor_name"),
                                 (graph.value_info, "name"), (graph.node, "name")):
            assert lookup(container, name, field) == stock_lookup(container, name, field)
    assert found == len(graph.initializer) > 10
    node = helper.make_node("Foo", ["a"], ["b"], name="n", x=1, y=2)
    node.attribute.append(helper.make_attribute("x", 3))
    for func in (lookup, stock_lookup):
        assert func(node.attribute, "y").i == 2 and func(node.attribute, "z") is None
        with pytest.raises(Exception, match="multiple get_by_name matches"):
            func(node.attribute, "x")
