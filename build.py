#!/usr/bin/env python
"""Build a quantized AMC model for an FPGA board: python build.py --model M --board B.

Runs the steps of flows.presets.DEFAULT_FLOW (ONNX_FLOW with --onnx FILE), writing every
checkpoint under --out (default build/<model>_<board>/). Use ./run to get the project's environment first:
    ./run python build.py --model bacalhaunet --board pynq-z2
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from flows.presets import ALL_STEPS
    from hw.boards import BOARDS
    from models.registry import load_zoo

    models = load_zoo()
    parser = argparse.ArgumentParser(
        prog="build.py", description="Build a quantized AMC model for an FPGA board.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="models:\n" + "\n".join(f"  {m.name:<22} {m.description}"
                                       for m in sorted(models.values(), key=lambda m: m.name))
        + "\nboards:\n" + "\n".join(f"  {b.name:<22} {b.description} ({b.fpga_part})"
                                    for b in BOARDS.values()))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", choices=sorted(models), metavar="MODEL",
                        help="zoo model (listed below)")
    source.add_argument("--onnx", type=Path, default=None, metavar="FILE",
                        help="build your own QONNX file instead of a zoo model; the graph is "
                             "the golden model (input: one 2 x 1024 or 2 x 128 frame)")
    parser.add_argument("--board", required=True, choices=list(BOARDS), metavar="BOARD",
                        help="target board (listed below)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: build/<model>_<board>/)")
    parser.add_argument("--bits", type=int, default=None, metavar="W",
                        help="weight and activation bit width (default: the model's own)")
    parser.add_argument("--weights", type=Path, default=None, metavar="CKPT",
                        help="checkpoint to load (default: the model's shipped checkpoint)")
    parser.add_argument("--data", type=Path, default=None, metavar="FILE",
                        help="RadioML-layout file for verification frames (default: synthetic)")
    parser.add_argument("--verify-frames", type=int, default=24, metavar="N",
                        help="frames every stage is verified on (default: 24)")
    parser.add_argument("--seed", type=int, default=0, help="seed for synthetic data (default 0)")
    parser.add_argument("--from", dest="from_step", choices=ALL_STEPS, default=None,
                        metavar="STEP", help=f"resume at STEP ({', '.join(ALL_STEPS)})")
    parser.add_argument("--until", dest="until_step", choices=ALL_STEPS, default=None,
                        metavar="STEP", help="stop after STEP")
    parser.add_argument("--target-fps", type=float, default=None, metavar="F",
                        help="frames/s the folding aims at (default: the board's maximum, one "
                             "input sample per clock cycle); lowered until the design fits")
    parser.add_argument("--clock-mhz", type=float, default=None, metavar="C",
                        help="accelerator clock (default: the board's)")
    parser.add_argument("--folding", type=Path, default=None, metavar="FILE",
                        help="apply this folding config (FINN JSON, e.g. an earlier build's "
                             "report/folding_config.json) instead of searching")
    args = parser.parse_args(argv)
    if args.onnx is not None:
        for option in ("bits", "weights"):
            if getattr(args, option) is not None:
                parser.error(f"--{option} cannot be combined with --onnx: the QONNX file fixes "
                             "the weights and bit widths")
    if args.bits is not None and not 2 <= args.bits <= 16:
        parser.error(f"--bits {args.bits}: expected an integer from 2 to 16")
    for name in ("target_fps", "clock_mhz"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            parser.error(f"--{name.replace('_', '-')} {value:g}: expected a positive number")
    if args.verify_frames < 1:
        parser.error(f"--verify-frames {args.verify_frames}: expected at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    from flows import background

    background.prestart()  # the checks' worker imports finn-plus while this imports torch
    try:
        return _main(argv)
    finally:
        background.discard_prestarted()


def _main(argv: list[str] | None) -> int:
    from flows.config import BuildConfig
    from flows.errors import ToolchainError
    from flows.presets import flow_for
    from flows.runner import console, run_flow

    args = parse_args(argv)
    name = args.model if args.onnx is None else args.onnx.stem
    cfg = BuildConfig(
        model=name, board=args.board,
        out_dir=args.out if args.out is not None else Path("build") / f"{name}_{args.board}",
        bits=args.bits, weights=args.weights, data=args.data, onnx=args.onnx,
        verify_frames=args.verify_frames, seed=args.seed,
        from_step=args.from_step, until_step=args.until_step, target_fps=args.target_fps,
        clock_mhz=args.clock_mhz, folding=args.folding)
    from hw.vendor import plan_vendor_steps

    try:
        if cfg.onnx is not None:
            cfg.model_spec  # reads and checks the file before any work  # noqa: B018
        plan = plan_vendor_steps(flow_for(cfg), cfg)
        if plan.error:
            raise ToolchainError(plan.error)
        run_flow(dataclasses.replace(cfg, until_step=plan.steps[-1]) if plan.skipped else cfg)
    except ToolchainError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted; finished steps keep their checkpoints.")
        return 130
    except Exception:  # noqa: BLE001  (a bug: keep the traceback, show one line)
        import traceback

        log = cfg.out_dir / "report" / "internal_error.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        console.print(f"[bold red]internal error[/bold red] (a bug in the toolchain, please "
                      f"report it with {log}): {traceback.format_exc().splitlines()[-1]}",
                      highlight=False)
        return 3
    console.print(f"Done: {cfg.out_dir} (reports in {cfg.report_dir}).")
    if plan.skipped:
        console.print(plan.message, highlight=False)
    return 0


if __name__ == "__main__":
    code = main()
    # Everything is written. Exempt the objects left (torch, finn-plus, onnx: millions) from
    # the interpreter's final garbage collection, half a second at every exit; atexit
    # handlers and stream flushing still run.
    import gc

    gc.freeze()
    sys.exit(code)
