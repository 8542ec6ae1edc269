"""Fixes to qonnx 1.0.0 and finn-plus themselves that the project's graphs need, applied once
on import of `hw.finn_flow`; each is written so it could be proposed upstream as it stands.

- `ModelWrapper.rename_tensor` renames only the first occurrence of a tensor among a node's
  inputs. A node that reads one tensor twice (`Mul(d, d)`: what the TorchScript exporter writes
  for `d ** 2`) keeps the old name on its second input after `GiveReadableTensorNames`, and the
  graph can no longer be executed ("Found unspecified tensor shapes"). The imperial model's
  statistics branch has such nodes. The fix renames every occurrence, in one pass over each
  part of the graph (finn's streamlining renames about 10,000 tensors per model).
- finn's `Thresholding.minimize_weight_bit_width` checks the chosen threshold datatype with
  `np.vectorize(dtype.allowed)`, one Python call per threshold: 0.2-0.5 s per layer, 2-9 s per
  build of the 8-bit VGG10 (its thresholds tensors hold 16k-33k values). `DataType.allowed` is
  already vectorized; the fix calls it on the whole tensor. Same datatype chosen, same error.
- `SortGraph`, which runs after every transformation (in `ModelWrapper.cleanup`), finds each
  node's predecessors by scanning all nodes for every input: quadratic in the node count, a
  quarter of BacalhauNet's streamlining. The fix maps each tensor to its first producer once;
  dependencies, the topological order (toposort) and the nodes it drops are the same.
- qonnx's `multithreshold` (the execution of MultiThreshold, and of finn's Thresholding, MVAU
  and VVAU) compares every value with every threshold of its channel and counts: an array of
  values x thresholds, 16 million booleans per 8-bit layer and frame, and 60 % of the time
  the build spends verifying the 8-bit VGG10. The fix counts by binary search in each
  channel's (ascending) thresholds: the same counts, dtype, scale and bias; thresholds that are
  not ascending, or NaN values, go to qonnx's version.
- `GiveUniqueTensorNames` and `GiveReadableTensorNames` (run after every step of finn's
  streamlining) rename tensors one at a time, each rename a scan of the whole graph: quadratic,
  a seventh of the streamlining time. The fix replays the same renames, in the same order, on
  name -> position maps and writes the final names once; the graph is byte-identical to what
  qonnx's two transformations give (with the rename fix above).
- `get_by_name` (every datatype, layout and node attribute lookup) and
  `ModelWrapper.get_initializer` build a list of every name in the container per call, 100,000
  calls per build. The fixes scan without building lists: same item, same error on a duplicate
  name (get_by_name), same first match (get_initializer).
"""

from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

__all__ = ["apply_qonnx_fixes", "get_by_name_scan", "get_initializer_scan",
           "give_readable_tensor_names", "give_unique_tensor_names",
           "minimize_threshold_width", "multithreshold_sorted", "rename_tensor_everywhere",
           "sort_graph_linear"]

_ORIGINAL_RENAME = ModelWrapper.rename_tensor  # qonnx's, for the tests that show its bug

def rename_tensor_everywhere(self: ModelWrapper, old_name: str, new_name: str) -> None:
    """`ModelWrapper.rename_tensor`, renaming every occurrence in node inputs and outputs.

    One pass over each part of the graph (qonnx's version builds a list of all names per part
    and then rescans the nodes); finn's streamlining calls this about 10,000 times per model.
    """
    graph = self.graph
    for part in (graph.input, graph.output, graph.value_info, graph.initializer):
        for tensor in part:
            if tensor.name == old_name:
                tensor.name = new_name
                break
    for annotation in graph.quantization_annotation:
        if annotation.tensor_name == old_name:
            annotation.tensor_name = new_name
            break
    for node in graph.node:
        if old_name in node.input:
            for i, name in enumerate(node.input):
                if name == old_name:
                    node.input[i] = new_name
        if old_name in node.output:
            for i, name in enumerate(node.output):
                if name == old_name:
                    node.output[i] = new_name


