"""Evaluate a checkpoint on a RadioML split: overall, per-SNR and per-class accuracy and the
confusion matrix, written as `evaluation.json` and two PNG plots.

    python -m flows.evaluate --checkpoint build/train/bacalhaunet_w6a6/best.pt --data synthetic

The model, its bit widths and (for `--data synthetic`) the synthetic file it was trained on come
from the checkpoint; the split is the published one (`flows.train.make_splits`). Predictions are
the argmax over all of the model's outputs, as the deployed model computes them, also when the
model was trained on a class subset (the subset only selects which frames are scored).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from flows.errors import ToolchainError
from flows.fileio import atomic_write_text

EVAL_JSON = "evaluation.json"
ACCURACY_PNG = "accuracy_vs_snr.png"
CONFUSION_PNG = "confusion_matrix.png"


@dataclass
class Evaluation:
    """What one evaluation measured; accuracies are fractions (0..1)."""

    model: str  # zoo model name
    weight_bits: int
    act_bits: int
    checkpoint: str | None  # file the weights came from (None: a model object)
    data: str  # dataset file
    split: str  # "train", "val" or "test" of the published split
    snr_min_db: int | None  # SNR filter applied (None: no bound)
    snr_max_db: int | None
    class_names: list[str]  # every class of the format: the axes of `confusion`
    classes_scored: list[str]  # classes whose frames were scored
    frames: int
    accuracy: float
    per_snr: list[dict] = field(default_factory=list)  # {snr_db, frames, accuracy}
    per_class: list[dict] = field(default_factory=list)  # {class, frames, accuracy}
    confusion: list[list[int]] = field(default_factory=list)  # [true][predicted] frame counts

    def to_dict(self) -> dict:
        return asdict(self)

    def accuracy_by_snr(self) -> dict[int, float]:
        return {row["snr_db"]: row["accuracy"] for row in self.per_snr}


def predict(model: nn.Module, loader, input_shape: Sequence[int]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predicted class, true class, SNR dB) of every frame of `loader`, in eval mode."""
    model.eval()
    preds, labels, snrs = [], [], []
    with torch.no_grad():
        for x, y, snr in loader:
            logits = model(x.view(len(x), *input_shape))
            preds.append(logits.argmax(1).numpy())
            labels.append(y.numpy())
            snrs.append(snr.numpy())
    if not preds:
        raise ToolchainError("nothing to evaluate: the selection holds no frame.")
    return np.concatenate(preds), np.concatenate(labels), np.concatenate(snrs)


def summarize(pred: np.ndarray, labels: np.ndarray, snrs_db: np.ndarray,
              class_names: Sequence[str], **meta) -> Evaluation:
    """An `Evaluation` from per-frame predictions; `meta` fills the descriptive fields."""
    pred, labels, snrs_db = (np.asarray(a, dtype=np.int64) for a in (pred, labels, snrs_db))
    n = len(class_names)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    correct = pred == labels
    per_snr = [{"snr_db": int(s), "frames": int((snrs_db == s).sum()),
                "accuracy": float(correct[snrs_db == s].mean())} for s in np.unique(snrs_db)]
    present = np.unique(labels)
    per_class = [{"class": class_names[c], "frames": int((labels == c).sum()),
                  "accuracy": float(correct[labels == c].mean())} for c in present]
    return Evaluation(class_names=list(class_names),
                      classes_scored=[class_names[c] for c in present], frames=len(pred),
                      accuracy=float(correct.mean()), per_snr=per_snr, per_class=per_class,
                      confusion=confusion.tolist(), **meta)


def write_evaluation(ev: Evaluation, out_dir: Path) -> list[Path]:
    """evaluation.json, accuracy_vs_snr.png and confusion_matrix.png in `out_dir`."""
    from flows.plots import plot_accuracy_vs_snr, plot_confusion

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / EVAL_JSON, json.dumps(ev.to_dict(), indent=1) + "\n")
    label = f"{ev.model} w{ev.weight_bits}a{ev.act_bits}, {ev.split} split"
    snr = plot_accuracy_vs_snr([r["snr_db"] for r in ev.per_snr],
                               [r["accuracy"] for r in ev.per_snr], out_dir / ACCURACY_PNG,
                               title=f"{label}: {ev.frames} frames", overall=ev.accuracy)
    conf = plot_confusion(np.array(ev.confusion), ev.class_names, out_dir / CONFUSION_PNG,
                          title=f"{label}, all SNRs")
    return [out_dir / EVAL_JSON, snr, conf]


def print_summary(ev: Evaluation, out_dir: Path | None = None) -> None:
    from rich.console import Console

    by_snr = " ".join(f"{r['snr_db']:+d}:{100 * r['accuracy']:.0f}" for r in ev.per_snr)
    Console(stderr=True, soft_wrap=True).print(
        f"{ev.model} w{ev.weight_bits}a{ev.act_bits} on {ev.split} ({ev.frames} frames): "
        f"accuracy {100 * ev.accuracy:.2f} %; per SNR (dB:%) {by_snr}"
        + (f"; written to {out_dir}" if out_dir else ""), highlight=False)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flows.evaluate",
                                description="Accuracy (overall, per SNR, per class) and confusion "
                                            "matrix of a checkpoint on a RadioML split.")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint (flows.train)")
    p.add_argument("--data", required=True, metavar="FILE|synthetic",
                   help="RadioML file, or 'synthetic' (the checkpoint's synthetic file if it was "
                        "trained on one, else generated and cached under data/)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test",
                   help="published split part (default test)")
    p.add_argument("--snr-min", type=int, help="lowest SNR in dB (default: all)")
    p.add_argument("--snr-max", type=int, help="highest SNR in dB (default: all)")
    p.add_argument("--classes", nargs="+", metavar="CLASS",
                   help="classes to score (default: those the checkpoint was trained on)")
    p.add_argument("--out", type=Path, help="output directory (default build/evaluate/"
                                             "<model>_<checkpoint name>_<split>)")
    p.add_argument("--batch-size", type=int, default=512, help="frames per batch (default 512)")
    p.add_argument("--synthetic-frames-per-cell", type=int,
                   help="synthetic file size (default: the checkpoint's, else the train default)")
    p.add_argument("--synthetic-seed", type=int, help="synthetic file seed (default: the "
                                                      "checkpoint's, else 0)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from flows.train import evaluate_checkpoint

    args = _parser().parse_args(argv)
    try:
        ev, out = evaluate_checkpoint(
            args.checkpoint, args.data, split=args.split, snr_min=args.snr_min,
            snr_max=args.snr_max, classes=args.classes, out_dir=args.out,
            batch_size=args.batch_size, synthetic_frames_per_cell=args.synthetic_frames_per_cell,
            synthetic_seed=args.synthetic_seed)
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_summary(ev, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
