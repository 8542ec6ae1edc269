"""Where packed bytes go: a PYNQ board (Zynq), an Alveo card (XRT), or the host (emulate).

Every backend owns one input and one output buffer of packed bytes sized for a batch, and
offers `copy_in(packed)`, `run(n)` and `copy_out(n)`. The board backends follow FINN's own
driver (`driver_base.py`): IODMAs `idma0` / `odma0`, on Zynq started through their registers
(0x10 buffer address, 0x1C frames, 0x00 start; done when bit 1 of 0x00 is set), on Alveo
through `start(buffer, frames)` and `wait()`. pynq is imported only by these two.

`emulate` gives the same packed bytes to the exact integer dataflow graph on the host: it
unpacks them with the driver's own `unpack`, folds them back to the graph's input shape,
executes `hw.emulate.DataflowEmulator` on the package's `dataflow.onnx`, and packs the result
as the accelerator's output stream would carry it. Only the DMA transfer is left untested.
"""

from __future__ import annotations

import numpy as np

from flows.errors import ToolchainError
from hw.driver.package import DeployPackage
from hw.driver.packing import pack, unpack

__all__ = ["BACKENDS", "make_backend"]


class _Backend:
    name = ""

    def __init__(self, package: DeployPackage, batch_size: int):
        self.package = package
        self.batch_size = batch_size

    def _check_batch(self, n: int) -> None:
        if not 1 <= n <= self.batch_size:
            raise ToolchainError(f"batch of {n} frames; the buffers hold 1..{self.batch_size}")


class EmulateBackend(_Backend):
    """The exact integer arithmetic of the accelerator, executed on the host."""

    name = "emulate"

    def __init__(self, package: DeployPackage, batch_size: int, threads: int = 2):
        super().__init__(package, batch_size)
        from hw.emulate import DataflowEmulator

        self.emulator = DataflowEmulator.from_file(package.check_file("dataflow_graph"))
        self.threads = threads
        io_in, io_out = package.input, package.output
        if (self.emulator.input_shape != io_in.normal_shape
                or self.emulator.output_shape != io_out.normal_shape):
            raise ToolchainError(
                f"{package.file('dataflow_graph')}: graph input {self.emulator.input_shape} / "
                f"output {self.emulator.output_shape} differ from io.json's "
                f"{io_in.normal_shape} / {io_out.normal_shape}: the package mixes two builds")
        self.ibuf = np.zeros(io_in.batched(io_in.packed_shape, batch_size), dtype=np.uint8)
        self.obuf = np.zeros(io_out.batched(io_out.packed_shape, batch_size), dtype=np.uint8)
        # warm-up (library initialisation), as loading a bitfile precedes timing on a board
        self.emulator.run(np.zeros(io_in.batched(io_in.normal_shape, 1), np.float32), threads=1)

    def copy_in(self, packed: np.ndarray) -> None:
        n = len(packed)
        self._check_batch(n)
        np.copyto(self.ibuf[:n], packed)

    def run(self, n: int) -> None:
        self._check_batch(n)
        io_in, io_out = self.package.input, self.package.output
        folded = unpack(self.ibuf[:n], io_in.stream_type, io_in.folded_shape[-1])
        x = folded.reshape(io_in.batched(io_in.normal_shape, n))
        y = self.emulator.run(x, threads=self.threads)
        y_folded = y.reshape(io_out.batched(io_out.folded_shape, n))
        self.obuf[:n] = pack(y_folded, io_out.stream_type)

    def copy_out(self, n: int) -> np.ndarray:
        self._check_batch(n)
        return self.obuf[:n].copy()


def _no_board(backend: str, exc: BaseException | None) -> ToolchainError:
    why = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    where = "a PYNQ board image" if backend == "pynq" else "a host with an Alveo card and XRT"
    return ToolchainError(
        f"no board: the {backend} backend could not reach an accelerator{why}. Run it on "
        f"{where}, or use --backend emulate to run the same packed data through the exact "
        "dataflow graph on this machine.")


class _PynqBackend(_Backend):
    bitfile_role = ""
    platform = ""

    def __init__(self, package: DeployPackage, batch_size: int):
        super().__init__(package, batch_size)
        if package.file(self.bitfile_role) is None:
            raise ToolchainError(
                f"{package.dir}: the package has no {self.bitfile_role} (the build stopped "
                "before the vendor-tool steps); finish the build where Vivado/Vitis exist "
                "(python build.py ... --from ipgen), or use --backend emulate")
        bitfile = package.check_file(self.bitfile_role)
        try:
            import pynq
        except ImportError as exc:
            raise _no_board(self.name, exc) from None
        try:
            self.overlay = pynq.Overlay(str(bitfile))
        except Exception as exc:  # noqa: BLE001  (pynq raises RuntimeError, OSError, ...)
            raise _no_board(self.name, exc) from None
        self.idma = getattr(self.overlay, "idma0", None)
        self.odma = getattr(self.overlay, "odma0", None)
        if self.idma is None or self.odma is None:
            raise ToolchainError(f"{bitfile}: the overlay has no idma0/odma0: not a FINN "
                                 "accelerator with DMAs")
        io_in, io_out = package.input, package.output
        self.ibuf = pynq.allocate(shape=io_in.batched(io_in.packed_shape, batch_size),
                                  dtype=np.uint8)
        self.obuf = pynq.allocate(shape=io_out.batched(io_out.packed_shape, batch_size),
                                  dtype=np.uint8)

    def copy_in(self, packed: np.ndarray) -> None:
        n = len(packed)
        self._check_batch(n)
        np.copyto(self.ibuf[:n], packed)
        self.ibuf.flush()

    def copy_out(self, n: int) -> np.ndarray:
        self._check_batch(n)
        self.obuf.invalidate()
        return np.array(self.obuf[:n])


class PynqBackend(_PynqBackend):
    """Zynq (PYNQ-Z2, Ultra96, KV260, ZCU104): bitfile + hwh, IODMAs driven by register."""

    name = "pynq"
    bitfile_role = "bitfile"

    def __init__(self, package: DeployPackage, batch_size: int):
        super().__init__(package, batch_size)
        clock = package.io.get("clock_mhz")
        if clock:
            try:
                from pynq.ps import Clocks

                Clocks.fclk0_mhz = float(clock)
            except Exception:  # noqa: BLE001  (boards without a settable PL clock)
                pass

    def run(self, n: int) -> None:
        self._check_batch(n)
        if self.odma.read(0x00) & 0x4 == 0:
            raise ToolchainError("the output DMA is not idle: reload the bitfile")
        self.odma.write(0x10, self.obuf.device_address)
        self.odma.write(0x1C, n)
        self.odma.write(0x00, 1)
        self.idma.write(0x10, self.ibuf.device_address)
        self.idma.write(0x1C, n)
        self.idma.write(0x00, 1)
        while self.odma.read(0x00) & 0x2 == 0:
            pass


class XrtBackend(_PynqBackend):
    """Alveo: xclbin through pynq's XRT support, IODMA kernels started with (buffer, frames)."""

    name = "xrt"
    bitfile_role = "xclbin"

    def run(self, n: int) -> None:
        self._check_batch(n)
        handle = self.odma.start(self.obuf, n)
        self.idma.start(self.ibuf, n)
        handle.wait()


BACKENDS = {"emulate": EmulateBackend, "pynq": PynqBackend, "xrt": XrtBackend}


def make_backend(name: str, package: DeployPackage, batch_size: int):
    if name not in BACKENDS:
        raise ToolchainError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return BACKENDS[name](package, batch_size)