class _Renames:
    """`rename_tensor_everywhere` replayed on maps: each graph part (inputs, outputs,
    value_info, initializers, quantization annotations) renames its first entry of the old
    name, node inputs and outputs every occurrence; `write()` puts the names into the graph."""

    def __init__(self, model: ModelWrapper):
        graph = model.graph
        self.graph = graph
        self.parts = {"input": [t.name for t in graph.input],
                      "output": [t.name for t in graph.output],
                      "value_info": [t.name for t in graph.value_info],
                      "initializer": [t.name for t in graph.initializer],
                      "annotation": [a.tensor_name for a in graph.quantization_annotation]}
        self.positions = {}
        for part, names in self.parts.items():
            index: dict[str, list[int]] = {}
            for pos, name in enumerate(names):
                index.setdefault(name, []).append(pos)
            self.positions[part] = index
        self.node_in = [list(n.input) for n in graph.node]
        self.node_out = [list(n.output) for n in graph.node]
        self.slots: dict[str, set] = {}
        for k in range(len(self.node_in)):
            for kind, names in ((0, self.node_in[k]), (1, self.node_out[k])):
                for j, name in enumerate(names):
                    self.slots.setdefault(name, set()).add((k, kind, j))

    def is_initializer(self, name: str) -> bool:
        return name in self.positions["initializer"]

    def rename(self, old: str, new: str) -> None:
        import bisect

        if old == new:
            return
        for part, index in self.positions.items():
            where = index.get(old)
            if where:
                pos = where.pop(0)
                if not where:
                    del index[old]
                self.parts[part][pos] = new
                bisect.insort(index.setdefault(new, []), pos)
        moved = self.slots.pop(old, None)
        if moved:
            for k, kind, j in moved:
                (self.node_out if kind else self.node_in)[k][j] = new
            self.slots.setdefault(new, set()).update(moved)

    def write(self) -> None:
        graph = self.graph
        for part, protos in (("input", graph.input), ("output", graph.output),
                             ("value_info", graph.value_info),
                             ("initializer", graph.initializer)):
            for proto, name in zip(protos, self.parts[part]):
                if proto.name != name:
                    proto.name = name
        for proto, name in zip(graph.quantization_annotation, self.parts["annotation"]):
            if proto.tensor_name != name:
                proto.tensor_name = name
        for node, ins, outs in zip(graph.node, self.node_in, self.node_out):
            for j, name in enumerate(ins):
                if node.input[j] != name:
                    node.input[j] = name
            for j, name in enumerate(outs):
                if node.output[j] != name:
                    node.output[j] = name


def give_unique_tensor_names(self, model: ModelWrapper):
    """qonnx's `GiveUniqueTensorNames.apply`: value_info, input and output tensors, in that
    order, become tensor_0, tensor_1, ... (renamed on maps, written once)."""
    names = model.get_all_tensor_names()
    renames = _Renames(model)
    for i, name in enumerate(names):
        renames.rename(name, f"tensor_{i}")
    renames.write()
    return (model, False)


def give_readable_tensor_names(self, model: ModelWrapper):
    """qonnx's `GiveReadableTensorNames.apply`: node outputs <node>_out<k>, initializer inputs
    <node>_param<k>, graph inputs and outputs global_in / global_out (renamed on maps, in
    qonnx's order, written once)."""
    from qonnx.transformation.general import GiveUniqueTensorNames

    model = model.transform(GiveUniqueTensorNames())
    renames = _Renames(model)
    for k, node in enumerate(model.graph.node):
        assert node.name != "", "Found empty node name"
        for j in range(len(renames.node_out[k])):
            renames.rename(renames.node_out[k][j], "%s_out%d" % (node.name, j))
        init_in_num = 0
        for j in range(len(renames.node_in[k])):
            name = renames.node_in[k][j]
            if renames.is_initializer(name):
                renames.rename(name, "%s_param%d" % (node.name, init_in_num))
                init_in_num += 1
    for i in range(len(renames.parts["input"])):
        renames.rename(renames.parts["input"][i], "global_in" if i == 0 else "global_in_%d" % i)
    for i in range(len(renames.parts["output"])):
        renames.rename(renames.parts["output"][i],
                       "global_out" if i == 0 else "global_out_%d" % i)
    renames.write()
    return (model, False)


def get_by_name_scan(container, name: str, name_field: str = "name"):
    """qonnx's `get_by_name`: the item whose `name_field` is `name`, None if there is none; an
    Exception if there are several (the ONNX standard forbids it)."""
    found = None
    for item in container:
        if getattr(item, name_field) == name:
            if found is not None:
                raise Exception("Found multiple get_by_name matches, undefined behavior")
            found = item
    return found


