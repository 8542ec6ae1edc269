"""Command line: python -m hw.driver --deploy DIR --data FILE [--snr-min A --snr-max B]
[--batch N] [--backend pynq|xrt|emulate] [--out DIR]."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from flows.errors import ToolchainError


def _parser() -> argparse.ArgumentParser:
    from hw.driver.backends import BACKENDS

    p = argparse.ArgumentParser(
        prog="python -m hw.driver",
        description="Run a test split through the FPGA accelerator of a deploy package in "
                    "batches; report overall and per-SNR accuracy, confusion matrix, "
                    "throughput and latency as JSON and PNG.")
    p.add_argument("--deploy", required=True, type=Path, metavar="DIR",
                   help="the deploy package (a build's deploy/ directory)")
    p.add_argument("--data", required=True, type=Path, metavar="FILE",
                   help="an .npz (x, y, snr; e.g. DIR/testset.npz) or, on the host, a RadioML "
                        "file whose published test split is used")
    p.add_argument("--snr-min", type=int, help="lowest SNR in dB (default: all)")
    p.add_argument("--snr-max", type=int, help="highest SNR in dB (default: all)")
    p.add_argument("--batch", type=int, default=256, help="frames per batch (default 256)")
    p.add_argument("--backend", choices=sorted(BACKENDS), default=None,
                   help="pynq (Zynq board), xrt (Alveo) or emulate (exact dataflow graph on "
                        "this host); default: the package's board kind")
    p.add_argument("--out", type=Path, help="output directory (default DIR/results_<backend>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from hw.driver.accelerator import Accelerator
    from hw.driver.evaluate import evaluate, open_frames

    args = _parser().parse_args(argv)
    try:
        acc_package_io = None
        backend = args.backend
        if backend is None:
            from hw.driver.package import DeployPackage

            acc_package_io = DeployPackage(args.deploy).io
            backend = "xrt" if acc_package_io.get("board_kind") == "alveo" else "pynq"
        acc = Accelerator(args.deploy, backend=backend, batch_size=args.batch)
        source = open_frames(args.data, acc.package.frame_shape, acc.package.n_classes,
                             args.snr_min, args.snr_max)
        out = args.out or args.deploy / f"results_{backend}"
        report = evaluate(acc, source, out, progress=not args.no_progress)
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ev, perf = report["evaluation"], report["performance"]
    by_snr = " ".join(f"{r['snr_db']:+d}:{100 * r['accuracy']:.0f}" for r in ev["per_snr"])
    print(f"{ev['frames']} frames on {report['backend']}: accuracy {100 * ev['accuracy']:.2f} %; "
          f"per SNR (dB:%) {by_snr}")
    print(f"throughput {perf['throughput_fps']:.0f} frames/s (accelerator stages "
          f"{perf['accelerator_throughput_fps']:.0f}), latency {perf['latency_us_per_frame']:.1f}"
          f" us per frame, {perf['latency_us_per_batch']:.0f} us per batch of {args.batch}")
    if "golden_agreement" in report:
        g = report["golden_agreement"]
        print(f"classes equal to the golden model's: {g['classes_equal']}/{g['frames']}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
