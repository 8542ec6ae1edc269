"""RadioML readers, the published splits and the PyTorch path, on small files in the real
layouts (written by the fixtures in tests/conftest.py)."""

from __future__ import annotations

import math
import os
import pickle

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from flows import radioml
from flows.errors import InputFileError, ToolchainError
from flows.radioml import (
    BlockShuffleBatchSampler,
    RadioMLDataset,
    RML2016File,
    RML2018File,
    make_loader,
    open_radioml,
    rml2016_split,
    rml2018_split,
)
from flows.rml_formats import (
    RML2016_CLASSES,
    RML2018_CLASSES,
    RML2018_FRAME_LEN,
    RML2018_SNRS_DB,
)

N_CLS, N_SNR = len(RML2018_CLASSES), len(RML2018_SNRS_DB)


def row_of(x) -> np.ndarray:
    """The row number each fixture frame carries in its I channel."""
    return np.asarray(x)[:, 0, 0].astype(np.int64)


# --------------------------------------------------------------------------------------------
# RadioML 2018 reader
# --------------------------------------------------------------------------------------------

def test_2018_frames_are_channels_first_with_i_then_q(rml2018_h5):
    with RML2018File(rml2018_h5(frames_per_cell=2)) as f:
        x, y, snr = f.read([5, 0, 700])
    assert x.shape == (3, 2, RML2018_FRAME_LEN) and x.dtype == np.float32
    assert x.flags.c_contiguous
    assert (x[:, 0, :] == np.array([5, 0, 700], dtype=np.float32)[:, None]).all()  # I
    assert (x[:, 1, :] == np.arange(RML2018_FRAME_LEN, dtype=np.float32)).all()  # Q
    assert y.dtype == np.int64 and snr.dtype == np.int64