def get_initializer_scan(self: ModelWrapper, tensor_name: str, return_dtype: bool = False):
    """`ModelWrapper.get_initializer`: the first initializer of that name as an array (and its
    TensorProto data type); None (or (None, None)) if there is none or it cannot be read."""
    from onnx import numpy_helper

    for init in self._model_proto.graph.initializer:
        if init.name == tensor_name:
            try:
                value = numpy_helper.to_array(init)
            except ValueError:  # qonnx's try block covers the conversion too
                break
            return (value, init.data_type) if return_dtype else value
    return (None, None) if return_dtype else None


def minimize_threshold_width(self, model: ModelWrapper, datatype_only: bool = False):
    """finn-plus's `Thresholding.minimize_weight_bit_width`, with the final check vectorized.

    The smallest integer datatype holding every threshold (signed when the input is; all-zero
    thresholds get INT2 / UINT1), only when input and thresholds are integer; thresholds
    written at run time, or trained by MLO, keep their type."""
    from finn.util.exception import FINNInternalError
    from qonnx.core.datatype import DataType

    if datatype_only:
        return DataType[self.get_nodeattr("weightDataType")]
    thresholds = model.get_initializer(self.onnx_node.input[1])
    if self.get_nodeattr("runtime_writeable_weights") or self.get_nodeattr("mlo_max_iter"):
        return DataType[self.get_nodeattr("weightDataType")]
    threshold_tensor = self.get_hw_compatible_threshold_tensor(thresholds)
    idt = self.get_input_datatype(0)
    if idt.is_integer() and self.get_input_datatype(1).is_integer():
        low, high = np.float64(thresholds.min()), np.float64(thresholds.max())
        if low == high == 0:
            tdt = DataType["INT2"] if idt.signed() else DataType["UINT1"]
        elif low < 0:
            tdt = DataType.get_smallest_possible(low if abs(low) > high else -high - 1)
        else:
            tdt = DataType.get_smallest_possible(-high - 1 if idt.signed() else high)
    else:
        tdt = self.get_input_datatype(1)  # float input: thresholds kept as they are
    if not np.all(tdt.allowed(threshold_tensor)):
        raise FINNInternalError(f"Thresholds can't be expressed with type {tdt!s}")
    self.set_nodeattr("weightDataType", tdt.name)
    model.set_tensor_datatype(self.onnx_node.input[1], tdt)
    return DataType[self.get_nodeattr("weightDataType")]


def sort_graph_linear(self, model: ModelWrapper):
    """`qonnx.transformation.general.SortGraph.apply` with predecessors looked up in a map.

    Like qonnx: a node's dependencies are the first producers (in node order) of its inputs; a
    node without any is kept only if one of its inputs is a graph input or initializer (nodes
    floating free are dropped); the order is toposort's."""
    from toposort import toposort_flatten

    graph = model.graph
    if len(graph.node) == 1:
        return (model, False)
    node_list = list(graph.node)
    producer: dict[str, int] = {}
    for idx, node in enumerate(node_list):
        for name in node.output:
            producer.setdefault(name, idx)
    sources = {t.name for t in graph.initializer} | {t.name for t in graph.input}
    dependencies: dict[int, set[int]] = {}
    for idx, node in enumerate(node_list):
        preds = {producer[name] for name in node.input if name in producer}
        if preds:
            dependencies[idx] = preds
        elif any(name in sources for name in node.input):
            dependencies[idx] = set()
    order = toposort_flatten(dependencies)
    del graph.node[:]
    graph.node.extend(node_list[idx] for idx in order)
    return (model, False)


def multithreshold_sorted(v, thresholds, out_scale=None, out_bias=None, channels_last=False):
    """qonnx's `multithreshold` (same arguments, same result), counting by binary search.

    The output is, per value, the number of its channel's thresholds it is greater than or
    equal to; with a channel's thresholds ascending, that is `searchsorted(..., side="right")`.
    Values and thresholds are compared in their common dtype, as numpy's `>=` does.
    """
    thresholds = np.asarray(thresholds)
    v = np.asarray(v)
    channel_axis = -1 if channels_last else 1
    if (thresholds.ndim != 2 or v.ndim < 2 or np.isnan(v).any() or np.isnan(thresholds).any()
            or (thresholds.shape[1] > 1 and not (np.diff(thresholds, axis=1) >= 0).all())
            or thresholds.shape[0] not in (1, v.shape[channel_axis])):
        return _ORIGINAL_MULTITHRESHOLD(v, thresholds, out_scale, out_bias, channels_last)
    common = np.result_type(v, thresholds)
    vm = v if channels_last else np.moveaxis(v, 1, -1)
    vm = vm.astype(common, copy=False)
    from hw.driver.package import threshold_counts  # the board driver's counting, shared

    ret = threshold_counts(thresholds.astype(common, copy=False), vm).astype(v.dtype)
    if not channels_last:
        ret = np.moveaxis(ret, -1, 1)
    if out_scale is None:
        out_scale = 1.0
    if out_bias is None:
        out_bias = 0.0
    return out_scale * ret + out_bias


