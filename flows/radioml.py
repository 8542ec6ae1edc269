"""RadioML readers, the published train/test splits, and a PyTorch path over them.

Two sources share one interface (`classes`, `labels`, `snrs_db`, `select`, `read`, `split`):

- `RML2018File`: the RadioML 2018.01A HDF5 file (`GOLD_XYZ_OSC.0001_1024.hdf5`, about 20 GiB)
  or any smaller file in the same layout (fewer frames per cell, or a subset of cells, as the
  synthetic generator writes). Lazy: `X` is never loaded whole; rows are read by index in
  contiguous runs. The class and SNR of each row come from `Y` (argmax, read in chunks) and `Z`.
- `RML2016File`: the RadioML 2016.10a pickle, loaded whole (220,000 x 2 x 128 float32, 225 MB)
  through a restricted unpickler that only rebuilds numpy arrays.

Frames come out channels-first, (B, 2, L) float32 with I on channel 0 and Q on channel 1, with
the class index (into `rml_formats.RML2018_CLASSES` / `RML2016_CLASSES`) and SNR in dB per frame.

Splits (index arrays into the file's rows; filters such as `select` apply on top):

- `rml2018_split`: the published 2018 split, exactly. Seed 2018; for each class, for each SNR
  index, shuffle that cell's rows with the legacy Mersenne-Twister shuffle and send the first
  ceil(0.1 * n_cell) to test (410 of 4096), the rest to train. `np.random.RandomState(2018)`
  gives the same stream as `np.random.seed(2018)` + `np.random.shuffle`, so the user's global
  RNG state is left alone (a test compares with the literal published loop).
- `rml2016_split`: the seed-2016 split of ULCNN and the O'Shea notebook, then a validation set
  held out of the training half (the project's rule; see the function).

PyTorch: `RadioMLDataset` (map-style over a list of rows; `ds[i]` is one frame, `ds[[i, j]]` a
batch read with few HDF5 calls), `BlockShuffleBatchSampler` (seedable shuffling that keeps reads
contiguous) and `make_loader`, which puts them together.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from flows.errors import InputFileError, ToolchainError
from flows.rml_formats import (
    RML2016_CLASSES,
    RML2016_FRAME_LEN,
    RML2016_FRAMES_PER_CELL,
    RML2016_SNRS_DB,
    RML2016_SPLIT_SEED,
    RML2018_CLASSES,
    RML2018_DATASETS,
    RML2018_FRAME_LEN,
    RML2018_FRAMES_PER_CELL,
    RML2018_SNRS_DB,
    RML2018_SPLIT_SEED,
    RML2018_TEST_FRACTION,
    rml2018_cell_rows,
)

__all__ = [
    "RML2016_TRAIN_FRACTION",
    "RML2016_VAL_FRACTION",
    "BlockShuffleBatchSampler",
    "RML2016File",
    "RML2018File",
    "RadioMLDataset",
    "make_loader",
    "open_radioml",
    "rml2016_split",
    "rml2018_split",
    "rml2018_split_cells",
]

# The published 2016 split trains on half of the frames; this project holds out 30 % of that
# half for validation (77,000 / 33,000 / 110,000 for the full file).
RML2016_TRAIN_FRACTION = 0.5
RML2016_VAL_FRACTION = 0.3

_LABEL_CHUNK_ROWS = 1 << 16  # rows of Y per read when deriving labels (12.6 MB of int64)
_CHUNK_CACHE_BYTES = 32 << 20  # HDF5 chunk cache, only matters for chunked/compressed files
# Rows of X read through rather than skipped: an HDF5 call costs ~20-60 us, a cached 8 KB
# frame ~2 us. Train rows of the published split leave one test row in ten out.
_MAX_GAP_ROWS = 8

_RML2018_EXPECTED = (
    "an HDF5 file in the RadioML 2018.01A layout: X (N, 1024, 2) float32 with I/Q last, "
    "Y (N, 24) one-hot, Z (N, 1) SNR in dB"
)
_RML2018_FIX = (
    "Point to GOLD_XYZ_OSC.0001_1024.hdf5 from RadioML 2018.01A, or a file written in the same "
    "layout by the synthetic generator"
)
_RML2016_EXPECTED = (
    "a RadioML 2016.10a pickle: a dict (modulation, snr) -> float32 array (n, 2, 128)"
)
_RML2016_FIX = "Point to RML2016.10a_dict.pkl, or a pickle written in the same layout"


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------

def _ceil_fraction(n: int, fraction: float) -> int:
    """ceil(fraction * n) in exact decimal arithmetic: 0.1 means 1/10, so 30 rows give 3, not
    the 4 that float rounding (0.1 * 30 = 3.0000000000000004) would give. 410 for 4096."""
    return math.ceil(Fraction(str(fraction)) * n)


def rml2018_split_cells(cells: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The published 2018 procedure over given cells, in the order given.

    Seeds a private `RandomState(2018)`, then for each cell shuffles its rows and sends the
    first ceil(0.1 * n_cell) to test, the rest to train. Returns (train, test) int64 rows in
    the published order: cell by cell, shuffled within each cell (sort them if order matters).
    """
    rng = np.random.RandomState(RML2018_SPLIT_SEED)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for rows in cells:
        rows = np.array(rows, dtype=np.int64)  # a copy: shuffled in place
        rng.shuffle(rows)  # permutes positions: same result as shuffling np.arange(n) + start
        n_test = _ceil_fraction(len(rows), RML2018_TEST_FRACTION)
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    empty = np.empty(0, dtype=np.int64)
    return (np.concatenate(train) if train else empty, np.concatenate(test) if test else empty)


