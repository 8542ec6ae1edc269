"""The deploy package as the driver sees it: `io.json` and the files it names, checked.

`io.json` (written on the host by `hw.deploy`) describes the accelerator's interface, read from
the final dataflow graph: input and output tensors with their datatypes and normal, folded and
packed shapes, the software part in front of the accelerator (layout change, and the input
quantizer when it is not in hardware), the input quantizer's scale, zero point and range, the
classes, and a SHA-256 of every file so that a package mixing two builds is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flows.errors import InputFileError, ToolchainError
from hw.driver.packing import StreamType, packed_bytes

__all__ = ["IO_JSON", "FORMAT_VERSION", "DeployPackage", "StreamSpec", "sha256"]

IO_JSON = "io.json"
FORMAT_VERSION = 1
_FIX = "Copy the whole deploy/ directory of one build (python build.py ... writes it)"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class StreamSpec:
    """One accelerator input or output stream."""

    tensor: str
    datatype: str
    normal_shape: tuple[int, ...]  # one frame, batch axis first (1, ...)
    folded_shape: tuple[int, ...]  # (1, ..., fold, elements per stream word)
    packed_shape: tuple[int, ...]  # folded_shape with the last axis in bytes

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "StreamSpec":
        try:
            spec = cls(str(d["tensor"]), str(d["datatype"]), tuple(d["normal_shape"]),
                       tuple(d["folded_shape"]), tuple(d["packed_shape"]))
        except (KeyError, TypeError) as exc:
            raise ToolchainError(f"{where}: incomplete stream description ({exc})") from None
        stype = StreamType.parse(spec.datatype)
        if (int(np.prod(spec.normal_shape)) != int(np.prod(spec.folded_shape))
                or spec.packed_shape[:-1] != spec.folded_shape[:-1]
                or spec.packed_shape[-1] != packed_bytes(spec.folded_shape[-1], stype)):
            raise ToolchainError(f"{where}: normal {spec.normal_shape}, folded "
                                 f"{spec.folded_shape} and packed {spec.packed_shape} shapes of "
                                 f"{spec.tensor} ({spec.datatype}) do not fit together")
        return spec

    @property
    def stream_type(self) -> StreamType:
        return StreamType.parse(self.datatype)

    def batched(self, shape: tuple[int, ...], n: int) -> tuple[int, ...]:
        return (n, *shape[1:])


class DeployPackage:
    """A deploy directory: io.json validated, every file present and of the recorded build."""

    def __init__(self, directory, *, check_hashes: bool = True):
        self.dir = Path(directory)
        path = self.dir / IO_JSON
        if not self.dir.is_dir():
            raise InputFileError(self.dir, "is not a directory", "a deploy package directory "
                                 f"with {IO_JSON}", _FIX)
        if not path.exists():
            raise InputFileError(path, "does not exist", "the I/O description of a deploy "
                                 "package", _FIX)
        try:
            self.io = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputFileError(path, f"is not readable JSON ({exc})", None, _FIX) from None
        if not isinstance(self.io, dict) or self.io.get("format") != FORMAT_VERSION:
            raise InputFileError(path, f"has format {self.io.get('format') if isinstance(self.io, dict) else None!r}",
                                 f"format {FORMAT_VERSION}", "Rebuild the package with this "
                                 "version of the toolchain (python build.py ... --from deploy)")
        try:
            self.input = StreamSpec.from_dict(self.io["input"], f"{path} input")
            self.output = StreamSpec.from_dict(self.io["output"], f"{path} output")
            self.class_names = list(self.io["class_names"])
            self.frame_shape = tuple(self.io["frame_shape"])  # (channels, samples)
            self.model_input_shape = tuple(self.io["model_input_shape"])
            # the graph's declared input (batch 1); packages before it had the model's
            graph_input = self.io.get("graph_input_shape") or [1, *self.model_input_shape]
            self.graph_input_shape = tuple(int(v) for v in graph_input)
            self.software = list(self.io["software"])
            self.files = dict(self.io["files"])
            self.hashes = dict(self.io["sha256"])
        except KeyError as exc:
            raise InputFileError(path, f"lacks the entry {exc}", None, _FIX) from None
        if check_hashes:
            for role, name in self.files.items():
                if name is None:
                    continue
                self.check_file(role)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def output_kind(self) -> str:
        return self.io["output"].get("kind", "class_index")

    def file(self, role: str) -> Path | None:
        name = self.files.get(role)
        return None if name is None else self.dir / name

    def check_file(self, role: str) -> Path:
        """The path of file `role`, which must exist and match io.json's SHA-256."""
        name = self.files.get(role)
        if name is None:
            raise ToolchainError(f"{self.dir}: the package has no {role} file")
        path = self.dir / name
        if not path.exists():
            raise InputFileError(path, "is missing from the deploy package", None, _FIX)
        expected = self.hashes.get(name)
        if expected is not None and sha256(path) != expected:
            raise InputFileError(path, f"does not match {IO_JSON} (SHA-256 differs): the "
                                 "package mixes files of different builds", None, _FIX)
        return path

    # --- the software part in front of the accelerator ------------------------------------

    def quantize(self, frames: np.ndarray) -> np.ndarray:
        """Channels-first frames (N, channels, samples) -> the accelerator's input tensor
        (N, *input.normal_shape[1:]): reshaped to the graph's declared input shape, then
        computed as the graph's software part computes it."""
        frames = np.asarray(frames)
        if frames.ndim != 3 or tuple(frames.shape[1:]) != self.frame_shape:
            raise ToolchainError(f"frames must have shape (N, {self.frame_shape[0]}, "
                                 f"{self.frame_shape[1]}) for this accelerator, got "
                                 f"{tuple(frames.shape)}")
        shape = self.graph_input_shape[1:]
        if int(np.prod(shape)) != int(np.prod(self.frame_shape)):
            raise ToolchainError(f"{self.dir / IO_JSON}: the graph's input {shape} does not "
                                 f"hold a frame {self.frame_shape}")
        # the graph's declared input shape (a 1D model lifted to (1, k) convolutions takes
        # (N, channels, 1, samples)); the software part starts from it
        x = frames.astype(np.float32, copy=False).reshape(len(frames), *shape)
        for op in self.software:
            kind = op["op"]
            if kind == "Transpose":
                x = x.transpose(op["perm"])
            elif kind == "Reshape":
                x = x.reshape(len(x), *op["shape"][1:])
            elif kind == "MultiThreshold":  # the input quantizer, when it runs in software
                x = _multithreshold(x, op)
            else:
                raise ToolchainError(f"{self.dir / IO_JSON}: software op {kind} is not "
                                     "supported by the driver")
        expected = self.input.normal_shape[1:]
        if tuple(x.shape[1:]) != tuple(expected):
            raise ToolchainError(f"the software part gives {tuple(x.shape[1:])}, the "
                                 f"accelerator takes {tuple(expected)}")
        return np.ascontiguousarray(x, dtype=np.float32)


def threshold_counts(thresholds: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per value of `x` (channels last), how many of its channel's thresholds it is greater
    than or equal to; `thresholds` (channels or 1, steps) ascending along the steps."""
    if thresholds.shape[0] == 1:
        return np.searchsorted(thresholds[0], x, side="right")
    counts = np.empty(x.shape, dtype=np.int64)
    for channel in range(thresholds.shape[0]):
        counts[..., channel] = np.searchsorted(thresholds[channel], x[..., channel], side="right")
    return counts


def _multithreshold(x: np.ndarray, op: dict) -> np.ndarray:
    """qonnx MultiThreshold: count of thresholds <= x per channel, times out_scale plus
    out_bias (channels on axis 1 for NCHW, last for NHWC)."""
    thresholds = np.sort(np.asarray(op["thresholds"], dtype=np.float32), axis=1)
    axis = -1 if op.get("data_layout", "NCHW") == "NHWC" else 1
    counts = threshold_counts(thresholds, np.moveaxis(x, axis, -1))
    y = counts * float(op.get("out_scale", 1.0)) + float(op.get("out_bias", 0.0))
    return np.moveaxis(y.astype(np.float32), -1, axis)