def test_2018_class_and_snr_of_each_row_follow_the_layout(rml2018_h5):
    fpc = 2
    with RML2018File(rml2018_h5(frames_per_cell=fpc)) as f:
        rows = np.arange(f.n_frames)
        assert f.n_frames == N_CLS * N_SNR * fpc
        assert f.classes == RML2018_CLASSES
        assert (f.labels == rows // (N_SNR * fpc)).all()
        assert (f.snrs_db == np.asarray(RML2018_SNRS_DB)[(rows // fpc) % N_SNR]).all()
        assert f.frames_per_cell == fpc
        _, y, snr = f.read([N_SNR * fpc * 3 + 5 * fpc])  # BPSK (class 3), SNR index 5
        assert RML2018_CLASSES[y[0]] == "BPSK" and snr[0] == RML2018_SNRS_DB[5] == -10


def test_2018_reads_any_order_with_duplicates_in_few_runs(rml2018_h5, monkeypatch):
    f = RML2018File(rml2018_h5(frames_per_cell=2))
    want = np.concatenate([np.arange(10, 42), np.arange(100, 110), [20, 20, 105]])
    np.random.default_rng(1).shuffle(want)
    calls = []
    handle = f._handle

    class CountingX:
        def __init__(self, x):
            self.x = x

        def __getitem__(self, key):
            calls.append(key)
            return self.x[key]

    monkeypatch.setattr(f, "_handle", lambda: {"X": CountingX(handle()["X"])})
    x = f.read_frames(want)
    assert (row_of(x) == want).all()
    assert len(calls) == 2  # rows 10..41 and 100..109, each one slice
    calls.clear()
    want = np.array([18, 10, 12, 14, 11, 10])  # small gaps are read through: one slice
    assert (row_of(f.read_frames(want)) == want).all() and len(calls) == 1
    assert f.read_frames([]).shape == (0, 2, RML2018_FRAME_LEN)
    f.close()


def test_2018_snr_and_class_filters(rml2018_h5):
    with RML2018File(rml2018_h5(frames_per_cell=2)) as f:
        rows = f.select(snr_min=0, snr_max=10)
        assert set(f.snrs_db[rows].tolist()) == {0, 2, 4, 6, 8, 10}  # inclusive bounds
        assert len(rows) == N_CLS * 6 * 2
        rows = f.select(snr_min=28, classes=["BPSK", "QPSK"])
        assert {RML2018_CLASSES[c] for c in f.labels[rows]} == {"BPSK", "QPSK"}
        assert len(rows) == 2 * 2 * 2
        given = np.array([900, 3, 7, 1000, 1])
        kept = f.select(given, snr_max=-18)
        assert (kept == given[np.isin(given, kept)]).all()  # order of the given rows kept
        # remapping to a subset: positions in the list given, 0..k-1
        _, y, _ = f.read(rows, classes=["QPSK", "BPSK"])
        assert (y == np.where(f.labels[rows] == RML2018_CLASSES.index("QPSK"), 0, 1)).all()
        with pytest.raises(ToolchainError, match="not in the class subset"):
            f.read(rows, classes=["QPSK"])


def test_2018_file_with_a_subset_of_cells_in_any_order(rml2018_h5):
    cells = [(5, 10), (3, 0), (3, 25)]
    with RML2018File(rml2018_h5(cells=cells, frames_per_cell=5)) as f:
        assert [(c, s) for c, s, _ in f.cells()] == sorted(cells)
        assert f.frames_per_cell == 5
        train, test = f.split()
        assert len(test) == 3 and len(train) == 12  # ceil(0.1 * 5) = 1 per cell
        x, y, snr = f.read(f.select(classes=["8PSK"]))
        assert (row_of(x) == np.arange(5)).all() and (y == 5).all() and (snr == 0).all()


# --------------------------------------------------------------------------------------------
# The published 2018 split
# --------------------------------------------------------------------------------------------

def literal_published_2018_split(n_classes=24, n_snrs=26, n_cell=4096):
    """The published loop, verbatim in spirit: global legacy RNG, Python lists."""
    state = np.random.get_state()
    try:
        np.random.seed(2018)
        train_indices, test_indices = [], []
        for mod in range(0, n_classes):
            for snr_idx in range(0, n_snrs):
                start_idx = n_snrs * n_cell * mod + n_cell * snr_idx
                indices_subclass = list(range(start_idx, start_idx + n_cell))
                split = int(np.ceil(0.1 * n_cell))
                np.random.shuffle(indices_subclass)
                train_indices.extend(indices_subclass[split:])
                test_indices.extend(indices_subclass[:split])
        return np.array(train_indices), np.array(test_indices)
    finally:
        np.random.set_state(state)


def test_2018_split_equals_the_literal_published_loop():
    train, test = rml2018_split()
    ref_train, ref_test = literal_published_2018_split()
    assert np.array_equal(train, ref_train) and np.array_equal(test, ref_test)


def test_2018_split_counts_coverage_determinism_and_global_rng():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    train, test = rml2018_split()
    assert np.array_equal(np.random.get_state()[1], before)  # global RNG untouched
    n = N_CLS * N_SNR * 4096
    assert len(test) == N_CLS * N_SNR * 410 == 255_840 and len(train) == n - len(test)
    assert (np.bincount(test // 4096, minlength=N_CLS * N_SNR) == 410).all()
    assert (np.bincount(train // 4096, minlength=N_CLS * N_SNR) == 3686).all()
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n))  # disjoint, all
    train2, test2 = rml2018_split()
    assert np.array_equal(train, train2) and np.array_equal(test, test2)


def test_2018_file_split_equals_index_space_split(rml2018_h5):
    with RML2018File(rml2018_h5(frames_per_cell=3)) as f:
        train, test = f.split()
    ref_train, ref_test = rml2018_split(frames_per_cell=3)
    assert np.array_equal(train, ref_train) and np.array_equal(test, ref_test)
    assert len(test) == N_CLS * N_SNR  # ceil(0.1 * 3) = 1 per cell
    # small cells use the exact ceil: 30 rows -> 3 test rows (float ceil(0.1 * 30) would be 4)
    assert len(rml2018_split(1, 1, 30)[1]) == 3


# --------------------------------------------------------------------------------------------
# The 2016 split
# --------------------------------------------------------------------------------------------

def test_2016_split_counts_and_global_rng():
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    train, val, test = rml2016_split()
    assert np.array_equal(np.random.get_state()[1], before)
    assert (len(train), len(val), len(test)) == (77_000, 33_000, 110_000)
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(220_000))
    again = rml2016_split()
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))


def test_2016_split_equals_the_published_snippet():
    state = np.random.get_state()
    try:
        np.random.seed(2016)
        n_examples = 220_000
        n_train = n_examples * 0.5
        train_idx = np.random.choice(range(0, n_examples), size=int(n_train), replace=False)
        test_idx = list(set(range(0, n_examples)) - set(train_idx))
        # the project's validation rule, continuing the same stream
        val_idx = np.random.choice(train_idx, size=int(len(train_idx) * 0.3), replace=False)
    finally:
        np.random.set_state(state)
    train, val, test = rml2016_split()
    assert np.array_equal(test, test_idx)  # the set order is ascending at this size
    assert np.array_equal(val, val_idx)
    assert np.array_equal(train, train_idx[~np.isin(train_idx, val_idx)])


# --------------------------------------------------------------------------------------------
# RadioML 2016 reader
# --------------------------------------------------------------------------------------------

def test_2016_reader_stacks_rows_as_published(rml2016_pkl):
    mods, snrs = ["QPSK", "8PSK", "WBFM"], [4, -20, 18]
    with RML2016File(rml2016_pkl(mods=mods, snrs=snrs, frames_per_cell=3)) as f:
        assert f.n_frames == 27
        x, y, snr = f.read(np.arange(27)[::-1])
        assert x.shape == (27, 2, 128) and x.dtype == np.float32
        assert (row_of(x) == np.arange(27)[::-1]).all()
        assert (x[:, 1, :] == np.arange(128)).all()
        # for mod in sorted(mods): for snr in sorted(snrs)
        names = [RML2016_CLASSES[c] for c in y[::-1]]
        assert names == ["8PSK"] * 9 + ["QPSK"] * 9 + ["WBFM"] * 9
        assert snr[::-1].tolist() == ([-20] * 3 + [4] * 3 + [18] * 3) * 3
        assert len(f.select(snr_min=0, classes=["WBFM"])) == 6
        train, val, test = f.split()
        assert (len(train), len(val), len(test)) == (10, 3, 14)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_2016_reader_accepts_old_and_new_pickles(rml2016_pkl, tmp_path, protocol):
    path = rml2016_pkl(mods=["BPSK"], snrs=[0], protocol=protocol)
    assert RML2016File(path).n_frames == 3
    if protocol <= 2:  # as a numpy 1.x / Python 2 pickle names it
        old = tmp_path / "old.pkl"
        old.write_bytes(path.read_bytes().replace(b"numpy._core.", b"numpy.core."))
        assert b"numpy.core.multiarray" in old.read_bytes()
        assert (row_of(RML2016File(old).read_frames([0, 1, 2])) == [0, 1, 2]).all()


class _RunsCode:
    def __reduce__(self):
        return (os.getpid, ())


def test_2016_reader_refuses_pickles_that_run_code(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({("BPSK", 0): _RunsCode()}, protocol=2))
    with pytest.raises(InputFileError, match=r"posix\.getpid.*refuses"):
        RML2016File(path)


# --------------------------------------------------------------------------------------------
# Bad input: one clear error naming the file
# --------------------------------------------------------------------------------------------

def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
    return path


def _good(n=4):
    x = np.zeros((n, 1024, 2), np.float32)
    y = np.zeros((n, 24), np.int64)
    y[:, 0] = 1
    return x, y, np.zeros((n, 1), np.int64)


def _make_bad_2018(case, tmp_path, rml2018_h5):
    x, y, z = _good()
    p = tmp_path / f"{case}.h5"
    if case == "missing":
        return p
    if case == "directory":
        p.mkdir()
        return p
    if case == "not_hdf5":
        p.write_text("frame,I,Q\n")
        return p
    if case == "truncated":
        good = rml2018_h5(cells=[(0, 0)], frames_per_cell=8)
        p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return p
    if case == "no_y":
        return _h5(p, X=x, Z=z)
    if case == "x_channels_first":
        return _h5(p, X=x.transpose(0, 2, 1), Y=y, Z=z)
    if case == "y_11_columns":
        return _h5(p, X=x, Y=y[:, :11], Z=z)
    if case == "x_int16":
        return _h5(p, X=x.astype(np.int16), Y=y, Z=z)
    if case == "x_complex":
        return _h5(p, X=x[..., 0].astype(np.complex64), Y=y, Z=z)
    if case == "row_counts":
        return _h5(p, X=x, Y=y[:3], Z=z)
    if case == "y_not_one_hot":
        y[2, 5] = 1
        return _h5(p, X=x, Y=y, Z=z)
    if case == "z_off_grid":
        z[1] = 3
        return _h5(p, X=x, Y=y, Z=z)
    raise AssertionError(case)


@pytest.mark.parametrize("case, words", [
    ("missing", "does not exist"),
    ("directory", "is a directory"),
    ("not_hdf5", "is not an HDF5 file"),
    ("truncated", "truncated"),
    ("no_y", "no dataset.*Y"),
    ("x_channels_first", r"X has shape \(4, 2, 1024\).*transpose"),
    ("y_11_columns", r"Y has shape \(4, 11\)"),
    ("x_int16", "X has dtype int16"),
    ("x_complex", "X has dtype complex64"),
    ("row_counts", "different row counts"),
    ("y_not_one_hot", "row 2 of Y is not one-hot"),
    ("z_off_grid", "SNR 3 dB"),
])
def test_2018_bad_input_gets_one_clear_error(case, words, tmp_path, rml2018_h5):
    path = _make_bad_2018(case, tmp_path, rml2018_h5)
    with pytest.raises(InputFileError, match=words) as e:
        RML2018File(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "expected" in msg
    assert e.value.__cause__ is None  # no raw h5py/OS traceback chained


def test_2018_filters_that_select_nothing_or_unknown_names(rml2018_h5):
    path = rml2018_h5(cells=[(0, 0), (1, 25)], frames_per_cell=2)
    with RML2018File(path) as f:
        with pytest.raises(ToolchainError, match="selects no frame") as e:
            f.select(snr_min=0, snr_max=10)
        assert str(path) in str(e.value)
        with pytest.raises(ToolchainError, match="selects no frame"):
            f.select(classes=["BPSK"])  # known class, absent from the file
        with pytest.raises(ToolchainError, match="unknown class.*'bpsk'"):
            f.select(classes=["bpsk"])
        with pytest.raises(ToolchainError, match="swap the bounds"):
            f.select(snr_min=10, snr_max=0)
        with pytest.raises(ToolchainError, match=r"\[0, 4\)"):
            f.read([4])


def _write_pickle(path, obj):
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return path


@pytest.mark.parametrize("case, words", [
    ("not_pickle", "is not a readable pickle"),
    ("not_dict", "holds a list"),
    ("key_not_pair", "not a \\(modulation name, integer SNR\\) pair"),
    ("unknown_class", "unknown modulation 'QAM256'"),
    ("wrong_shape", r"is an array of shape \(3, 128, 2\)"),
    ("missing_pair", r"no entry for \('QPSK', 2\)"),
    ("directory", "is a directory"),
])
def test_2016_bad_input_gets_one_clear_error(case, words, tmp_path):
    a = np.zeros((3, 2, 128), np.float32)
    p = tmp_path / f"{case}.pkl"
    if case == "not_pickle":
        p.write_text("this is text")
    elif case == "not_dict":
        _write_pickle(p, [a])
    elif case == "key_not_pair":
        _write_pickle(p, {"BPSK": a})
    elif case == "unknown_class":
        _write_pickle(p, {("QAM256", 0): a})
    elif case == "wrong_shape":
        _write_pickle(p, {("BPSK", 0): a.transpose(0, 2, 1).copy()})
    elif case == "missing_pair":
        _write_pickle(p, {("BPSK", 0): a, ("BPSK", 2): a, ("QPSK", 0): a})
    elif case == "directory":
        p.mkdir()
    with pytest.raises(InputFileError, match=words) as e:
        RML2016File(p)
    assert str(e.value).startswith(str(p)) and "expected" in str(e.value)


def test_open_radioml_picks_the_reader(rml2018_h5, rml2016_pkl):
    assert isinstance(open_radioml(rml2018_h5(cells=[(0, 0)])), RML2018File)
    assert isinstance(open_radioml(rml2016_pkl(mods=["BPSK"], snrs=[0])), RML2016File)


# --------------------------------------------------------------------------------------------
# PyTorch path
# --------------------------------------------------------------------------------------------

def _epoch_rows(loader):
    rows = []
    for x, y, snr in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (2, RML2018_FRAME_LEN)
        assert y.dtype == torch.int64 and snr.dtype == torch.int64
        assert len(x) == len(y) == len(snr)
        rows.append(row_of(x))
    return rows


def test_loader_batches_shuffle_and_seed(rml2018_h5):
    f = RML2018File(rml2018_h5(cells=[(c, s) for c in (0, 3, 4) for s in (0, 13, 25)],
                               frames_per_cell=8))
    train, _ = f.split()
    loader = make_loader(f, train, batch_size=10, shuffle=True, seed=5, block_len=4)
    epoch1, epoch2 = _epoch_rows(loader), _epoch_rows(loader)
    assert [len(b) for b in epoch1] == [10] * 6 + [3]
    for epoch in (epoch1, epoch2):  # each epoch: every training row exactly once
        assert np.array_equal(np.sort(np.concatenate(epoch)), np.sort(train))
    assert not np.array_equal(np.concatenate(epoch1), np.concatenate(epoch2))
    again = make_loader(f, train, batch_size=10, shuffle=True, seed=5, block_len=4)
    assert all(np.array_equal(a, b) for a, b in zip(epoch1, _epoch_rows(again)))
    # labels and SNRs belong to the frames
    for x, y, snr in loader:
        rows = row_of(x)
        assert (y.numpy() == f.labels[rows]).all() and (snr.numpy() == f.snrs_db[rows]).all()
    # without shuffle: ascending rows
    seq = np.concatenate(_epoch_rows(make_loader(f, train[::-1], batch_size=16)))
    assert np.array_equal(seq, np.sort(train))


def test_loader_remaps_subset_labels_and_works_in_a_worker(rml2018_h5):
    f = RML2018File(rml2018_h5(cells=[(c, 0) for c in range(6)], frames_per_cell=4))
    rows = f.select(classes=["BPSK", "OOK"])
    loader = make_loader(f, rows, batch_size=3, shuffle=True, seed=0, num_workers=1,
                         classes=["BPSK", "OOK"])
    seen = {}
    for x, y, _ in loader:
        for r, label in zip(row_of(x), y.tolist()):
            seen[int(r)] = label
    assert sorted(seen) == sorted(rows.tolist())
    assert all(seen[r] == (0 if f.labels[r] == 3 else 1) for r in seen)


def test_dataset_items_and_plain_dataloader(rml2016_pkl):
    f = RML2016File(rml2016_pkl(mods=["BPSK", "QPSK"], snrs=[0, 2], frames_per_cell=5))
    ds = RadioMLDataset(f, [7, 3, 19])
    x, y, snr = ds[0]
    assert x.shape == (2, 128) and int(x[0, 0]) == 7 and y.ndim == 0
    xb, yb, _ = ds[[2, 0]]
    assert xb.shape == (2, 2, 128) and row_of(xb).tolist() == [19, 7]
    # a plain DataLoader with automatic batching goes through __getitems__
    x, y, snr = next(iter(DataLoader(ds, batch_size=3)))
    assert row_of(x).tolist() == [7, 3, 19]
    assert [RML2016_CLASSES[c] for c in y] == ["BPSK", "BPSK", "QPSK"]


def test_block_shuffle_sampler_keeps_blocks_contiguous():
    s = BlockShuffleBatchSampler(64, batch_size=16, block_len=4, seed=3)
    batches = list(s)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(64))
    for b in batches:
        blocks = np.sort(b).reshape(-1, 4)
        assert (blocks[:, 0] % 4 == 0).all() and (np.diff(blocks, axis=1) == 1).all()
    assert any(list(b) != sorted(b) for b in batches)  # shuffled within each batch too
    s.set_epoch(0)
    assert [list(b) for b in s] == [list(b) for b in batches]  # (seed, epoch) fixes the order
    assert len(BlockShuffleBatchSampler(10, 4, drop_last=True)) == 2
    assert math.isclose(len(list(BlockShuffleBatchSampler(10, 4))), 3)
    assert radioml.RML2016_VAL_FRACTION == 0.3
