"""Accuracy against bit width: train (or fine-tune) one model at several widths.

    python -m flows.sweep --model bacalhaunet --bits 4 6 8 --data synthetic --epochs 5
    python -m flows.sweep --model vgg10 --bits 4 6 --data FILE --init vgg10_w8.pt --epochs 3

Every option other than --bits and --out is a `flows.train` option, applied at each width; with
--init each width is fine-tuned from that checkpoint (--init-any-bits implied). Each width trains
into OUT/w<W>a<W>/; the table goes to OUT/sweep.json and OUT/sweep.md, the plot to
OUT/accuracy_vs_bits.png.

Cost: each width's best checkpoint is costed by `flows.cost.sweep_cost` (bit operations, weight
bits, challenge score against the 8-bit VGG10); the plot shows accuracy against that score.
`run_sweep`'s `cost_fn` hook takes any callable (model, checkpoint dict) -> {name: number},
or None for accuracy only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from flows.errors import ToolchainError
from flows.fileio import atomic_write_text
from flows.train import (
    REPO_ROOT,
    TrainConfig,
    config_from_args,
    model_from_checkpoint,
    train,
)

CostFn = Callable[..., dict]  # (model, checkpoint dict) -> {"total_bops": ..., ...}
NO_COST_NOTE = "accuracy only: no cost computed (run_sweep was given no cost_fn)"


@dataclass
class SweepRow:
    bits: int  # weight and activation bits
    test_accuracy: float  # best.pt on the test split, every SNR (fraction)
    best_val_accuracy: float
    epochs: int
    train_seconds: float
    checkpoint: str  # best.pt of this width
    cost: dict = field(default_factory=dict)  # from cost_fn; empty: accuracy only


@dataclass
class SweepResult:
    model: str
    data: str
    note: str
    rows: list[SweepRow]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def markdown(self) -> str:
        cost_keys = sorted({k for r in self.rows for k in r.cost})
        head = ["bits (W/A)", "test accuracy (%)", "best val accuracy (%)", "epochs",
                "train time (s)", *cost_keys]
        lines = [f"# Bit-width sweep: {self.model}", "", f"Data: {self.data}. {self.note}.", "",
                 "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [f"{r.bits}/{r.bits}", f"{100 * r.test_accuracy:.2f}",
                     f"{100 * r.best_val_accuracy:.2f}", str(r.epochs), f"{r.train_seconds:.0f}",
                     *(str(r.cost.get(k, "")) for k in cost_keys)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def run_sweep(base: TrainConfig, bits: Sequence[int], out_dir: Path,
              cost_fn: CostFn | None = None) -> SweepResult:
    """Train `base` at each width in `bits` into out_dir/w<W>a<W>; write the table and plot."""
    from flows.plots import plot_accuracy_vs_bits

    if not bits or len(set(bits)) != len(bits):
        raise ToolchainError(f"--bits {list(bits)}: expected distinct bit widths.")
    if base.resume is not None:
        raise ToolchainError("a sweep starts its runs fresh; --resume one width with "
                             "flows.train instead.")
    rows = []
    for b in sorted(bits):
        cfg = dataclasses.replace(base, bits=b, out=Path(out_dir) / f"w{b}a{b}",
                                  init_any_bits=base.init is not None)
        result = train(cfg)
        cost = {}
        if cost_fn is not None:
            model, ckpt = model_from_checkpoint(result.best)
            cost = dict(cost_fn(model, ckpt))
        rows.append(SweepRow(b, result.test_accuracy, result.best_val_accuracy,
                             len(result.history), round(result.seconds, 1), str(result.best),
                             cost))
    sweep = SweepResult(base.model, base.data, "accuracy and cost" if cost_fn else NO_COST_NOTE,
                        rows)
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "sweep.json", json.dumps(sweep.to_dict(), indent=2) + "\n")
    atomic_write_text(out_dir / "sweep.md", sweep.markdown())
    scores = [r.cost.get("challenge_score") for r in rows]
    plot_accuracy_vs_bits([r.bits for r in rows], [r.test_accuracy for r in rows],
                          out_dir / "accuracy_vs_bits.png",
                          title=f"{base.model}: test accuracy vs "
                          + ("cost score" if None not in scores else "bits (accuracy only)"),
                          score=None if None in scores else scores)
    return sweep


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m flows.sweep",
        description="Train a model at several bit widths; every other option is a "
                    "flows.train option (see python -m flows.train --help).")
    p.add_argument("--bits", type=int, nargs="+", required=True, metavar="W",
                   help="weight and activation bit widths")
    p.add_argument("--out", type=Path, help="output directory (default build/sweep/<model>)")
    args, rest = p.parse_known_args(argv)
    base = config_from_args(rest)
    out = args.out or REPO_ROOT / "build" / "sweep" / base.model
    try:
        from flows.cost import sweep_cost

        sweep = run_sweep(base, args.bits, out, cost_fn=sweep_cost)
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(sweep.markdown())
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
