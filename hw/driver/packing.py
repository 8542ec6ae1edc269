"""FINN's stream packing, in numpy alone (runs on the board's numpy 1.x, without qonnx/finn).

A FINN accelerator takes and returns tensors in their *folded* shape, (..., fold, elements per
stream word), and the DMA moves them as bytes. FINN's own driver packs with
`finnpy_to_packed_bytearray(folded, dtype, reverse_inner=True, reverse_endian=True)`; with both
flags that layout is simply little-endian: element i of a stream word occupies bits
[i * bits, (i + 1) * bits) of the word, the word is padded with zeros at the top to a whole
number of bytes, and its bytes go least significant first. `pack` and `unpack` produce and read
exactly that (tests compare them with finn's functions for every datatype the zoo uses).

Datatypes are named as FINN names them: INT<n>, UINT<n> (n = 1..64), BIPOLAR ({-1, +1} stored as
{0, 1}), BINARY, TERNARY ({-1, 0, 1} as INT2), FLOAT32.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from flows.errors import ToolchainError

__all__ = ["StreamType", "packed_bytes", "pack", "unpack"]


@dataclass(frozen=True)
class StreamType:
    """What a FINN datatype name means for packing."""

    name: str
    bits: int
    signed: bool
    kind: str  # "int", "bipolar" or "float"

    @classmethod
    def parse(cls, name: str) -> "StreamType":
        name = str(name).upper()
        if name == "FLOAT32":
            return cls(name, 32, True, "float")
        if name == "BIPOLAR":
            return cls(name, 1, False, "bipolar")
        if name == "BINARY":
            return cls(name, 1, False, "int")
        if name == "TERNARY":
            return cls(name, 2, True, "int")
        match = re.fullmatch(r"(U?)INT(\d+)", name)
        if match and 1 <= int(match.group(2)) <= 64:
            return cls(name, int(match.group(2)), match.group(1) == "", "int")
        raise ToolchainError(f"datatype {name!r} is not supported by the driver's packing "
                             "(supported: INT<n>, UINT<n>, BIPOLAR, BINARY, TERNARY, FLOAT32)")

    @property
    def min(self) -> int:
        if self.kind == "bipolar" or self.name == "TERNARY":
            return -1
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        if self.kind == "bipolar" or self.name == "TERNARY":
            return 1
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


def packed_bytes(elements: int, dtype: str | StreamType) -> int:
    """Bytes of one packed stream word of `elements` values."""
    t = dtype if isinstance(dtype, StreamType) else StreamType.parse(dtype)
    return (elements * t.bits + 7) // 8


def _check_values(values: np.ndarray, t: StreamType) -> None:
    if values.size == 0:
        return
    if t.kind == "bipolar":
        ok = np.all((values == 1) | (values == -1))
    else:
        ok = (np.all(values == np.round(values)) and values.min() >= t.min
              and values.max() <= t.max)
    if not ok:
        raise ToolchainError(f"values outside datatype {t.name} cannot be packed "
                             f"(range {values.min()}..{values.max()})")


def pack(folded, dtype: str | StreamType, *, check: bool = True) -> np.ndarray:
    """Pack the innermost axis of `folded` (values of `dtype`) into uint8 stream words: shape
    (..., packed_bytes(folded.shape[-1]))."""
    t = dtype if isinstance(dtype, StreamType) else StreamType.parse(dtype)
    folded = np.asarray(folded)
    lead, n = folded.shape[:-1], folded.shape[-1]
    if t.kind == "float":
        return np.ascontiguousarray(folded, dtype="<f4").view(np.uint8).reshape(*lead, 4 * n)
    if check:
        _check_values(folded, t)
    if t.kind == "bipolar":
        folded = (folded + 1) // 2
    if t.bits in (8, 16, 32, 64):  # whole bytes: the little-endian container is the packing
        container = f"<{'i' if t.signed else 'u'}{t.bits // 8}"
        return np.ascontiguousarray(folded.astype(np.int64).astype(container)).view(
            np.uint8).reshape(*lead, n * t.bits // 8)
    ints = folded.astype(np.int64).astype(np.uint64) & np.uint64((1 << t.bits) - 1)
    shifts = np.arange(t.bits, dtype=np.uint64)
    bits = ((ints[..., None] >> shifts) & np.uint64(1)).astype(np.uint8)  # LSB first
    bits = bits.reshape(*lead, n * t.bits)
    pad = (-bits.shape[-1]) % 8
    if pad:
        bits = np.concatenate([bits, np.zeros((*lead, pad), np.uint8)], axis=-1)
    return np.packbits(bits, axis=-1, bitorder="little")


def unpack(packed, dtype: str | StreamType, elements: int) -> np.ndarray:
    """Inverse of `pack`: uint8 stream words (..., bytes) -> float32 values (..., elements)."""
    t = dtype if isinstance(dtype, StreamType) else StreamType.parse(dtype)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8:
        raise ToolchainError(f"packed data must be uint8 bytes, got {packed.dtype}")
    lead = packed.shape[:-1]
    need = packed_bytes(elements, t)
    if packed.shape[-1] != need:
        raise ToolchainError(f"{elements} values of {t.name} take {need} bytes per stream word, "
                             f"got {packed.shape[-1]}")
    packed = np.ascontiguousarray(packed)
    if t.kind == "float":
        return packed.view("<f4").reshape(*lead, elements).astype(np.float32)
    if t.bits in (8, 16, 32, 64):
        container = f"<{'i' if t.signed else 'u'}{t.bits // 8}"
        ints = packed.view(container).reshape(*lead, elements).astype(np.int64)
    else:
        bits = np.unpackbits(packed, axis=-1, bitorder="little")[..., :elements * t.bits]
        bits = bits.reshape(*lead, elements, t.bits).astype(np.int64)
        ints = (bits << np.arange(t.bits, dtype=np.int64)).sum(axis=-1)
        if t.signed:
            ints = np.where(ints >= (1 << (t.bits - 1)), ints - (1 << t.bits), ints)
    if t.kind == "bipolar":
        ints = 2 * ints - 1
    return ints.astype(np.float32)