def rml2018_split(n_classes: int = len(RML2018_CLASSES), n_snrs: int = len(RML2018_SNRS_DB),
                  frames_per_cell: int = RML2018_FRAMES_PER_CELL
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The published RadioML 2018.01A train/test split, over the full row space of a file with
    `n_classes` x `n_snrs` cells of `frames_per_cell` rows ordered class-then-SNR.

    With the defaults this is the split published results use: 2,300,064 train and 255,840
    test rows (410 test per cell), no file needed. The literal published code is::

        np.random.seed(2018)
        for mod in range(24):
            for snr_idx in range(26):
                rows = list(range(26*4096*mod + 4096*snr_idx, ... + 4096))
                np.random.shuffle(rows)
                test += rows[:410]; train += rows[410:]

    For other `frames_per_cell` the same procedure runs on those cells (test = ceil(0.1 * n)).
    """
    cells = (rml2018_cell_rows(c, s, frames_per_cell, n_snrs)
             for c in range(n_classes) for s in range(n_snrs))
    return rml2018_split_cells(cells)


def rml2016_split(n_examples: int = len(RML2016_CLASSES) * len(RML2016_SNRS_DB)
                  * RML2016_FRAMES_PER_CELL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seed-2016 RadioML 2016.10a split, returned as (train, val, test) row arrays.

    Train and test reproduce the published snippet (ULCNN, the O'Shea notebook) exactly::

        np.random.seed(2016)
        n_train = n_examples * 0.5
        train_idx = np.random.choice(range(0, n_examples), size=int(n_train), replace=False)
        test_idx = list(set(range(0, n_examples)) - set(train_idx))

    with rows numbered as that code stacks them (`RML2016File` does the same). `test` is
    returned sorted ascending; the published `list(set ...)` order is an artefact of Python's
    set (it happens to be ascending for the full file).

    Validation is the project's rule, since the published code does not pin one: continue with
    the same RNG stream and draw `val = choice(train_idx, size=(3 * len(train_idx)) // 10,
    replace=False)`; `train` keeps the remaining published training rows in published order.
    For the full file: 77,000 train / 33,000 val / 110,000 test. The global RNG is untouched:
    a private `RandomState(2016)` gives the same stream as `np.random.seed(2016)`.
    """
    rng = np.random.RandomState(RML2016_SPLIT_SEED)
    n_train = n_examples * RML2016_TRAIN_FRACTION
    train_idx = rng.choice(range(0, n_examples), size=int(n_train), replace=False)
    test_idx = np.setdiff1d(np.arange(n_examples), train_idx)  # sorted
    n_val = int(Fraction(str(RML2016_VAL_FRACTION)) * len(train_idx))  # exact: 33,000
    val_idx = rng.choice(train_idx, size=n_val, replace=False)
    train_kept = train_idx[~np.isin(train_idx, val_idx)]
    return (train_kept.astype(np.int64), val_idx.astype(np.int64), test_idx.astype(np.int64))


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------

def _check_is_file(path: Path, expected: str, fix: str) -> None:
    if not path.exists():
        raise InputFileError(path, "does not exist", expected, fix)
    if path.is_dir():
        raise InputFileError(path, "is a directory, not a file", expected, fix)


def _spans(sorted_unique: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Row spans [first, stop) covering a sorted unique row array, merging runs of consecutive
    rows separated by at most `max_gap` unwanted rows (cheaper to read through than to pay
    another HDF5 call)."""
    breaks = np.flatnonzero(np.diff(sorted_unique) > max_gap + 1) + 1
    first = sorted_unique[np.concatenate(([0], breaks))]
    stop = sorted_unique[np.concatenate((breaks, [len(sorted_unique)])) - 1] + 1
    return first, stop


class _RadioMLSource:
    """What both readers share: per-row labels and SNRs, filters, label remapping, reads."""

    path: Path
    classes: tuple[str, ...]  # class names, index = class label
    snr_grid_db: tuple[int, ...]  # the SNR levels of the format, ascending
    frame_len: int  # complex samples per frame
    labels: np.ndarray  # int8 class index per row (read-only)
    snrs_db: np.ndarray  # int8 SNR in dB per row (read-only)

    @property
    def n_frames(self) -> int:
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        return self.n_frames

    def class_indices(self, names: Sequence[str]) -> np.ndarray:
        """Class labels of `names`, in the order given; an unknown name is an error."""
        if isinstance(names, str):
            names = [names]
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise ToolchainError(
                f"{self.path}: unknown class name(s) {unknown}; the classes of this format are "
                f"{', '.join(self.classes)} (names are case-sensitive).")
        if len(set(names)) != len(names):
            raise ToolchainError(f"{self.path}: class names {list(names)} contain duplicates.")
        return np.array([self.classes.index(n) for n in names], dtype=np.int64)

    def label_map(self, classes: Sequence[str]) -> np.ndarray:
        """Lookup table old label -> position in `classes` (0..k-1), -1 for classes left out."""
        lut = np.full(len(self.classes), -1, dtype=np.int64)
        lut[self.class_indices(classes)] = np.arange(len(classes))
        return lut

    def cells(self) -> list[tuple[int, int, np.ndarray]]:
        """(class index, SNR index, rows ascending) of every cell present, class then SNR."""
        snr_index = np.searchsorted(self.snr_grid_db, self.snrs_db)
        cell_id = self.labels.astype(np.int64) * len(self.snr_grid_db) + snr_index
        order = np.argsort(cell_id, kind="stable")
        counts = np.bincount(cell_id, minlength=len(self.classes) * len(self.snr_grid_db))
        out, start = [], 0
        for cid in np.flatnonzero(counts):
            n = int(counts[cid])
            c, s = divmod(int(cid), len(self.snr_grid_db))
            out.append((c, s, order[start:start + n].astype(np.int64)))
            start += n
        return out

    def select(self, indices: Sequence[int] | np.ndarray | None = None, *,
               snr_min: int | None = None, snr_max: int | None = None,
               classes: Sequence[str] | None = None) -> np.ndarray:
        """Rows whose SNR is in [snr_min, snr_max] dB (inclusive) and class is in `classes`.

        Filters `indices` (keeping their order) or all rows (ascending). Selecting nothing is
        an error, since it is always a mistake in the filter.
        """
        rows = (np.arange(self.n_frames, dtype=np.int64) if indices is None
                else self._check_indices(indices))
        if snr_min is not None and snr_max is not None and snr_min > snr_max:
            raise ToolchainError(
                f"{self.path}: snr_min {snr_min} dB is above snr_max {snr_max} dB; "
                "the range is inclusive, swap the bounds.")
        keep = np.ones(rows.shape[0], dtype=bool)
        snr = self.snrs_db[rows]
        if snr_min is not None:
            keep &= snr >= snr_min
        if snr_max is not None:
            keep &= snr <= snr_max
        if classes is not None:
            keep &= np.isin(self.labels[rows], self.class_indices(classes))
        if not keep.any():
            present = sorted({int(v) for v in np.unique(self.snrs_db[rows])}) if len(rows) else []
            names = [self.classes[c] for c in np.unique(self.labels[rows])] if len(rows) else []
            raise ToolchainError(
                f"{self.path}: the filter snr_min={snr_min}, snr_max={snr_max}, "
                f"classes={None if classes is None else list(classes)} selects no frame out of "
                f"{len(rows)}; those frames have SNRs {present} dB and classes {names}. "
                "Widen the SNR range or choose classes present in the file.")
        return rows[keep]

    def read(self, indices: Sequence[int] | np.ndarray, classes: Sequence[str] | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frames (B, 2, L) float32, class labels (B,) int64 and SNRs (B,) int64 dB of `indices`,
        in the order requested. With `classes`, labels are remapped to positions in that list."""
        rows = self._check_indices(indices)
        y = self.labels[rows].astype(np.int64)
        if classes is not None:
            y = self._remap(y, self.label_map(classes), classes)
        return self.read_frames(rows), y, self.snrs_db[rows].astype(np.int64)

    def read_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _remap(self, y: np.ndarray, lut: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        mapped = lut[y]
        if (mapped < 0).any():
            bad = self.classes[int(y[np.argmax(mapped < 0)])]
            raise ToolchainError(
                f"{self.path}: a requested row has class {bad}, which is not in the class subset "
                f"{list(classes)}; filter the rows first with select(classes=...).")
        return mapped

    def _check_indices(self, indices) -> np.ndarray:
        rows = np.asarray(indices)
        if rows.ndim != 1 or not (rows.size == 0 or np.issubdtype(rows.dtype, np.integer)):
            raise ToolchainError(
                f"{self.path}: row indices must be a 1-D sequence of integers, got an array of "
                f"shape {rows.shape} and dtype {rows.dtype}.")
        rows = rows.astype(np.int64, copy=False)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_frames):
            raise ToolchainError(
                f"{self.path}: row indices must lie in [0, {self.n_frames}); got "
                f"{int(rows.min())}..{int(rows.max())}. Indices from a split of another file?")
        return rows


class RML2018File(_RadioMLSource):
    """A RadioML 2018.01A HDF5 file (or a smaller file in its layout), opened read-only.

    On opening, the layout is checked and the class (argmax of `Y`, read in chunks) and SNR
    (`Z`) of every row are kept in memory as int8 (2 x 2.5 MB for the real file); `X` is read
    only on demand. Works with fewer frames per cell and with a subset of cells; rows may be
    in any order, though the real file and the generator order them class-then-SNR.
    The handle reopens itself in DataLoader worker processes.
    """

    classes = RML2018_CLASSES
    snr_grid_db = RML2018_SNRS_DB
    frame_len = RML2018_FRAME_LEN

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        _check_is_file(self.path, _RML2018_EXPECTED, _RML2018_FIX)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        try:
            if not h5py.is_hdf5(self.path):
                raise InputFileError(self.path, "is not an HDF5 file", _RML2018_EXPECTED,
                                     _RML2018_FIX)
            f = self._handle()
            self._check_layout(f)
            self.labels, self.snrs_db = self._read_labels(f)
        except OSError as e:  # truncated or damaged file, permissions
            self.close()
            raise InputFileError(
                self.path, f"cannot be read as HDF5 ({e})", _RML2018_EXPECTED,
                "The file may be truncated or damaged (an interrupted download or write); "
                "fetch or generate it again") from None
        except BaseException:
            self.close()
            raise
        self.labels.setflags(write=False)
        self.snrs_db.setflags(write=False)

    # -- file handle ------------------------------------------------------------------------
    def _handle(self) -> h5py.File:
        """The open file, reopened after a fork (an HDF5 handle must not cross processes)."""
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self) -> RML2018File:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # for spawned workers: the handle reopens lazily
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    # -- layout -----------------------------------------------------------------------------
    def _bad(self, problem: str, fix: str = _RML2018_FIX) -> InputFileError:
        return InputFileError(self.path, problem, _RML2018_EXPECTED, fix)

    def _check_layout(self, f: h5py.File) -> None:
        missing = [k for k in RML2018_DATASETS if not isinstance(f.get(k), h5py.Dataset)]
        if missing:
            raise self._bad(f"has no dataset(s) {', '.join(missing)} (found: "
                            f"{', '.join(sorted(f.keys())) or 'nothing'})")
        X, Y, Z = (f[k] for k in RML2018_DATASETS)
        n_classes = len(self.classes)
        if X.dtype.kind != "f":
            hint = ("; store complex frames as float32 (N, 1024, 2), e.g. "
                    "np.stack([x.real, x.imag], -1)" if X.dtype.kind == "c" else "")
            raise self._bad(f"X has dtype {X.dtype}, not a real float type{hint}")
        if X.ndim != 3 or X.shape[1:] != (self.frame_len, 2):
            hint = (" (channels-first: transpose to (N, 1024, 2) when writing)"
                    if X.ndim == 3 and X.shape[1:] == (2, self.frame_len) else "")
            raise self._bad(f"X has shape {X.shape}, not (N, {self.frame_len}, 2){hint}")
        if Y.dtype.kind not in "iubf" or Y.ndim != 2 or Y.shape[1] != n_classes:
            hint = (" (11 columns is the 2016.10a class set, which this format does not use)"
                    if Y.ndim == 2 and Y.shape[1] == 11 else "")
            raise self._bad(f"Y has shape {Y.shape} and dtype {Y.dtype}, not a one-hot "
                            f"(N, {n_classes}) numeric array{hint}")
        if Z.dtype.kind not in "iuf" or not (Z.ndim == 1 or (Z.ndim == 2 and Z.shape[1] == 1)):
            raise self._bad(f"Z has shape {Z.shape} and dtype {Z.dtype}, not (N, 1) numeric SNRs")
        counts = {k: f[k].shape[0] for k in RML2018_DATASETS}
        if len(set(counts.values())) != 1:
            raise self._bad(f"X, Y and Z have different row counts {counts}",
                            "Every frame needs one row in each of X, Y and Z; rewrite the file")
        if counts["X"] == 0:
            raise self._bad("has no frames (0 rows)")

    def _read_labels(self, f: h5py.File) -> tuple[np.ndarray, np.ndarray]:
        Y, Z = f["Y"], f["Z"]
        n = Y.shape[0]
        labels = np.empty(n, dtype=np.int8)
        for a in range(0, n, _LABEL_CHUNK_ROWS):
            y = Y[a:a + _LABEL_CHUNK_ROWS]
            one_hot = ((y == 1).sum(axis=1) == 1) & ((y == 0) | (y == 1)).all(axis=1)
            if not one_hot.all():
                r = a + int(np.argmin(one_hot))
                raise self._bad(f"row {r} of Y is not one-hot ({y[r - a].tolist()})")
            labels[a:a + len(y)] = y.argmax(axis=1)
        z = Z[...].reshape(-1)
        grid = np.asarray(self.snr_grid_db)
        on_grid = np.isin(z, grid)
        if not on_grid.all():
            r = int(np.argmin(on_grid))
            raise self._bad(f"row {r} of Z holds SNR {z[r]} dB, not one of the format's levels "
                            f"{grid.min()}..{grid.max()} dB in steps of 2")
        return labels, z.astype(np.int8)

    @property
    def frames_per_cell(self) -> int | None:
        """Frames in each cell present, if all cells hold the same number (4096 for the real
        file), else None."""
        counts = {len(rows) for _, _, rows in self.cells()}
        return counts.pop() if len(counts) == 1 else None

    # -- reads ------------------------------------------------------------------------------
    def read_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames of `indices` as (B, 2, 1024) float32, in the order requested.

        HDF5 reads want sorted unique rows: the rows are sorted and deduplicated, grouped into
        spans of consecutive rows (bridging gaps of up to `_MAX_GAP_ROWS` rows), each span is
        read with one slice (measured faster than h5py fancy indexing or `read_direct`), and
        one gather restores the requested order (duplicates included) and puts I/Q first.
        """
        rows = self._check_indices(indices)
        if rows.size == 0:
            return np.empty((0, 2, self.frame_len), dtype=np.float32)
        if rows.size == 1 or bool(np.all(np.diff(rows) > 0)):
            unique, inverse = rows, None
        else:
            unique, inverse = np.unique(rows, return_inverse=True)
        first, stop = _spans(unique, _MAX_GAP_ROWS)
        lengths = stop - first
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        raw = np.empty((int(lengths.sum()), self.frame_len, 2), dtype=np.float32)
        try:
            X = self._handle()["X"]
            for a, b, o in zip(first.tolist(), stop.tolist(), offsets.tolist()):
                raw[o:o + b - a] = X[a:b]
        except OSError as e:
            raise InputFileError(self.path, f"reading X failed ({e})", _RML2018_EXPECTED,
                                 "The file may be damaged or was changed while open") from None
        channels_first = raw.transpose(0, 2, 1)  # (rows, 2, L): I then Q
        if inverse is None and raw.shape[0] == unique.size:
            return np.ascontiguousarray(channels_first)  # sorted rows without gaps
        span = np.searchsorted(first, unique, side="right") - 1
        position = offsets[span] + (unique - first[span])  # of each unique row in `raw`
        if inverse is not None:
            position = position[inverse]
        return np.ascontiguousarray(channels_first[position])

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """The published 2018 split of this file's rows: (train, test).

        The published procedure (see `rml2018_split`) applied to the cells present, class then
        SNR ascending, each cell's rows ascending. For the real file (4096 rows per cell,
        ordered class-then-SNR) this equals `rml2018_split()`; for a smaller file it is the same
        procedure on its cells (ceil(0.1 * n) test rows per cell).
        """
        return rml2018_split_cells(rows for _, _, rows in self.cells())


_ALLOWED_PICKLE_GLOBALS = {
    # (module, name) in the pickle -> (module, name) to import; numpy 2 moved numpy.core to
    # numpy._core, and old pickles (the real file is a Python 2 pickle) name numpy.core.
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),  # bytes in protocol <= 2 pickles from Python 3
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles containers, strings, numbers and numpy arrays only: a pickle can otherwise run
    any code on load, and a dataset file is untrusted input."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        target = _ALLOWED_PICKLE_GLOBALS.get((module, name))
        if target is None:
            raise InputFileError(
                self._path, f"the pickle refers to {module}.{name}, which this reader refuses to "
                "load (a pickle can run code; only numpy arrays are allowed)", _RML2016_EXPECTED,
                _RML2016_FIX)
        try:
            return getattr(importlib.import_module(target[0]), target[1])
        except (ImportError, AttributeError):  # an older numpy without numpy._core
            return getattr(importlib.import_module(module), name)


class RML2016File(_RadioMLSource):
    """A RadioML 2016.10a pickle, loaded whole and checked; rows stacked as published.

    Rows follow the published stacking: for mod in sorted(mods): for snr in sorted(snrs):
    append Xd[(mod, snr)], so `rml2016_split` indices mean the same rows as in published code.
    Labels index `RML2016_CLASSES` (equal to the published `mods.index(mod)` for the full file).
    Smaller files are accepted if every (mod, snr) pair of their mods x snrs is present.
    """

    classes = RML2016_CLASSES
    snr_grid_db = RML2016_SNRS_DB
    frame_len = RML2016_FRAME_LEN

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        _check_is_file(self.path, _RML2016_EXPECTED, _RML2016_FIX)
        try:
            with open(self.path, "rb") as fh:
                data = _ArrayOnlyUnpickler(fh, self.path).load()
        except InputFileError:
            raise
        except OSError as e:
            raise InputFileError(self.path, f"cannot be read ({e})", _RML2016_EXPECTED,
                                 _RML2016_FIX) from None
        except Exception as e:  # any parse failure of untrusted bytes means "not this format"
            raise InputFileError(self.path, f"is not a readable pickle ({type(e).__name__}: {e})",
                                 _RML2016_EXPECTED, _RML2016_FIX) from None
        self._x, self.labels, self.snrs_db = self._stack(data)
        for a in (self._x, self.labels, self.snrs_db):
            a.setflags(write=False)

    def _bad(self, problem: str) -> InputFileError:
        return InputFileError(self.path, problem, _RML2016_EXPECTED, _RML2016_FIX)

    def _stack(self, data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not isinstance(data, dict) or not data:
            raise self._bad(f"holds a {type(data).__name__}"
                            + (" that is empty" if isinstance(data, dict) else ", not a dict"))
        for key in data:
            if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str)
                    and isinstance(key[1], (int, np.integer)) and not isinstance(key[1], bool)):
                raise self._bad(f"has key {key!r}, not a (modulation name, integer SNR) pair")
            if key[0] not in self.classes:
                raise self._bad(f"has unknown modulation {key[0]!r}; the 2016.10a classes are "
                                f"{', '.join(self.classes)}")
            if int(key[1]) not in self.snr_grid_db:
                raise self._bad(f"has SNR {key[1]} dB in key {key!r}, not one of "
                                f"{self.snr_grid_db[0]}..{self.snr_grid_db[-1]} dB in steps of 2")
        mods = sorted({k[0] for k in data})
        snrs = sorted({int(k[1]) for k in data})
        by_pair = {(k[0], int(k[1])): v for k, v in data.items()}
        xs, labels, snr_rows = [], [], []
        for mod in mods:
            for snr in snrs:
                if (mod, snr) not in by_pair:
                    raise self._bad(f"has no entry for ({mod!r}, {snr}) although it holds "
                                    f"modulation {mod!r} and SNR {snr} dB elsewhere")
                v = by_pair[(mod, snr)]
                if (not isinstance(v, np.ndarray) or v.dtype.kind != "f" or v.ndim != 3
                        or v.shape[1:] != (2, self.frame_len) or v.shape[0] == 0):
                    desc = (f"an array of shape {v.shape} and dtype {v.dtype}"
                            if isinstance(v, np.ndarray) else f"a {type(v).__name__}")
                    raise self._bad(f"entry ({mod!r}, {snr}) is {desc}, not a float array "
                                    f"(n, 2, {self.frame_len})")
                xs.append(v.astype(np.float32, copy=False))
                labels.append(np.full(v.shape[0], self.classes.index(mod), dtype=np.int8))
                snr_rows.append(np.full(v.shape[0], snr, dtype=np.int8))
        return np.concatenate(xs), np.concatenate(labels), np.concatenate(snr_rows)

    def read_frames(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Frames of `indices` as (B, 2, 128) float32 (a copy), in the order requested."""
        return self._x[self._check_indices(indices)]

    def split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, val, test) of this file's rows by `rml2016_split` (77,000 / 33,000 /
        110,000 for the full file; the same procedure over n rows for a smaller one)."""
        return rml2016_split(self.n_frames)

    def close(self) -> None:
        """Nothing to close (the pickle is in memory); present for symmetry."""

    def __enter__(self) -> RML2016File:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_radioml(path: str | os.PathLike) -> RML2018File | RML2016File:
    """`RML2018File` for an HDF5 file, `RML2016File` for anything else (read as a pickle)."""
    p = Path(path)
    _check_is_file(p, "a RadioML 2018.01A HDF5 file or a RadioML 2016.10a pickle",
                   "Point to GOLD_XYZ_OSC.0001_1024.hdf5 or RML2016.10a_dict.pkl")
    try:
        is_hdf5 = h5py.is_hdf5(p)
    except OSError:
        is_hdf5 = False
    return RML2018File(p) if is_hdf5 else RML2016File(p)


# --------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------

class RadioMLDataset(Dataset):
    """Map-style dataset over `rows` of a RadioML source.

    `ds[i]` gives one frame: (x float32 (2, L), y int64, snr int64) tensors. `ds[[i, j, ...]]`
    (a list or array of positions) gives a batch (x (B, 2, L), y (B,), snr (B,)) read with one
    sorted pass over the file; `make_loader` uses that with automatic batching off.
    `__getitems__` follows torch's contract (a list of samples) for a plain `DataLoader`.
    With `classes`, labels are remapped to positions in that list (0..k-1); rows of other
    classes are an error, so filter first with `source.select(classes=...)`.
    """

    def __init__(self, source: _RadioMLSource, rows: Sequence[int] | np.ndarray | None = None,
                 *, classes: Sequence[str] | None = None):
        self.source = source
        self.rows = (np.arange(source.n_frames, dtype=np.int64) if rows is None
                     else source._check_indices(rows).copy())
        self.classes = tuple(classes) if classes is not None else source.classes
        self._lut = None
        if classes is not None:
            self._lut = source.label_map(classes)
            source._remap(source.labels[self.rows].astype(np.int64), self._lut, classes)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def read_batch(self, positions: Sequence[int] | np.ndarray
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x (B, 2, L) float32, y (B,) int64, snr (B,) int64) of dataset positions."""
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size and (pos.min() < -len(self) or pos.max() >= len(self)):
            raise IndexError(f"positions out of range for a dataset of {len(self)} frames")
        rows = self.rows[pos]
        x = self.source.read_frames(rows)
        y = self.source.labels[rows].astype(np.int64)
        if self._lut is not None:
            y = self._lut[y]
        snr = self.source.snrs_db[rows].astype(np.int64)
        return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(snr)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            x, y, snr = self.read_batch([int(index)])
            return x[0], y[0], snr[0]
        return self.read_batch(index)

    def __getitems__(self, positions: list[int]) -> list[tuple[torch.Tensor, ...]]:
        x, y, snr = self.read_batch(positions)
        return list(zip(x.unbind(0), y.unbind(0), snr.unbind(0)))


