"""FINN dataflow stages driven through finn-plus's Python API, and bit-exact execution of any stage.

No part of this module uses finn's builder or needs Vivado. Stages, in order:

    export_qonnx -> to_finn -> streamline -> insert_topk -> convert_to_hw -> partition
    -> (dataflow_model) -> specialize -> set_folding -> estimates / generate_code

Each stage takes a `ModelWrapper` and returns a new one (the input is not modified); the
transformation sequence inside each is a plain chain, so it maps onto named build steps.
Every stage can be executed in Python (`execute`, `compare_to_reference`): specialized
`*_hls` / `*_rtl` nodes run as their generic HW op, and a dataflow partition runs inlined into
its parent. Frames are executed one at a time: qonnx's Im2Col mixes frames at batch > 1.

Call `hw.finn_env.configure_finn(build_dir)` before any stage that writes files (partition,
code generation).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.fold_constants import FoldConstants
from qonnx.transformation.general import (
    GiveReadableTensorNames,
    GiveUniqueNodeNames,
    RemoveStaticGraphInputs,
    RemoveUnusedTensors,
)
from qonnx.transformation.infer_data_layouts import InferDataLayouts
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.transformation.insert_topk import InsertTopK
from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
from qonnx.util.cleanup import cleanup_model

import finn.transformation.streamline.absorb as absorb
import finn.transformation.streamline.reorder as reorder
from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
    InferElementwiseBinaryOperation,
)
from finn.transformation.fpgadataflow.convert_to_hw.global_acc_pool import InferGlobalAccPoolLayer
from finn.transformation.fpgadataflow.convert_to_hw.label_select import InferLabelSelectLayer
from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool
from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
    InferQuantizedMatrixVectorActivation,
)
from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer
from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import (
    InferVectorVectorActivation,
)
from finn.transformation.fpgadataflow.minimize_accumulator_width import MinimizeAccumulatorWidth
from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

from flows.errors import ToolchainError
from hw.qonnx_fixes import apply_qonnx_fixes
from hw.transforms import (
    OUTPUT_SCALE_KEY,
    AbsorbChannelPermutationIntoConv,
    AbsorbLinearIntoHostPartition,
    AbsorbTransposeIntoFlattenStrict,
    ConvBiasQuantParamsAs1d,
    InferDuplicateStreamsBetweenHWLayers,
    IntegerizeAddConstant,
    LiftConv1dTo2d,
    MakeForkedMaxPoolNHWC,
    MoveLinearPastEltwiseAddForkSafe,
    QuantSigmoidToMultiThreshold,
    RecordTopKInputScale,
    RepeatUntilFixpoint,
    SplitOffHostBranch,
    StreamlineTidyOnChange,
)

__all__ = [
    "Divergence", "StageCheck", "compare_to_reference", "convert_to_hw", "dataflow_model",
    "dsp_layers", "estimates", "execute", "executable_copy", "export_qonnx", "first_divergence",
    "generate_code", "insert_topk", "lut_multipliers", "minimize_bit_widths", "partition",
    "set_folding",
    "specialize", "streamline", "to_finn", "verify", "with_dataflow_model",
]

apply_qonnx_fixes()

_HW_DOMAIN = "finn.custom_op.fpgadataflow"
_SDP = "StreamingDataflowPartition"


# --- stages ------------------------------------------------------------------------------------

def export_qonnx(model, input_shape: Sequence[int], path: str | Path) -> ModelWrapper:
    """Export a Brevitas model for one frame of `input_shape` (without the batch axis) to QONNX
    at `path` and return it cleaned up (qonnx `cleanup_model`: shapes, constants folded).

    Uses the TorchScript exporter (`dynamo=False`): the dynamo exporter writes ReduceMean / Gemm /
    Reshape, which FINN does not map.
    """
    import torch
    from brevitas.export import export_qonnx as brevitas_export_qonnx

    was_training = model.training
    model.eval()
    active: list[str] = []  # modules entered and not yet left while the exporter traces
    names = {module: name for name, module in model.named_modules()}

    def enter(module, _inputs) -> None:
        active.append(names[module])

    def leave(_module, _inputs, _output) -> None:  # must return None: keeps the output
        active.pop()

    hooks = [m.register_forward_pre_hook(enter) for m in model.modules()]
    hooks += [m.register_forward_hook(leave) for m in model.modules()]
    try:
        brevitas_export_qonnx(model, torch.zeros(1, *input_shape), str(path), dynamo=False)
    except Exception as exc:  # noqa: BLE001  (the exporter raises anything; name the layer)
        layer = next((n for n in reversed(active) if n), None)
        where = (f"layer {layer!r} ({type(model.get_submodule(layer)).__name__})" if layer
                 else "the model's top level")
        raise ToolchainError(f"{type(model).__name__} cannot be exported to QONNX: {where} "
                             f"failed with {type(exc).__name__}: {exc}") from None
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return cleanup_model(ModelWrapper(str(path)))


def to_finn(model: ModelWrapper) -> ModelWrapper:
    """QONNX -> FINN-ONNX: Quant nodes on weights are folded, activation Quants become
    MultiThreshold; then tidy up (shapes, constants, unique names, datatypes).

    A branch the model computes in software from the raw frame (ops FINN has no HW layer for,
    and the layers combining it with the network's result) is moved into one `HostPartition`
    node first (`hw.transforms.SplitOffHostBranch`); FINN's stages pass it by."""
    model = cleanup_model(model)
    model = model.transform(LiftConv1dTo2d())  # QuantConv1d graphs: (N, C, L) -> (N, C, 1, L)
    model = model.transform(ConvBiasQuantParamsAs1d())  # int32 Conv biases (qonnx bug)
    model = model.transform(AbsorbChannelPermutationIntoConv())  # channel shuffles (5-D)
    model = model.transform(QuantSigmoidToMultiThreshold())  # quantized sigmoids: thresholds
    # what the model computes in software from the raw frame becomes one HostPartition node
    model = model.transform(SplitOffHostBranch())
    model = model.transform(ConvertQONNXtoFINN())
    return _tidy(model)


def streamline(model: ModelWrapper) -> ModelWrapper:
    """Move every float scale and bias into thresholds, lower convolutions to Im2Col + MatMul in
    NHWC, and leave integer tensors between the layers.

    Beyond finn's default streamlining this runs the residual loop (scales moved past forks
    before they are merged at the residual adds, until nothing changes), removes the
    Transposes around the adds and before the Flatten, rounds thresholds, and turns the final
    layer's bias into an integer Add in front of the output scale.
    """
    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = model.transform(StreamlineTidyOnChange())
    model = model.transform(LowerConvsToMatMul())
    model = model.transform(MakeForkedMaxPoolNHWC())
    model = model.transform(reorder.MakeMaxPoolNHWC())
    model = model.transform(absorb.AbsorbTransposeIntoMultiThreshold())
    model = model.transform(reorder.MakeMaxPoolNHWC())
    model = model.transform(absorb.AbsorbConsecutiveTransposes())
    # global average pooling: an integer GlobalAccPool (HW) and a scalar 1/N Mul, which the
    # loop below moves on into the next thresholds
    model = model.transform(InferDataLayouts())
    model = model.transform(InferGlobalAccPoolLayer())
    model = model.transform(absorb.AbsorbConsecutiveTransposes())
    model = model.transform(RepeatUntilFixpoint([
        reorder.MoveLinearPastFork(),  # first, so that no merged scale also feeds a branch
        MoveLinearPastEltwiseAddForkSafe(),
        reorder.MoveScalarLinearPastInvariants(),
        StreamlineTidyOnChange(),
    ]))
    model = model.transform(RepeatUntilFixpoint([
        reorder.MoveTransposePastFork(),
        absorb.AbsorbConsecutiveTransposes(),
        reorder.MoveTransposePastJoinAdd(),
        absorb.AbsorbConsecutiveTransposes(),
    ]))
    model = model.transform(InferDataLayouts())
    model = model.transform(AbsorbTransposeIntoFlattenStrict())  # finn's fails on other Reshapes
    # Thresholds on integer inputs: ceil and clip to the input range. Must precede
    # MinimizeWeightBitWidth, which asserts non-negative thresholds on unsigned inputs.
    model = model.transform(RoundAndClipThresholds())
    model = model.transform(reorder.MoveMulPastAdd())
    model = model.transform(IntegerizeAddConstant())
    model = model.transform(AbsorbLinearIntoHostPartition())  # the last scale, if host's
    model = model.transform(InferDataTypes())
    model = model.transform(InferDataLayouts())
    return model.transform(RemoveUnusedTensors())


def insert_topk(model: ModelWrapper, k: int = 1) -> ModelWrapper:
    """Make the graph output the top-k class indices; the positive output scale is absorbed
    into the TopK and recorded as metadata `output_scale` (logits = scores * output_scale)."""
    model = model.transform(InsertTopK(k=k))
    model = model.transform(RecordTopKInputScale())
    model = model.transform(absorb.AbsorbScalarMulAddIntoTopK())
    # InsertTopK drops the old output's shape; only an absorption would infer it again
    return model.transform(InferShapes()).transform(InferDataTypes())


def convert_to_hw(model: ModelWrapper) -> ModelWrapper:
    """Map the streamlined graph onto FINN HW layers, thresholds standalone (not embedded in
    MVAU/VVAU, where 6-bit activations on ~17-bit accumulators cost ~1.1k LUT per PE), then
    minimize weight and accumulator widths (the residual adds become UINT7, not INT32).

    An elementwise join of two computed tensors of different shapes (a broadcast) is refused
    first, naming the node and what reaches it."""
    _check_no_broadcast_joins(model)
    for transformation in (
        InferThresholdingLayer(),  # before the MatMul conversions: keeps thresholds standalone
        InferQuantizedMatrixVectorActivation(),
        InferVectorVectorActivation(),
        InferLabelSelectLayer(),
        InferPool(),
        InferConvInpGen(),
        InferElementwiseBinaryOperation(),
        InferDuplicateStreamsBetweenHWLayers(),  # finn's also duplicates forks into software
        absorb.AbsorbConsecutiveTransposes(),
        RemoveCNVtoFCFlatten(),
        GiveUniqueNodeNames(),
        InferDataLayouts(),
        InferDataTypes(),
        InferShapes(),
    ):
        model = model.transform(transformation)
    return minimize_bit_widths(model)


def _check_no_broadcast_joins(model: ModelWrapper) -> None:
    """Refuse an Add/Sub/Mul of two computed tensors of different shapes (a broadcast), with
    what reaches it: the flow has no mapping for it (ulcnn's channel attention multiplies the
    feature map by a per-channel mask computed from that same feature map)."""
    for node in model.graph.node:
        if node.op_type not in ("Add", "Sub", "Mul") or len(node.input) != 2:
            continue
        if any(model.get_initializer(t) is not None for t in node.input):
            continue
        shapes = [model.get_tensor_shape(t) for t in node.input]
        if shapes[0] == shapes[1]:
            continue
        inputs = " and ".join(f"{t} {shape} {model.get_tensor_datatype(t).name}"
                              for t, shape in zip(node.input, shapes))
        floats = any(not model.get_tensor_datatype(t).is_integer() for t in node.input)
        raise ToolchainError(
            f"node {node.name} ({node.op_type}) combines {inputs}: one broadcast over the "
            "other (e.g. a channel attention mask over its feature map), which this flow "
            "cannot map onto HW layers"
            + ("; the float inputs are integer tensors times their scales, and no streamlining "
               "moves scales past a product of two computed tensors" if floats else "")
            + "; in a stream the feature map would also wait in a buffer for a whole frame "
              "until the mask computed from it is ready")


def partition(model: ModelWrapper, partition_dir: str | Path) -> ModelWrapper:
    """Move all HW layers into one StreamingDataflowPartition whose model is written to
    `partition_dir`; returns the parent graph. Raises if a non-HW layer sits between HW layers
    or if the HW layers do not form a single partition."""
    from finn.analysis.fpgadataflow.unsupported_layers import unsupported_layers
    from finn.transformation.fpgadataflow.create_dataflow_partition import (
        CreateDataflowPartition,
    )

    contiguous, first_bad = model.analysis(unsupported_layers)
    if not contiguous:
        raise ToolchainError(
            f"layer {first_bad.name} ({first_bad.op_type}) is not a HW layer but sits between HW "
            "layers; streamlining or HW conversion left it behind")
    Path(partition_dir).mkdir(parents=True, exist_ok=True)
    parent = model.transform(CreateDataflowPartition(partition_model_dir=str(partition_dir)))
    sdps = parent.get_nodes_by_op_type(_SDP)
    if len(sdps) != 1:
        raise ToolchainError(f"expected one dataflow partition, got {len(sdps)}")
    child = ModelWrapper(getCustomOp(sdps[0]).get_nodeattr("model"))
    _copy_metadata(model, child)
    child.save(getCustomOp(sdps[0]).get_nodeattr("model"))
    return parent


def dataflow_model(parent: ModelWrapper) -> ModelWrapper:
    """The HW-only graph of the single dataflow partition of `parent`."""
    sdps = parent.get_nodes_by_op_type(_SDP)
    if len(sdps) != 1:
        raise ToolchainError(f"expected one dataflow partition, got {len(sdps)}")
    return ModelWrapper(getCustomOp(sdps[0]).get_nodeattr("model"))


def specialize(model: ModelWrapper, fpga_part: str) -> ModelWrapper:
    """Choose the HLS or RTL implementation of every HW layer for `fpga_part`, then minimize
    bit widths for those implementations (RTL thresholds need one value of headroom). Folding
    does not change the minimal widths, so this is done once here, not per folding attempt."""
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers

    model = model.transform(SpecializeLayers(fpga_part))
    model = model.transform(GiveUniqueNodeNames())
    model = model.transform(InferShapes())
    return minimize_bit_widths(model.transform(InferDataTypes()))


_DSP_LAYERS = ("MVAU", "VVAU")  # layers whose multipliers can be DSPs or LUTs


def dsp_layers(model: ModelWrapper) -> list[str]:
    """Names of the specialized MVAU/VVAU layers that multiply in DSP slices (every RTL one;
    an HLS one unless its resType is "lut")."""
    names = []
    for node in model.graph.node:
        for op in _DSP_LAYERS:
            if node.op_type == f"{op}_rtl" or (node.op_type == f"{op}_hls" and
                                               getCustomOp(node).get_nodeattr("resType") != "lut"):
                names.append(node.name)
    return names


def lut_multipliers(model: ModelWrapper, fpga_part: str) -> ModelWrapper:
    """`model` (specialized) with every MVAU/VVAU multiplying in LUTs instead of DSP slices:
    each becomes FINN's HLS layer with resType "lut" (finn-plus's RTL MVAU/VVAU are DSP-only),
    specialized again for `fpga_part`, bit widths minimized. For a board whose DSPs run out
    long before its LUTs (PYNQ-Z2: 220 DSP for 53k LUT) at low weight and activation widths.
    Node names follow FINN's scheme, so they change (MVAU_rtl_3 -> MVAU_hls_3)."""
    from onnx import helper

    model = copy.deepcopy(model)
    changed = False
    for node in model.graph.node:
        op = next((o for o in _DSP_LAYERS if node.op_type in (f"{o}_rtl", f"{o}_hls")), None)
        if op is None:
            continue
        node.op_type, node.domain = op, _HW_DOMAIN
        kept = [a for a in node.attribute if a.name not in ("preferred_impl_style", "resType")]
        del node.attribute[:]
        node.attribute.extend(kept)
        node.attribute.append(helper.make_attribute("preferred_impl_style", "hls"))
        node.attribute.append(helper.make_attribute("resType", "lut"))
        changed = True
    return specialize(model, fpga_part) if changed else model


def uram_weight_layers(model: ModelWrapper) -> list[str]:
    """Names of the MVAUs that keep their weights in UltraRAM."""
    return [n.name for n in model.graph.node if n.op_type.startswith("MVAU")
            and getCustomOp(n).get_nodeattr("ram_style") == "ultra"]


def weights_to_uram(model: ModelWrapper, names: Sequence[str]) -> ModelWrapper:
    """`model` with the MVAUs `names` keeping their weights in UltraRAM (ram_style "ultra")
    instead of block RAM. UltraScale+ URAM cannot be initialised by the bitstream, so FINN
    requires such layers to be runtime-writeable (an AXI-lite port through which the driver
    writes the weights at start-up): that is set too. Only decoupled weight memories
    (mem_mode internal_decoupled, FINN's default) can be moved."""
    model = copy.deepcopy(model)
    wanted = set(names)
    for node in model.graph.node:
        if node.name not in wanted:
            continue
        inst = getCustomOp(node)
        if not node.op_type.startswith("MVAU") or \
                inst.get_nodeattr("mem_mode") != "internal_decoupled":
            raise ToolchainError(f"{node.name} ({node.op_type}) cannot keep its weights in URAM: "
                                 "only MVAUs with decoupled weight memories can")
        inst.set_nodeattr("ram_style", "ultra")
        inst.set_nodeattr("runtime_writeable_weights", 1)
        wanted.discard(node.name)
    if wanted:
        raise ToolchainError(f"weights_to_uram: no layer named {', '.join(sorted(wanted))}")
    return model


def set_folding(model: ModelWrapper, target_fps: float, clock_mhz: float,
                mvau_wwidth_max: int = 36) -> ModelWrapper:
    """Set PE/SIMD of every layer for `target_fps` at `clock_mhz` (finn's SetFolding with its
    two-pass relaxation). Bit widths were minimized at specialization (they do not depend on
    the folding).

    `mvau_wwidth_max` caps SIMD x weight bits per PE of the MVAUs (finn's default 36).
    """
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    target_cycles = int(clock_mhz * 1e6 / target_fps)
    return model.transform(SetFolding(target_cycles, mvau_wwidth_max=mvau_wwidth_max,
                                      two_pass_relaxation=True))


def estimates(model: ModelWrapper, fpga_part: str, clock_mhz: float) -> dict:
    """finn's analytical estimates of a folded dataflow model: per layer and total LUT, BRAM18,
    URAM, DSP and cycles per frame, the bottleneck layer and the frame rate it allows."""
    from finn.analysis.fpgadataflow.dataflow_performance import dataflow_performance
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.transformation.fpgadataflow.annotate_cycles import AnnotateCycles

    model = model.transform(AnnotateCycles())  # dataflow_performance reads these annotations
    cycles = model.analysis(exp_cycles_per_layer)
    resources = model.analysis(lambda m: res_estimation(m, fpga_part))
    performance = model.analysis(dataflow_performance)
    layers = []
    for node in model.graph.node:
        inst = getCustomOp(node)
        attrs = inst.get_nodeattr_types()
        res = resources[node.name]
        layers.append({
            "name": node.name,
            "op_type": node.op_type,
            "pe": inst.get_nodeattr("PE") if "PE" in attrs else None,
            "simd": inst.get_nodeattr("SIMD") if "SIMD" in attrs else None,
            "cycles": int(cycles[node.name]),
            "lut": float(res.get("LUT", 0)),
            "bram18": int(res.get("BRAM_18K", 0)),
            "uram": int(res.get("URAM", 0)),
            "dsp": int(res.get("DSP", 0)),
        })
    total = {key: sum(layer[key] for layer in layers) for key in ("lut", "bram18", "uram", "dsp")}
    max_cycles = int(performance["max_cycles"])
    return {
        "fpga_part": fpga_part,
        "clock_mhz": clock_mhz,
        "layers": layers,
        "total": total,
        "bottleneck": performance["max_cycles_node_name"],
        "max_cycles": max_cycles,
        "throughput_fps": clock_mhz * 1e6 / max_cycles,
        "latency_cycles": int(performance["critical_path_cycles"]),
    }


def generate_code(model: ModelWrapper, fpga_part: str, clock_mhz: float) -> ModelWrapper:
    """Generate each layer's sources below FINN_BUILD_DIR (finn's PrepareIP): filled Verilog /
    SystemVerilog templates and memory files for RTL layers, HLS C++ and the Vitis HLS tcl
    script for HLS layers. Turning those into IP (HLSSynthIP, stitching) needs Vivado/Vitis."""
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP

    model = model.transform(GiveUniqueNodeNames())
    return model.transform(PrepareIP(fpga_part, 1000.0 / clock_mhz))


def _tidy(model: ModelWrapper) -> ModelWrapper:
    for transformation in (InferShapes(), FoldConstants(), GiveUniqueNodeNames(),
                           GiveReadableTensorNames(), InferDataTypes(), RemoveStaticGraphInputs()):
        model = model.transform(transformation)
    return model


def minimize_bit_widths(model: ModelWrapper) -> ModelWrapper:
    """finn's bit width minimization (as its step_minimize_bit_width): weights, accumulators,
    thresholds rounded and clipped, then threshold widths once more."""
    for transformation in (MinimizeWeightBitWidth(), MinimizeAccumulatorWidth(), InferDataTypes(),
                           RoundAndClipThresholds(), InferDataTypes(), MinimizeWeightBitWidth(),
                           InferDataTypes()):
        model = model.transform(transformation)
    return model


def _copy_metadata(source: ModelWrapper, target: ModelWrapper) -> None:
    for prop in source.model.metadata_props:
        if target.get_metadata_prop(prop.key) is None:
            target.set_metadata_prop(prop.key, prop.value)


# --- execution ---------------------------------------------------------------------------------

def with_dataflow_model(parent: ModelWrapper, child: ModelWrapper) -> ModelWrapper:
    """The whole network as one graph: `parent` with its single dataflow partition replaced by
    the nodes of `child` (e.g. the partition after specialization or folding)."""
    sdps = parent.get_nodes_by_op_type(_SDP)
    if len(sdps) != 1:
        raise ToolchainError(f"expected one dataflow partition, got {len(sdps)}")
    return _inline_partitions(parent, {sdps[0].name: child})


def executable_copy(model: ModelWrapper) -> ModelWrapper:
    """A copy of `model` that finn executes in Python: dataflow partitions inlined, and
    specialized `*_hls` / `*_rtl` nodes (executable only in cppsim/rtlsim) mapped back to their
    generic HW op, whose Python execution is the reference for both."""
    model = _inline_partitions(model)
    for node in model.graph.node:
        for suffix in ("_hls", "_rtl"):
            if node.domain in (f"{_HW_DOMAIN}.hls", f"{_HW_DOMAIN}.rtl") and \
                    node.op_type.endswith(suffix):
                node.op_type = node.op_type[: -len(suffix)]
                node.domain = _HW_DOMAIN
                getCustomOp(node)  # raises if the generic op does not exist
    return model


def _inline_partitions(model: ModelWrapper,
                       children: dict[str, ModelWrapper] | None = None) -> ModelWrapper:
    """Copy of `model` with every StreamingDataflowPartition node replaced by the nodes of its
    model (or of `children[node.name]`)."""
    model = copy.deepcopy(model)
    graph = model.graph
    for node in list(graph.node):
        if node.op_type != _SDP:
            continue
        child = (children or {}).get(node.name)
        if child is None:
            child = ModelWrapper(getCustomOp(node).get_nodeattr("model"))
        child = copy.deepcopy(child)
        rename = {t.name: n for t, n in zip(child.graph.input, node.input)}
        rename.update({t.name: n for t, n in zip(child.graph.output, node.output)})
        own_tensors = {t for n in graph.node if n.op_type != _SDP for t in [*n.input, *n.output]}
        clash = ((set(child.get_all_tensor_names()) | {t.name for t in child.graph.initializer})
                 - set(rename)) & own_tensors
        if clash:
            raise ToolchainError(f"partition {node.name} reuses tensor names of its parent: "
                                 f"{sorted(clash)[:5]}")
        child_tensors = set(child.get_all_tensor_names()) | {
            t.name for t in child.graph.initializer}
        for name in sorted(child_tensors):
            if name in rename:
                continue
            if child.get_initializer(name) is not None:
                model.set_initializer(name, child.get_initializer(name))
            model.set_tensor_datatype(name, child.get_tensor_datatype(name))
            shape = child.get_tensor_shape(name)
            if shape is not None and child.get_initializer(name) is None:
                model.set_tensor_shape(name, shape)
        index = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, child_node in enumerate(child.graph.node):
            for i, name in enumerate(child_node.input):
                child_node.input[i] = rename.get(name, name)
            for i, name in enumerate(child_node.output):
                child_node.output[i] = rename.get(name, name)
            graph.node.insert(index + offset, child_node)
        _copy_metadata(child, model)
    return model


def execute(model: ModelWrapper, frames: np.ndarray) -> np.ndarray:
    """Execute any stage of `model` in Python on `frames` (N, ...), one frame at a time, and
    return its output stacked over the frames. Frames are in the layout of the graph's input."""
    return _run(executable_copy(model), frames)["output"]


def _as_input(exe: ModelWrapper, frame: np.ndarray) -> np.ndarray:
    """One frame as the graph's input tensor: a batch of 1 in the graph's declared shape (a 1D
    graph lifted to (1, C, 1, L) takes the same samples as its (1, C, L) original)."""
    shape = exe.get_tensor_shape(exe.graph.input[0].name)
    return np.ascontiguousarray(frame, dtype=np.float32).reshape(shape)


def _run(exe: ModelWrapper, frames: np.ndarray, tensors: Sequence[str] = ()) -> \
        dict[str, np.ndarray]:
    """Execute an executable copy frame by frame (qonnx/FINN's node execution, prepared once:
    `hw.frame_exec`); "output" and each of `tensors`, stacked."""
    from hw.frame_exec import FrameExecutor

    executor = FrameExecutor(exe)
    in_name, out_name = exe.graph.input[0].name, exe.graph.output[0].name
    results: dict[str, list[np.ndarray]] = {"output": [], **{t: [] for t in tensors}}
    for frame in frames:
        context = executor.run({in_name: _as_input(exe, frame)}, keep_all=bool(tensors))
        results["output"].append(context[out_name])
        for name in tensors:
            results[name].append(context[name])
    return {name: np.concatenate(values) for name, values in results.items()}


@dataclass(frozen=True)
class StageCheck:
    """One stage's outputs against the reference logits."""

    frames: int
    classes_equal: int  # frames whose top-1 class equals the reference's
    max_abs_diff: float  # largest |logit - reference logit| (logits from scores x output_scale)
    logits: np.ndarray  # the stage's logits (N, classes)
    classes: np.ndarray  # the stage's top-1 classes (N,)

    reference: np.ndarray  # the reference logits compared with

    @property
    def exact_classes(self) -> bool:
        return self.classes_equal == self.frames

    def frames_within(self, atol: float) -> int:
        """Frames whose every logit is within `atol` of the reference."""
        return int((np.abs(self.logits - self.reference).max(axis=1) <= atol).sum())

    def frames_within_relative(self, atol: float, rtol: float) -> int:
        """Frames whose every logit is within `atol + rtol * scale` of the reference, the scale
        being the frame's largest |reference logit|, or the median frame's if that is larger: a
        rounding flip moves logits by an absolute amount (one activation step times weights), so
        a frame the model is unsure of (all logits small) gets the model's typical bound."""
        largest = np.abs(self.reference).max(axis=1)
        bound = atol + rtol * np.maximum(largest, np.median(largest))
        return int((np.abs(self.logits - self.reference).max(axis=1) <= bound).sum())


def compare_to_reference(model: ModelWrapper, frames: np.ndarray,
                         reference_logits: np.ndarray, tie_atol: float = 1e-4) -> StageCheck:
    """Execute `model` and compare with `reference_logits` (N, classes).

    A graph ending in TopK / LabelSelect is compared on its top-1 index and on the scores that
    enter it, times the `output_scale` recorded when the scale was absorbed. A class equals the
    reference's when its reference logit is within `tie_atol` of the reference's largest: with
    quantized outputs two classes can tie, and float noise then picks either.
    """
    exe = executable_copy(model)
    last = exe.find_producer(exe.graph.output[0].name)
    if last is not None and last.op_type in ("TopK", "LabelSelect"):
        if exe.get_metadata_prop(OUTPUT_SCALE_KEY) is None:
            raise ToolchainError(f"the graph ends in {last.op_type} but has no {OUTPUT_SCALE_KEY}"
                                 " metadata: insert the TopK with insert_topk()")
        scale = float(exe.get_metadata_prop(OUTPUT_SCALE_KEY))
        out = _run(exe, frames, tensors=[last.input[0]])
        classes = out["output"].reshape(len(frames), -1)[:, 0].astype(int)
        logits = out[last.input[0]].reshape(len(frames), -1) * scale
    else:
        logits = _run(exe, frames)["output"].reshape(len(frames), -1)
        classes = logits.argmax(axis=1)
    return StageCheck(
        frames=len(frames),
        classes_equal=int(_same_top1(classes, reference_logits, tie_atol).sum()),
        max_abs_diff=float(np.abs(logits - reference_logits).max()),
        logits=logits,
        classes=classes,
        reference=reference_logits,
    )


def _same_top1(classes: np.ndarray, reference_logits: np.ndarray, tie_atol: float) -> np.ndarray:
    """Per frame: is `classes` a top-1 class of the reference (ties within `tie_atol`)?"""
    chosen = np.take_along_axis(reference_logits, classes[:, None].astype(int), axis=1)[:, 0]
    return chosen >= reference_logits.max(axis=1) - tie_atol


def verify(stage: str, model: ModelWrapper, frames: np.ndarray, reference_logits: np.ndarray,
           *, previous: ModelWrapper | None = None, atol: float = 1e-4,
           max_off_fraction: float = 0.0, rtol: float | None = None,
           evidence_dir: str | Path | None = None) -> StageCheck:
    """`compare_to_reference`, failing loudly.

    Passes when every top-1 class equals the reference's, the logits of at least
    (1 - `max_off_fraction`) of the frames are within `atol`, and those of every frame within
    `atol + rtol * max |reference logit|` of that frame, or of the median frame if larger
    (`StageCheck.frames_within_relative`; no such bound when `rtol` is None).
    A float reference and a graph that
    computes the same float ops in another order can round a value that sits on a quantization
    step boundary to the neighbouring level; such a frame moves by a fraction of a percent of
    its logits (`max_off_fraction` and `rtol` admit it, its count is reported), while a wrong
    weight, threshold or scale moves every frame, or one frame by much more. Integer stages
    compared among themselves agree exactly. On failure, write the frames, both logits and the model to `evidence_dir` and raise
    with the size of the difference and, when the `previous` stage is given, the first node
    where the two stages diverge on the worst frame."""
    check = compare_to_reference(model, frames, reference_logits, tie_atol=atol)
    allowed_off = int(np.floor(max_off_fraction * check.frames))
    bounded = check.frames if rtol is None else check.frames_within_relative(atol, rtol)
    if (check.exact_classes and check.frames - check.frames_within(atol) <= allowed_off
            and bounded == check.frames):
        return check
    message = (f"verification failed after {stage}: {check.classes_equal}/{check.frames} top-1 "
               f"classes equal, {check.frames_within(atol)}/{check.frames} frames with logits "
               f"within {atol:g} (at least {check.frames - allowed_off} required), "
               + ("" if rtol is None else f"{bounded}/{check.frames} within {atol:g} + "
                  f"{rtol:g} x max |logit| (all required), ")
               + f"max |logit diff| {check.max_abs_diff:.3g}")
    worst = int(np.abs(check.logits - reference_logits).max(axis=1).argmax())
    if previous is not None:
        try:
            divergence = first_divergence(previous, model, frames[worst])
            message += ("; first divergence from the previous stage: " + (
                f"node {divergence.node} ({divergence.op_type}), tensor {divergence.tensor}, "
                f"max |diff| {divergence.max_abs_diff:.3g} ({divergence.reason})"
                if divergence is not None else
                f"none on frame {worst}: this stage computes what its input graph computes, "
                "so that input already differs from what was verified (an edited checkpoint?)"))
        except ToolchainError as err:
            message += f"; no node-by-node comparison: {err}"
    if evidence_dir is not None:
        evidence_dir = Path(evidence_dir)
        evidence_dir.mkdir(parents=True, exist_ok=True)
        np.save(evidence_dir / f"{stage}_frames.npy", frames)
        np.save(evidence_dir / f"{stage}_reference_logits.npy", reference_logits)
        np.save(evidence_dir / f"{stage}_logits.npy", check.logits)
        np.save(evidence_dir / f"{stage}_classes.npy", check.classes)
        model.save(str(evidence_dir / f"{stage}.onnx"))
        message += (f"; frames, reference logits, this stage's logits and classes and the "
                    f"model are in {evidence_dir}")
    raise ToolchainError(message)


@dataclass(frozen=True)
class Divergence:
    """The first tensor, in `model_b`'s node order, where two stages disagree."""

    node: str  # node of model_b producing the tensor
    op_type: str
    tensor: str
    max_abs_diff: float  # nan when the values break the tensor's datatype annotation instead
    reason: str  # "value" or "datatype"
    compared: int  # tensors compared before (and including) this one


def first_divergence(model_a: ModelWrapper, model_b: ModelWrapper, frame: np.ndarray,
                     atol: float = 1e-4) -> Divergence | None:
    """Execute both stages on one frame and walk `model_b`'s nodes in order: return the first
    output tensor whose values are not allowed by its datatype annotation, or that also exists
    in `model_a` under the same name and datatype (NCHW and NHWC layouts are matched) with a
    different value. None if all of them agree. Raises if no tensor could be compared.

    Tensors are matched by name, so use it between stages that keep names: from `streamline`
    on, each stage keeps the names of the tensors it does not replace. Across `to_finn` ->
    `streamline` names are reused for other values (a MultiThreshold output before and after
    its bias is absorbed): compare each of those stages with the reference instead."""
    from hw.frame_exec import FrameExecutor

    exe_a, exe_b = executable_copy(model_a), executable_copy(model_b)
    ctx_a = FrameExecutor(exe_a).run({exe_a.graph.input[0].name: _as_input(exe_a, frame)},
                                     keep_all=True)
    ctx_b = FrameExecutor(exe_b).run({exe_b.graph.input[0].name: _as_input(exe_b, frame)},
                                     keep_all=True)
    compared = 0
    for node in exe_b.graph.node:
        for name in node.output:
            value = ctx_b[name]
            dtype = exe_b.get_tensor_datatype(name)
            if dtype.is_integer() and not np.all(dtype.allowed(value)):
                return Divergence(node.name, node.op_type, name, float("nan"), "datatype",
                                  compared + 1)
            if name not in ctx_a or ctx_a[name] is None:
                continue
            if exe_a.get_tensor_datatype(name) != dtype:
                continue  # same name, other meaning (e.g. before and after a scale moved)
            compared += 1
            diff = _layout_matched_diff(ctx_a[name], value)
            if diff > atol:
                return Divergence(node.name, node.op_type, name, diff, "value", compared)
    if compared == 0:
        raise ToolchainError("the two stages share no tensor names; compare each of them with "
                             "the reference instead")
    return None


def _layout_matched_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| after matching NCHW / NHWC layouts and dropping unit axes; inf if the
    shapes cannot be matched."""
    if a.shape == b.shape:
        return float(np.abs(a - b).max())
    if a.ndim == 4 and b.ndim == 4:
        for perm in ((0, 2, 3, 1), (0, 3, 1, 2)):
            if a.transpose(perm).shape == b.shape:
                return float(np.abs(a.transpose(perm) - b).max())
    if a.size == b.size and np.squeeze(a).shape == np.squeeze(b).shape:
        return float(np.abs(np.squeeze(a) - np.squeeze(b)).max())
    return float("inf")
