"""Verification frames: the fixed set of dataset frames every build stage is compared on.

Frames come from the test split of the user's RadioML file (`--data`), or of a small synthetic
file in the real layout of the model's dataset, generated into `OUT/data/`. They are spread
evenly over the (class, SNR) cells of that split, so a stage that breaks one class or one SNR
range is caught. Never random noise: the golden model must see the kind of frames it classifies.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from flows.errors import ToolchainError
from flows.fileio import atomic_path
from flows.rml_formats import (RML2016_CLASSES, RML2016_SNRS_DB, RML2018_CLASSES,
                               RML2018_SNRS_DB, RML2018_TEST_FRACTION)

_FORMATS = {
    "rml2018": {"suffix": ".hdf5", "cells": len(RML2018_CLASSES) * len(RML2018_SNRS_DB)},
    "rml2016": {"suffix": ".pkl", "cells": len(RML2016_CLASSES) * len(RML2016_SNRS_DB)},
}


def synthetic_frames_per_cell(n_frames: int, fmt: str) -> int:
    """Smallest frames-per-cell whose test split holds at least `n_frames` frames."""
    cells = _FORMATS[fmt]["cells"]
    per_cell_test = math.ceil(n_frames / cells)
    if fmt == "rml2018":  # test = ceil(0.1 * n) per cell
        return max(2, math.ceil((per_cell_test - 1) / RML2018_TEST_FRACTION) + 1)
    return max(2, 2 * per_cell_test + 2)  # rml2016: half of all rows are test rows


def synthetic_data_path(cfg) -> Path:
    fmt = cfg.model_spec.dataset
    n = synthetic_frames_per_cell(cfg.verify_frames, fmt)
    return cfg.data_dir / f"synthetic_{fmt}_seed{cfg.seed}_{n}pc{_FORMATS[fmt]['suffix']}"


def evenly_spread(rows: np.ndarray, labels: np.ndarray, snrs: np.ndarray, n: int) -> np.ndarray:
    """`n` of `rows`, spread evenly after ordering them by (class, SNR, row)."""
    if n > len(rows):
        raise ToolchainError(f"asked for {n} verification frames but the test split holds only "
                             f"{len(rows)}; lower --verify-frames or use a larger --data file.")
    order = np.lexsort((rows, snrs, labels))
    pick = np.unique(np.linspace(0, len(rows) - 1, n).round().astype(np.int64))
    return rows[order[pick]]


def prepare_verification_frames(cfg) -> dict:
    """Write `OUT/data/verify_frames.npz` (x, y, snr, rows) and return a summary for the report."""
    from flows.radioml import RML2016File, RML2018File, open_radioml
    from flows.synth import write_rml2016, write_rml2018

    spec = cfg.model_spec
    fmt = spec.dataset
    if cfg.data is None:
        path = synthetic_data_path(cfg)
        if not path.exists():
            writer = write_rml2018 if fmt == "rml2018" else write_rml2016
            writer(path, frames_per_cell=synthetic_frames_per_cell(cfg.verify_frames, fmt),
                   seed=cfg.seed)
    else:
        path = Path(cfg.data)
    with open_radioml(path) as source:
        expected_type = RML2018File if fmt == "rml2018" else RML2016File
        if not isinstance(source, expected_type) or source.frame_len != spec.input_shape[-1]:
            raise ToolchainError(
                f"{path}: a {type(source).__name__} file with {source.frame_len}-sample frames, "
                f"but model {spec.name} expects {fmt} data ({spec.input_shape[-1]}-sample "
                f"frames, {spec.n_classes} classes). Pass a --data file of that format.")
        test_rows = source.split()[-1]
        rows = evenly_spread(test_rows, source.labels[test_rows], source.snrs_db[test_rows],
                             cfg.verify_frames)
        x, y, snr = source.read(rows)
    with atomic_path(cfg.data_dir / "verify_frames.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=x, y=y, snr=snr, rows=rows)
    return {"data_file": str(path), "synthetic": cfg.data is None, "format": fmt,
            "frames": int(len(rows)), "classes": int(len(np.unique(y))),
            "snr_min_db": int(snr.min()), "snr_max_db": int(snr.max())}
