"""Throughput of the synthetic RadioML generator on one core, with and without the HDF5 write.

Usage: python benchmarks/bench_synth.py [--frames-per-cell 50] [--keep FILE]

Pins itself to CPU 0 with one BLAS/OpenMP thread, then times (1) generating every cell of the
rml2018 layout (24 classes x 26 SNRs x frames_per_cell frames) and (2) `write_rml2018` of the
same frames to a temporary file. Reports wall-clock frames/s (what a user waits for) and
CPU-time frames/s (this process only: less sensitive to other load on a shared machine).
Target: >= 3,000 frames/s including the write.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from flows import synth  # noqa: E402
from flows.rml_formats import RML2018_CLASSES, RML2018_SNRS_DB  # noqa: E402

TARGET_FPS = 3000


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-per-cell", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    fpc = args.frames_per_cell
    n_frames = len(RML2018_CLASSES) * len(RML2018_SNRS_DB) * fpc
    lay = synth.LAYOUTS["rml2018"]
    synth.generate_frames("QPSK", 0, 8, synth._cell_rng(lay, "QPSK", 0, 0, 0))  # warm caches

    def generate_only():
        for name in RML2018_CLASSES:
            for snr in RML2018_SNRS_DB:
                for _ in synth._generate_cell(lay, name, snr, fpc, args.seed):
                    pass

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synth_bench.hdf5"
        gen_wall, gen_cpu = _timed(generate_only)
        write_wall, write_cpu = _timed(lambda: synth.write_rml2018(out, fpc, seed=args.seed))
        size_mib = out.stat().st_size / 2 ** 20
    result = {
        "frames": n_frames,
        "frames_per_cell": fpc,
        "generate_fps_wall": n_frames / gen_wall,
        "generate_fps_cpu": n_frames / gen_cpu,
        "write_fps_wall": n_frames / write_wall,
        "write_fps_cpu": n_frames / write_cpu,
        "file_mib": size_mib,
        "load_average_1min": os.getloadavg()[0],
    }
    print(f"rml2018, {n_frames} frames (24 x 26 x {fpc}), one core, {size_mib:.0f} MiB file")
    print(f"  generate only      : {result['generate_fps_wall']:7.0f} frames/s wall, "
          f"{result['generate_fps_cpu']:7.0f} frames/s CPU")
    print(f"  generate + HDF5    : {result['write_fps_wall']:7.0f} frames/s wall, "
          f"{result['write_fps_cpu']:7.0f} frames/s CPU   (target >= {TARGET_FPS})")
    print(f"  load average (1 min): {result['load_average_1min']:.2f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
