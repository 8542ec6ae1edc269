"""Shared fixtures: small files in the exact RadioML layouts, written directly (h5py, pickle),
and one BacalhauNet build that the FINN, deploy, driver and emulator tests read.

Frames carry their row number so tests can check order and orientation: in the stored I/Q-last
layout, I[t] = row and Q[t] = t (t = 0..L-1), so a channels-first read gives x[0] == row and
x[1] == arange(L).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
import pytest

from flows.rml_formats import (
    RML2016_CLASSES,
    RML2016_FRAME_LEN,
    RML2016_SNRS_DB,
    RML2018_CLASSES,
    RML2018_FRAME_LEN,
    RML2018_SNRS_DB,
)


def write_rml2018(path: Path, cells: Sequence[tuple[int, int]] | None = None,
                  frames_per_cell: int = 2) -> Path:
    """An HDF5 file in the real 2018.01A layout: X (N, 1024, 2) float32, Y (N, 24) int64
    one-hot, Z (N, 1) int64, rows cell by cell in the order of `cells` (class index, SNR
    index); all 24 x 26 cells class-then-SNR if None."""
    if cells is None:
        cells = [(c, s) for c in range(len(RML2018_CLASSES)) for s in range(len(RML2018_SNRS_DB))]
    n = len(cells) * frames_per_cell
    rows = np.arange(n, dtype=np.float32)
    x = np.empty((n, RML2018_FRAME_LEN, 2), dtype=np.float32)
    x[:, :, 0] = rows[:, None]
    x[:, :, 1] = np.arange(RML2018_FRAME_LEN, dtype=np.float32)[None, :]
    y = np.zeros((n, len(RML2018_CLASSES)), dtype=np.int64)
    z = np.empty((n, 1), dtype=np.int64)
    for i, (c, s) in enumerate(cells):
        sl = slice(i * frames_per_cell, (i + 1) * frames_per_cell)
        y[sl, c] = 1
        z[sl, 0] = RML2018_SNRS_DB[s]
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=x)
        f.create_dataset("Y", data=y)
        f.create_dataset("Z", data=z)
    return path


def write_rml2016(path: Path, mods: Sequence[str] = RML2016_CLASSES,
                  snrs: Sequence[int] = RML2016_SNRS_DB, frames_per_cell: int = 3,
                  protocol: int = 2) -> Path:
    """A pickle in the 2016.10a layout: dict (mod, snr) -> (n, 2, 128) float32. Frame k of
    (mod, snr) has I = its row in the published stacking order (sorted mods, then sorted
    SNRs) and Q = arange(128)."""
    data = {}
    row = 0
    for mod in sorted(mods):
        for snr in sorted(snrs):
            a = np.empty((frames_per_cell, 2, RML2016_FRAME_LEN), dtype=np.float32)
            a[:, 0, :] = np.arange(row, row + frames_per_cell, dtype=np.float32)[:, None]
            a[:, 1, :] = np.arange(RML2016_FRAME_LEN, dtype=np.float32)
            data[(mod, int(snr))] = a
            row += frames_per_cell
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


@pytest.fixture
def rml2018_h5(tmp_path) -> Callable[..., Path]:
    """Factory: rml2018_h5(name="rml2018.h5", cells=None, frames_per_cell=2) -> path."""
    def make(name: str = "rml2018.h5", **kw) -> Path:
        return write_rml2018(tmp_path / name, **kw)
    return make


@pytest.fixture
def rml2016_pkl(tmp_path) -> Callable[..., Path]:
    """Factory: rml2016_pkl(name="rml2016.pkl", mods=..., snrs=..., frames_per_cell=3)."""
    def make(name: str = "rml2016.pkl", **kw) -> Path:
        return write_rml2016(tmp_path / name, **kw)
    return make


@pytest.fixture(scope="session")
def bacalhaunet_build(tmp_path_factory) -> Path:
    """`build.py --model bacalhaunet --board pynq-z2 --verify-frames 12`, through the deploy
    package (what the default build runs without Vivado). Read-only: a test that resumes or
    edits a build copies it first."""
    import build

    out = tmp_path_factory.mktemp("bacalhaunet_build") / "out"
    assert build.main(["--model", "bacalhaunet", "--board", "pynq-z2", "--out", str(out),
                       "--verify-frames", "12", "--until", "deploy"]) == 0
    return out
