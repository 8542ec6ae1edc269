"""`HostPartition`: a part of the network that runs on the host processor, kept in the graph as
one node so the FINN stages pass it by and every stage still executes the whole network.

A model can compute part of its answer in software by design (imperial's statistics branch:
moments, atan2, sqrt of the raw frame, and the classifier that combines them with the conv
features). `hw.transforms.SplitOffHostBranch` moves such a part into one `HostPartition` node;
this module is its qonnx custom op (domain `hw.host_ops`, found by qonnx's registry by importing
this module). The node holds the part as a plain-ONNX graph (attribute `body`, standard ops
only) and executes it in a single onnxruntime session: qonnx's node-by-node execution of the
~450 nodes of imperial's statistics costs ~4 s per frame, one session ~1 ms.

The node's inputs and outputs map by position onto the body's, as for qonnx's GenericPartition.
"""

from __future__ import annotations

import hashlib

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.custom_op.base import CustomOp

__all__ = ["DOMAIN", "HostPartition", "host_model_proto"]

DOMAIN = "hw.host_ops"

_SESSIONS: dict[bytes, object] = {}  # body digest -> onnxruntime session


def host_model_proto(node):
    """The body of a HostPartition node as an ONNX ModelProto (for onnxruntime or saving)."""
    attrs = {a.name: a for a in node.attribute}
    body = attrs["body"].g
    opset = attrs["opset"].i
    return helper.make_model(body, opset_imports=[helper.make_opsetid("", opset)],
                             producer_name="hw.host_ops")


class HostPartition(CustomOp):
    """Nodes that run on the host, as one plain-ONNX graph (`body`) run by onnxruntime."""

    def get_nodeattr_types(self):
        return {
            "body": ("g", True, None),  # the host part: standard ONNX ops only
            "opset": ("i", True, 0),  # default-domain opset of the body
            # the model's nodes moved here (names in the QONNX export), for reports
            "node_names": ("strings", False, []),
        }

    def _body_output(self, index: int):
        return self.get_nodeattr("body").output[index]

    def make_shape_compatible_op(self, model):
        if len(self.onnx_node.output) != 1:
            raise ValueError(f"{self.onnx_node.name}: a HostPartition has one output")
        dims = self._body_output(0).type.tensor_type.shape.dim
        return self.make_const_shape_op([d.dim_value for d in dims])

    def infer_node_datatype(self, model):
        for name in self.onnx_node.output:
            model.set_tensor_datatype(name, DataType["FLOAT32"])

    def execute_node(self, context, graph):
        import onnxruntime as ort

        model = host_model_proto(self.onnx_node)
        data = model.SerializeToString()
        key = hashlib.sha1(data).digest()
        session = _SESSIONS.get(key)
        if session is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
            _SESSIONS[key] = session
        body = model.graph
        feed = {inner.name: np.asarray(context[outer], dtype=np.float32)
                for inner, outer in zip(body.input, self.onnx_node.input)}
        results = session.run([o.name for o in body.output], feed)
        for outer, value in zip(self.onnx_node.output, results):
            context[outer] = value

    def verify_node(self):
        count = len(self.get_nodeattr("body").node)
        return [f"{self.onnx_node.name}: HostPartition with {count} host nodes"]