class BlockShuffleBatchSampler(Sampler[list[int]]):
    """Seedable shuffled batches of dataset positions that keep HDF5 reads contiguous.

    Positions are cut into blocks of `block_len` consecutive positions (consecutive rows when
    the dataset's rows are sorted, as `make_loader` does); each epoch shuffles the block order,
    cuts the result into batches and shuffles within each batch. A batch of 256 with
    `block_len=8` is then 32 reads of 8 frames instead of 256 reads of one. The trade-off:
    frames in one block are neighbours in the file, so usually the same (class, SNR) cell; a
    batch covers batch_size / block_len cells instead of ~batch_size. `block_len=1` is a full
    shuffle (fine when the file sits in the page cache; slow from a disk). The order depends
    only on (seed, epoch); the epoch advances on each pass, or set it with `set_epoch`.
    """

    def __init__(self, n: int, batch_size: int, *, block_len: int = 8, seed: int = 0,
                 drop_last: bool = False):
        if batch_size < 1 or block_len < 1:
            raise ToolchainError(f"batch_size ({batch_size}) and block_len ({block_len}) must "
                                 "be positive.")
        self.n, self.batch_size, self.block_len = int(n), int(batch_size), int(block_len)
        self.seed, self.drop_last, self.epoch = int(seed), bool(drop_last), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        n_blocks = -(-self.n // self.block_len)
        order = rng.permutation(n_blocks)
        pos = (order[:, None] * self.block_len + np.arange(self.block_len)).ravel()
        pos = pos[pos < self.n]  # the last block may be short
        for b in range(len(self)):
            batch = pos[b * self.batch_size:(b + 1) * self.batch_size].copy()
            rng.shuffle(batch)
            yield batch.tolist()


def _identity(batch):
    return batch


def make_loader(source: _RadioMLSource | str | os.PathLike,
                indices: Sequence[int] | np.ndarray | None = None, batch_size: int = 256,
                shuffle: bool = False, seed: int = 0, num_workers: int = 0, *,
                block_len: int = 8, classes: Sequence[str] | None = None,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader of batches (x float32 (B, 2, L), y int64 (B,), snr int64 (B,)).

    `indices` (a split, a `select` result; all rows if None) are sorted so that neighbouring
    positions are neighbouring rows: without `shuffle` the rows come in ascending order, with
    `shuffle` in `BlockShuffleBatchSampler` order (seeded by `seed`, new order each epoch).
    Each batch is one call to `RadioMLDataset.read_batch`. `classes` remaps labels to 0..k-1.
    Workers (num_workers > 0) each reopen the HDF5 file.
    """
    if not isinstance(source, _RadioMLSource):
        source = open_radioml(source)
    rows = None if indices is None else np.sort(source._check_indices(indices))
    dataset = RadioMLDataset(source, rows, classes=classes)
    if shuffle:
        sampler = BlockShuffleBatchSampler(len(dataset), batch_size, block_len=block_len,
                                           seed=seed, drop_last=drop_last)
    else:
        sampler = BatchSampler(SequentialSampler(dataset), batch_size, drop_last)
    # batch_size=None: each sampler item (a list of positions) is one dataset fetch
    return DataLoader(dataset, sampler=sampler, batch_size=None, collate_fn=_identity,
                      num_workers=num_workers)
