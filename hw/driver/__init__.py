"""The board driver: runs on the board's own Python (numpy 1.x; no finn, qonnx or torch).

`Accelerator` (timed stages quantize, pack, copy_in, run, copy_out, unpack) over a deploy
package (`DeployPackage`, io.json) on a backend: `pynq` (Zynq), `xrt` (Alveo) or `emulate`
(the exact dataflow graph on the host). `python -m hw.driver --help` runs a test split.
"""

from hw.driver.accelerator import STAGES, Accelerator
from hw.driver.package import DeployPackage
from hw.driver.packing import pack, unpack

__all__ = ["STAGES", "Accelerator", "DeployPackage", "pack", "unpack"]
