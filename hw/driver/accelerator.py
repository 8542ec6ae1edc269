"""The accelerator as an object with public, timed stages.

    acc = Accelerator("deploy/", backend="emulate", batch_size=256)
    classes = acc.classify(frames)        # every stage below, in order
    acc.timings.seconds["run"]           # time spent in each stage so far

Stages: `quantize` (software part: layout change, input quantizer if it is in software),
`pack` (fold and pack into stream bytes), `copy_in` (to the device buffer), `run` (execute
and wait), `copy_out` (from the device buffer), `unpack` (bytes -> class indices).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from flows.errors import ToolchainError
from hw.driver.backends import make_backend
from hw.driver.package import DeployPackage
from hw.driver.packing import pack, unpack

__all__ = ["STAGES", "Accelerator", "StageTimes"]

STAGES = ("quantize", "pack", "copy_in", "run", "copy_out", "unpack")


@dataclass
class StageTimes:
    """Seconds spent per stage, and the batches and frames they covered."""

    seconds: dict = field(default_factory=lambda: {s: 0.0 for s in STAGES})
    batches: int = 0
    frames: int = 0

    def add(self, stage: str, dt: float) -> None:
        self.seconds[stage] += dt

    @property
    def total_s(self) -> float:
        return float(sum(self.seconds.values()))

    def to_dict(self) -> dict:
        per_frame = {f"{s}_us_per_frame": 1e6 * t / max(self.frames, 1)
                     for s, t in self.seconds.items()}
        accel = sum(self.seconds[s] for s in ("copy_in", "run", "copy_out"))
        return {
            "frames": self.frames, "batches": self.batches,
            "stage_seconds": dict(self.seconds),
            **per_frame,
            "throughput_fps": self.frames / self.total_s if self.total_s else 0.0,
            "accelerator_throughput_fps": self.frames / accel if accel else 0.0,
            "latency_us_per_frame": 1e6 * self.total_s / max(self.frames, 1),
            "latency_us_per_batch": 1e6 * self.total_s / max(self.batches, 1),
            "accelerator_latency_us_per_batch": 1e6 * accel / max(self.batches, 1),
        }


class Accelerator:
    """One deploy package on one backend, with batch-sized buffers."""

    def __init__(self, deploy_dir, backend: str = "emulate", batch_size: int = 256):
        if batch_size < 1:
            raise ToolchainError(f"--batch must be at least 1, got {batch_size}")
        self.package = DeployPackage(deploy_dir)
        self.batch_size = batch_size
        self.backend = make_backend(backend, self.package, batch_size)
        self.timings = StageTimes()

    def _timed(self, stage: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.timings.add(stage, time.perf_counter() - t0)
        return out

    # --- the stages ---------------------------------------------------------------------------

    def quantize(self, frames: np.ndarray) -> np.ndarray:
        return self._timed("quantize", self.package.quantize, frames)

    def pack(self, x: np.ndarray) -> np.ndarray:
        io = self.package.input

        def fold_and_pack(values):
            folded = values.reshape(io.batched(io.folded_shape, len(values)))
            return pack(folded, io.stream_type)

        return self._timed("pack", fold_and_pack, x)

    def copy_in(self, packed: np.ndarray) -> None:
        self._timed("copy_in", self.backend.copy_in, packed)

    def run(self, n: int) -> None:
        self._timed("run", self.backend.run, n)

    def copy_out(self, n: int) -> np.ndarray:
        return self._timed("copy_out", self.backend.copy_out, n)

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        io = self.package.output

        def unpack_and_unfold(data):
            folded = unpack(data, io.stream_type, io.folded_shape[-1])
            return folded.reshape(io.batched(io.normal_shape, len(data)))

        return self._timed("unpack", unpack_and_unfold, packed)

    # --- all of them ----------------------------------------------------------------------------

    def execute(self, frames: np.ndarray) -> np.ndarray:
        """The accelerator's raw output (N, *output.normal_shape[1:]) for frames (N, 2, L)."""
        outs = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start:start + self.batch_size]
            packed = self.pack(self.quantize(batch))
            self.copy_in(packed)
            self.run(len(batch))
            outs.append(self.unpack(self.copy_out(len(batch))))
            self.timings.batches += 1
            self.timings.frames += len(batch)
        return np.concatenate(outs) if outs else np.empty((0, *self.package.output.normal_shape[1:]))

    def classify(self, frames: np.ndarray) -> np.ndarray:
        """Top-1 class index per frame (N,)."""
        out = self.execute(frames)
        if self.package.output_kind != "class_index":
            raise ToolchainError("this accelerator does not end in a class selection "
                                 f"(output {self.package.output.tensor}); classify needs one")
        return out.reshape(len(out), -1)[:, 0].astype(np.int64)
