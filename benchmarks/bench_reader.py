"""Throughput of the RadioML 2018 reader through the training loader path.

Writes a temporary file in the real 2018.01A layout (24 classes x 26 SNRs x 64 frames = 39,936
frames, 330 MB of random float32; content does not matter for throughput), then streams the
published training split through `make_loader` (block-shuffled, batch 256 and 1024; a full
shuffle for reference) and all rows sequentially, and prints frames/s. The file was just
written and read once, so it is warm in the page cache: dropping the cache needs root, and a
cold 20 GiB file on disk will be slower, most of all for the full shuffle. Deletes the file.

    PYTHONPATH=. python benchmarks/bench_reader.py [--frames-per-cell 64] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
from rich.console import Console
from rich.table import Table

from flows.radioml import RML2018File, make_loader
from flows.rml_formats import RML2018_CLASSES, RML2018_FRAME_LEN, RML2018_SNRS_DB


def write_file(path: Path, frames_per_cell: int, seed: int = 0) -> int:
    """Random frames in the exact 2018 layout, cell by cell (class, then SNR ascending)."""
    rng = np.random.default_rng(seed)
    n_cls, n_snr = len(RML2018_CLASSES), len(RML2018_SNRS_DB)
    n = n_cls * n_snr * frames_per_cell
    with h5py.File(path, "w") as f:
        X = f.create_dataset("X", (n, RML2018_FRAME_LEN, 2), dtype=np.float32)
        Y = f.create_dataset("Y", (n, n_cls), dtype=np.int64)
        Z = f.create_dataset("Z", (n, 1), dtype=np.int64)
        for c in range(n_cls):  # one class (26 cells) per write
            a, b = c * n_snr * frames_per_cell, (c + 1) * n_snr * frames_per_cell
            X[a:b] = rng.standard_normal((b - a, RML2018_FRAME_LEN, 2), dtype=np.float32)
            y = np.zeros((b - a, n_cls), dtype=np.int64)
            y[:, c] = 1
            Y[a:b] = y
            Z[a:b, 0] = np.repeat(RML2018_SNRS_DB, frames_per_cell)
    return n


def frames_per_s(loader) -> tuple[float, int]:
    n, t0 = 0, time.perf_counter()
    for x, _, _ in loader:
        n += x.shape[0]
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames-per-cell", type=int, default=64, help="frames per (class, SNR)")
    ap.add_argument("--dir", type=Path, default=None, help="where to write the temporary file")
    ap.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    args = ap.parse_args()
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="bench_reader_", dir=args.dir))
    path = tmp / "rml2018_layout.hdf5"
    try:
        t0 = time.perf_counter()
        n = write_file(path, args.frames_per_cell)
        console.print(f"wrote {n} frames, {path.stat().st_size / 2**20:.0f} MiB, "
                      f"in {time.perf_counter() - t0:.1f} s: {path}")
        t0 = time.perf_counter()
        source = RML2018File(path)
        train, _ = source.split()
        console.print(f"opened and split in {time.perf_counter() - t0:.2f} s; "
                      f"{len(train)} training frames")
        frames_per_s(make_loader(source, batch_size=1024))  # warm the page cache

        table = Table(title="RML2018File through make_loader (file warm in page cache)")
        for col in ("path", "batch", "block_len", "frames", "frames/s"):
            table.add_column(col, justify="right" if col != "path" else "left")
        runs = [("shuffled", 256, 8), ("shuffled", 1024, 8), ("shuffled", 256, 32),
                ("full shuffle", 256, 1), ("full shuffle", 1024, 1),
                ("sequential", 256, None), ("sequential", 1024, None)]
        for name, batch, block_len in runs:
            shuffle = block_len is not None
            loader = make_loader(source, train if shuffle else None, batch_size=batch,
                                 shuffle=shuffle, seed=0, num_workers=args.num_workers,
                                 block_len=block_len or 1)
            fps, frames = frames_per_s(loader)
            table.add_row(name, str(batch), str(block_len or "-"), str(frames), f"{fps:,.0f}")
        console.print(table)
        source.close()
    finally:
        path.unlink(missing_ok=True)
        tmp.rmdir()


if __name__ == "__main__":
    main()
