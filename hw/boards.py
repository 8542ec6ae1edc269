"""Board records: FPGA part, default clock, device resources and the shell flow that builds it.

`build.py --board NAME` takes its choices from `BOARDS`. Resources are the device totals from
the vendor data sheets (BRAM counted in 18 Kb halves, as FINN's estimates are); FINN's own
platform models reserve part of them for the shell, so utilisation near 100 % is already
optimistic. Default clocks are the frequencies a FINN dataflow design of small AMC models
usually closes timing at on that speed grade; override with --clock-mhz.
"""

from __future__ import annotations

from dataclasses import dataclass

from flows.errors import ToolchainError


@dataclass(frozen=True)
class Resources:
    """FPGA resources, in FINN's units."""

    lut: int
    ff: int
    bram18: int  # 18 Kb block RAM halves (one BRAM36 = 2)
    uram: int
    dsp: int


@dataclass(frozen=True)
class Board:
    """One board the toolchain can build for."""

    name: str  # what the user types after --board
    kind: str  # "zynq" (PYNQ image, bitfile + hwh) or "alveo" (XRT, xclbin)
    fpga_part: str  # Vivado part name
    finn_board: str  # the name FINN's utilities use for this board
    clock_mhz: float  # default fabric clock for the accelerator
    resources: Resources
    shell_flow: str  # "vivado_zynq" (Vivado block design) or "vitis_alveo" (v++ link)
    vitis_platform: str | None = None  # Alveo only: the XRT platform to link against
    description: str = ""

    @property
    def clock_period_ns(self) -> float:
        return 1000.0 / self.clock_mhz


_BOARD_LIST = (
    Board("pynq-z2", "zynq", "xc7z020clg400-1", "Pynq-Z2", 100.0,
          Resources(lut=53_200, ff=106_400, bram18=280, uram=0, dsp=220), "vivado_zynq",
          description="TUL PYNQ-Z2, Zynq-7020"),
    Board("ultra96-v2", "zynq", "xczu3eg-sbva484-1-i", "Ultra96-V2", 150.0,
          Resources(lut=70_560, ff=141_120, bram18=432, uram=0, dsp=360), "vivado_zynq",
          description="Avnet Ultra96-V2, Zynq UltraScale+ ZU3EG"),
    Board("kv260", "zynq", "xck26-sfvc784-2LV-c", "KV260_SOM", 200.0,
          Resources(lut=117_120, ff=234_240, bram18=288, uram=64, dsp=1_248), "vivado_zynq",
          description="AMD Kria KV260, K26 SOM"),
    Board("zcu104", "zynq", "xczu7ev-ffvc1156-2-e", "ZCU104", 200.0,
          Resources(lut=230_400, ff=460_800, bram18=624, uram=96, dsp=1_728), "vivado_zynq",
          description="AMD ZCU104, Zynq UltraScale+ ZU7EV"),
    Board("u250", "alveo", "xcu250-figd2104-2L-e", "U250", 250.0,
          Resources(lut=1_728_000, ff=3_456_000, bram18=5_376, uram=1_280, dsp=12_288),
          "vitis_alveo", "xilinx_u250_gen3x16_xdma_4_1_202210_1", "AMD Alveo U250"),
    Board("u280", "alveo", "xcu280-fsvh2892-2L-e", "U280", 250.0,
          Resources(lut=1_304_000, ff=2_607_000, bram18=4_032, uram=960, dsp=9_024),
          "vitis_alveo", "xilinx_u280_gen3x16_xdma_1_202211_1", "AMD Alveo U280"),
    Board("u55c", "alveo", "xcu55c-fsvh2892-2L-e", "U55C", 250.0,
          Resources(lut=1_304_000, ff=2_607_000, bram18=4_032, uram=960, dsp=9_024),
          "vitis_alveo", "xilinx_u55c_gen3x16_xdma_3_202210_1", "AMD Alveo U55C"),
)

BOARDS: dict[str, Board] = {b.name: b for b in _BOARD_LIST}


def get_board(name: str) -> Board:
    if name not in BOARDS:
        raise ToolchainError(
            f"unknown board {name!r}; expected one of: {', '.join(BOARDS)}. "
            "Pass --board with one of these names.")
    return BOARDS[name]
