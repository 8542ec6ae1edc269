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
