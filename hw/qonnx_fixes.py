"""Fixes to qonnx 1.0.0 itself that the project's graphs need, applied once on import of
`hw.finn_flow`; each is written so it could be proposed upstream as it stands.

- `ModelWrapper.rename_tensor` renames only the first occurrence of a tensor among a node's
  inputs. A node that reads one tensor twice (`Mul(d, d)`: what the TorchScript exporter writes
  for `d ** 2`) keeps the old name on its second input after `GiveReadableTensorNames`, and the
  graph can no longer be executed ("Found unspecified tensor shapes"). The imperial model's
  statistics branch has such nodes. The fix renames every occurrence.
"""

from __future__ import annotations

from qonnx.core.modelwrapper import ModelWrapper

__all__ = ["apply_qonnx_fixes", "rename_tensor_everywhere"]

_ORIGINAL_RENAME = ModelWrapper.rename_tensor


def rename_tensor_everywhere(self: ModelWrapper, old_name: str, new_name: str) -> None:
    """`ModelWrapper.rename_tensor`, renaming every occurrence in node inputs and outputs."""
    _ORIGINAL_RENAME(self, old_name, new_name)  # graph I/O, value_info, initializers, annotations
    for node in self.graph.node:
        for i, name in enumerate(node.input):
            if name == old_name:
                node.input[i] = new_name
        for i, name in enumerate(node.output):
            if name == old_name:
                node.output[i] = new_name


def apply_qonnx_fixes() -> None:
    """Install the fixes (idempotent)."""
    ModelWrapper.rename_tensor = rename_tensor_everywhere
