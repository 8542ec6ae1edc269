"""Named flows: ordered tuples of step names, each preset building on the one before."""

from __future__ import annotations

import flows.deploy_steps  # noqa: F401  (registers the deploy step)
import flows.hw_steps  # noqa: F401  (registers the FINN steps)
import flows.steps  # noqa: F401  (registers the data and model steps)
from flows.vendor_steps import VENDOR_STEPS  # registers the vendor-tool steps

GOLDEN = ("prepare_data", "build_model")
EXPORT = GOLDEN + ("export_qonnx", "cost")
ESTIMATE = EXPORT + ("to_finn", "streamline", "label_select", "convert_to_hw", "partition",
                     "specialize", "fold", "estimate")
CODEGEN = ESTIMATE + ("codegen",)
DEPLOY = CODEGEN + ("deploy",)  # the package for the board; its bitfile comes with the vendor steps
FULL = DEPLOY + VENDOR_STEPS  # needs Vivado/Vitis; without them the build stops at deploy

DEFAULT_FLOW = FULL

# `--onnx FILE`: the user's QONNX graph replaces the Brevitas model and its export, and is
# itself the golden model; every step from the cost report on is the zoo flow's.
ONNX_GOLDEN = ("prepare_data", "import_onnx")
ONNX_FLOW = ONNX_GOLDEN + DEFAULT_FLOW[DEFAULT_FLOW.index("export_qonnx") + 1:]

# every step name a build can run, in flow order (for --from / --until)
ALL_STEPS = tuple(dict.fromkeys(GOLDEN + ONNX_GOLDEN[1:] + DEFAULT_FLOW[len(GOLDEN):]))


def flow_for(cfg) -> tuple[str, ...]:
    """The flow a build configuration runs: the zoo flow, or the `--onnx` one."""
    return ONNX_FLOW if cfg.onnx is not None else DEFAULT_FLOW
