"""qonnx/FINN's node-by-node Python execution, prepared once and run on many frames.

`qonnx.core.onnx_exec.execute_onnx` redoes per call what does not change between frames: it
checks the graph, converts every initializer from protobuf, looks each tensor's datatype up in
the annotations (twice per node, for `sanitize_quant_values`), and builds and compiles a
one-node ONNX model in onnxruntime for every standard node. On the verified build stages that
is 60-70 % of the time per frame (VGG10: 70-200 ms a frame, 24 frames per stage, 8 stages).

`FrameExecutor` does that work once per graph and then runs, frame by frame, exactly what
`execute_onnx` runs: the same custom-op `execute_node` implementations (qonnx and FINN), the
same one-node onnxruntime models (their sessions kept), the same rounding of integer-annotated
tensors before and after each node (`sanitize_quant_values`' rule and error threshold).
One frame at a time on purpose: qonnx's Im2Col mixes frames at batch > 1. A test checks every
tensor against `execute_onnx` on each stage of a build.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

__all__ = ["FrameExecutor"]


@dataclass
class _OrtNode:
    """A standard ONNX node as qonnx executes it: a one-node model in onnxruntime."""

    session: object  # None: a node with a subgraph, left to qonnx's execute_node
    opset: int
    inputs: list[str]
    outputs: list[tuple[str, int]]  # (tensor, index in the session's outputs)


class _Sanitizer:
    """qonnx's `sanitize_quant_values` with each tensor's datatype looked up once, and the
    largest rounding error taken with numpy (qonnx iterates over the array in Python's `max`,
    half the time of a frame on the HW stages). Same rule: an integer-annotated tensor whose
    values are not all allowed is rounded, with qonnx's warning; rounding by more than qonnx's
    execution error threshold raises."""

    def __init__(self, model: ModelWrapper):
        self._model = model
        self._types: dict = {}

    def _integer_type(self, name: str):
        if name not in self._types:
            dtype = self._model.get_tensor_datatype(name)
            self._types[name] = dtype if dtype.is_integer() else None
        return self._types[name]

    def __call__(self, names, context: dict) -> None:
        import warnings

        from qonnx.util.basic import get_execution_error_thresh

        for name in names:
            dtype = self._integer_type(name)
            if dtype is None:
                continue
            values = context[name]
            if np.all(dtype.allowed(values)):
                continue
            rounded = np.round(values)
            warnings.warn(f"The values of tensor {name} can't be represented with the set "
                          f"datatype annotation ({dtype.name}), they will be rounded to match "
                          "the datatype annotation.")
            error = float(np.abs(values - rounded).max()) if values.size else 0.0
            if not error <= get_execution_error_thresh():
                raise ValueError(f"Rounding error is too high to match set QONNX datatype "
                                 f"({dtype}) for input {name}")
            context[name] = rounded


class FrameExecutor:
    """Execute `model` (inputs and outputs named as in the graph) one frame at a time."""

    def __init__(self, model: ModelWrapper):
        import qonnx.analysis.topology as ta
        from qonnx.custom_op.registry import getCustomOp, is_custom_op
        from qonnx.util.basic import get_preferred_qonnx_opset

        if not model.check_all_tensor_shapes_specified():
            raise ValueError("found unspecified tensor shapes, run InferShapes first")
        if not model.analysis(ta.nodes_topologically_sorted)["nodes_topologically_sorted"]:
            raise ValueError("nodes must be topologically sorted")
        self.model = model
        self.graph = model.graph
        self._base = model.make_empty_exec_context()
        self._initializers = {t.name for t in self.graph.initializer}
        self._sanitize = _Sanitizer(model)
        opsets = model.get_opset_imports()
        self._steps = []
        for node in self.graph.node:
            opset = opsets.get(node.domain, get_preferred_qonnx_opset())
            if is_custom_op(node.domain, node.op_type):
                self._steps.append((node, getCustomOp(node, onnx_opset_version=opset)))
            else:
                self._steps.append((node, self._ort_node(node, opset)))

    def _ort_node(self, node, opset: int) -> _OrtNode:
        """The one-node model of qonnx's `execute_node` (same inputs, outputs and opset)."""
        import onnx.helper as helper
        import onnxruntime as rt
        from qonnx.util.basic import qonnx_make_model

        graph = self.graph
        node_inputs = [x for x in graph.input if x.name in node.input]
        node_inputs += [x for x in graph.output if x.name in node.input]
        node_inputs += [x for x in graph.value_info if x.name in node.input]
        node_outputs = [x for x in graph.output if x.name in node.output]
        node_outputs += [x for x in graph.value_info if x.name in node.output]
        if any(attr.type == 5 for attr in node.attribute):  # a subgraph: leave it to qonnx
            return _OrtNode(None, opset, [], [])
        node_model = qonnx_make_model(helper.make_graph(
            nodes=[node], name="single-node-exec", inputs=node_inputs, outputs=node_outputs))
        node_model.opset_import[0].version = opset
        options = rt.SessionOptions()
        # one thread, no spinning: tensors of one frame are small, and on a shared machine
        # onnxruntime's spinning worker threads cost more than they bring (qonnx uses the
        # defaults; float results can differ from its in the last bits: summation order)
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = rt.InferenceSession(node_model.SerializeToString(), options,
                                      providers=["CPUExecutionProvider"])
        names = [x.name for x in node_outputs]
        outputs = []
        for out in node.output:
            if out not in names:
                raise ValueError(f"output {out} of node {node.name} has no shape information")
            outputs.append((out, names.index(out)))
        return _OrtNode(session, opset, list(node.input), outputs)

    def run(self, inputs: dict[str, np.ndarray], keep_all: bool = False) -> dict[str, np.ndarray]:
        """One frame: `inputs` by graph input name, in the graph's declared shapes. Returns the
        graph outputs, or every tensor when `keep_all` (like execute_onnx's full context)."""
        from qonnx.core.onnx_exec import execute_node
        from qonnx.util.basic import get_sanitize_quant_tensors

        context = {name: (value if name in self._initializers or value is None else value.copy())
                   for name, value in self._base.items()}
        for name, value in inputs.items():
            if name in context and context[name].shape != value.shape:
                raise ValueError(f"input {name}: shape {value.shape}, the graph declares "
                                 f"{context[name].shape}")
            context[name] = value
        sanitize = get_sanitize_quant_tensors() != 0
        for node, impl in self._steps:
            if sanitize:
                self._sanitize(node.input, context)
            if isinstance(impl, _OrtNode):
                if impl.session is None:
                    execute_node(node, context, self.graph, impl.opset)
                else:
                    results = impl.session.run(None, {i: context[i] for i in impl.inputs})
                    for name, index in impl.outputs:
                        context[name] = results[index]
            else:
                impl.execute_node(context, self.graph)
            if sanitize:
                self._sanitize(node.output, context)
        if keep_all:
            return context
        return {out.name: context[out.name] for out in self.graph.output}