_ORIGINAL_MINIMIZE_THRESHOLDS = None  # finn's, kept for the test that compares the two
_ORIGINAL_SORT_GRAPH = None  # qonnx's, likewise
_ORIGINAL_MULTITHRESHOLD = None  # qonnx's, likewise; the fallback of multithreshold_sorted
_ORIGINAL_GET_BY_NAME = None  # qonnx's, likewise
_ORIGINAL_GET_INITIALIZER = None  # qonnx's, likewise
# the modules that bound qonnx's get_by_name by name at import (others call util.get_by_name)
_GET_BY_NAME_USERS = ("qonnx.util.basic", "qonnx.custom_op.base")
_ORIGINAL_UNIQUE_NAMES = None  # qonnx's GiveUniqueTensorNames.apply, likewise
_ORIGINAL_READABLE_NAMES = None  # qonnx's GiveReadableTensorNames.apply, likewise
# the modules that bound qonnx's multithreshold by name at import
_MULTITHRESHOLD_USERS = ("qonnx.custom_op.general.multithreshold",
                         "finn.custom_op.fpgadataflow.thresholding",
                         "finn.custom_op.fpgadataflow.matrixvectoractivation",
                         "finn.custom_op.fpgadataflow.vectorvectoractivation")


def apply_qonnx_fixes() -> None:
    """Install the fixes (idempotent)."""
    global _ORIGINAL_MINIMIZE_THRESHOLDS, _ORIGINAL_SORT_GRAPH, _ORIGINAL_MULTITHRESHOLD
    global _ORIGINAL_UNIQUE_NAMES, _ORIGINAL_READABLE_NAMES, _ORIGINAL_GET_BY_NAME
    global _ORIGINAL_GET_INITIALIZER
    import importlib

    from finn.custom_op.fpgadataflow.thresholding import Thresholding
    from qonnx.transformation.general import (GiveReadableTensorNames, GiveUniqueTensorNames,
                                              SortGraph)

    _ORIGINAL_UNIQUE_NAMES = _install(GiveUniqueTensorNames, "apply", give_unique_tensor_names,
                                      _ORIGINAL_UNIQUE_NAMES)
    _ORIGINAL_READABLE_NAMES = _install(GiveReadableTensorNames, "apply",
                                        give_readable_tensor_names, _ORIGINAL_READABLE_NAMES)
    ModelWrapper.rename_tensor = rename_tensor_everywhere
    _ORIGINAL_GET_INITIALIZER = _install(ModelWrapper, "get_initializer", get_initializer_scan,
                                         _ORIGINAL_GET_INITIALIZER)
    for module_name in _GET_BY_NAME_USERS:
        _ORIGINAL_GET_BY_NAME = _install(importlib.import_module(module_name), "get_by_name",
                                         get_by_name_scan, _ORIGINAL_GET_BY_NAME)
    _ORIGINAL_SORT_GRAPH = _install(SortGraph, "apply", sort_graph_linear, _ORIGINAL_SORT_GRAPH)
    _ORIGINAL_MINIMIZE_THRESHOLDS = _install(Thresholding, "minimize_weight_bit_width",
                                             minimize_threshold_width,
                                             _ORIGINAL_MINIMIZE_THRESHOLDS)
    for module_name in _MULTITHRESHOLD_USERS:
        _ORIGINAL_MULTITHRESHOLD = _install(importlib.import_module(module_name), "multithreshold",
                                            multithreshold_sorted, _ORIGINAL_MULTITHRESHOLD)


def _install(owner, name: str, fixed, original):
    """Set `owner.name` to `fixed`; return the original it replaced, or `original` when that
    is already known (the fix installed before, or another module's binding replaced first)."""
    current = getattr(owner, name)
    if current is not fixed:
        setattr(owner, name, fixed)
        if original is None:
            return current
    return original
