"""Train the shipped checkpoints `models/weights/<name>.pt` and write `models/weights/README.md`.

    PYTHONPATH=. python benchmarks/train_shipped.py                      # synthetic data
    PYTHONPATH=. python benchmarks/train_shipped.py --models bacalhaunet   # one model
    PYTHONPATH=. python benchmarks/train_shipped.py --data GOLD_XYZ_OSC.0001_1024.hdf5

With synthetic data (the default) each model gets a short run sized to about 10 minutes of
training on a shared 2-core machine (`SYNTHETIC_RUNS`): the synthetic generator will be revised,
and this one command retrains everything on its new output (the cache file name carries a hash
of the generator). With `--data` pointing at the real RadioML 2018.01A file, every model trains
with its published recipe (`flows.train.RECIPES`: 20 epochs, batch 1024, ...) instead.

The shipped file is best.pt without the training state (`flows.train.inference_checkpoint`),
with its test-split evaluation (overall and per-SNR accuracy) and the run's metadata. The README
table is rebuilt from the metadata of every shipped file.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from flows.errors import ToolchainError
from flows.fileio import atomic_write_text
from flows.train import (
    TrainConfig,
    inference_checkpoint,
    read_checkpoint,
    save_checkpoint,
    train,
)
from models.checkpoints import SHIPPED_DIR

SYNTHETIC_FRAMES_PER_CELL = 64  # 39,936 frames; 57 train rows per cell before validation


@dataclass(frozen=True)
class SyntheticRun:
    """The short synthetic-data run of one shipped model (everything else: the recipe)."""

    model: str
    epochs: int
    max_frames: int | None = None  # cap on training frames (a seeded subset)
    batch_size: int = 128  # the recipe's 1024 gives too few steps on ~20k frames
    snr_min: int = -6  # BacalhauNet's recipe; for all here: few epochs, spent where signal is


# The FINN-mappable zoo models, in shipping order. Sized for at most about 10 minutes of
# training each on 2 cores, from benchmarks/bench_train.py at batch 256 (an idle machine:
# BacalhauNet 220-390 frames/s, VGG10 125-210, VGG10 w4a4-32 470-800; under load from other
# jobs the same steps ran 3-8x slower). 5 epochs = one cosine cycle (T_0 = 5).
SYNTHETIC_RUNS: tuple[SyntheticRun, ...] = (
    SyntheticRun("bacalhaunet", epochs=5),
    SyntheticRun("vgg10-w4a4-32", epochs=5),
    SyntheticRun("vgg10", epochs=5, max_frames=12000),
)


def config_for(model: str, data: str) -> TrainConfig:
    out = Path("build") / "shipped" / model  # relative: the recorded command stays portable
    if data != "synthetic":
        return TrainConfig(model=model, data=data, out=out)
    run = {r.model: r for r in SYNTHETIC_RUNS}[model]
    return TrainConfig(model=model, data="synthetic", out=out, epochs=run.epochs,
                       batch_size=run.batch_size, max_frames=run.max_frames,
                       snr_min=run.snr_min, synthetic_frames_per_cell=SYNTHETIC_FRAMES_PER_CELL)


def publish(best: Path) -> Path:
    """models/weights/<model>.pt from a run's best.pt (training state dropped), with the length
    of the whole run from its last.pt; returns the path."""
    ckpt = inference_checkpoint(read_checkpoint(best))
    history = read_checkpoint(Path(best).with_name("last.pt"))["history"]
    ckpt["epochs_trained"] = len(history)
    ckpt["training_seconds"] = round(sum(h["seconds"] for h in history), 1)
    path = SHIPPED_DIR / f"{ckpt['model']}.pt"
    save_checkpoint(path, ckpt)
    return path


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def readme() -> str:
    """The README of models/weights, from the metadata of every shipped checkpoint."""
    files = sorted(SHIPPED_DIR.glob("*.pt"))
    ckpts = [(p, read_checkpoint(p)) for p in files]
    synthetic = any(c["dataset"].get("synthetic") for _, c in ckpts)
    lines = ["# Shipped checkpoints", ""]
    if synthetic:
        lines += ["**Trained on SYNTHETIC data** (`flows.synth`, RadioML 2018.01A layout), not on "
                  "the real RadioML file: these accuracies say nothing about real signals. The "
                  "weights exist so that the hardware flow has trained, non-random parameters "
                  "(realistic activation ranges and sparsity) to build and verify.", ""]
    lines += ["| model | bits (W/A) | file | data | training frames | epochs (best) | training "
              "time (s) | test accuracy (%) | at -10 / 0 / +10 / +20 dB (%) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for path, c in ckpts:
        ev, ds = c["evaluation"], c["dataset"]
        by_snr = {r["snr_db"]: r["accuracy"] for r in ev["per_snr"]}
        picks = " / ".join(_pct(by_snr[s]) if s in by_snr else "-" for s in (-10, 0, 10, 20))
        data = (f"SYNTHETIC, {ds['frames_per_cell']} frames/cell, seed {ds['seed']}, "
                f"{ds['generator']}" if ds.get("synthetic") else Path(ds["path"]).name)
        lines.append(f"| {c['model']} | {c['weight_bits']}/{c['act_bits']} | {path.name} | "
                     f"{data} | {c['split']['train_frames']} (SNR >= "
                     f"{c['split']['snr_min_db'] if c['split']['snr_min_db'] is not None else -20}"
                     f" dB) | {c['epochs_trained']} ({c['epoch']}) | {c['training_seconds']} | "
                     f"{_pct(ev['accuracy'])} | {picks} |")
    snrs = sorted({r["snr_db"] for _, c in ckpts for r in c["evaluation"]["per_snr"]})
    lines += ["", "Test accuracy (%) per SNR (test split of the same file, every SNR, "
              f"{ckpts[0][1]['evaluation']['frames'] if ckpts else 0} frames):", "",
              "| SNR (dB) | " + " | ".join(c["model"] for _, c in ckpts) + " |",
              "|---|" + "---|" * len(ckpts)]
    for s in snrs:
        cells = []
        for _, c in ckpts:
            acc = {r["snr_db"]: r["accuracy"] for r in c["evaluation"]["per_snr"]}.get(s)
            cells.append(_pct(acc) if acc is not None else "-")
        lines.append(f"| {s:+d} | " + " | ".join(cells) + " |")
    lines += ["", "## Retrain", "",
              "On synthetic data (after a generator change, this is the whole job; about 10 "
              "minutes per model on 2 cores):", "", "```",
              "PYTHONPATH=. python benchmarks/train_shipped.py", "```", "",
              "On the real RadioML 2018.01A file, with each model's published recipe "
              "(20 epochs, batch 1024, Adam lr 0.01, cosine warm restarts; days on a CPU):", "",
              "```", "PYTHONPATH=. python benchmarks/train_shipped.py --data "
              "/path/to/GOLD_XYZ_OSC.0001_1024.hdf5", "```", "",
              "The exact command of each run is in its checkpoint (`command`); a single model: "
              "`python -m flows.train --model MODEL --data FILE`.", ""]
    for path, c in ckpts:
        lines.append(f"- `{path.name}`: `{' '.join(c['command'])}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[r.model for r in SYNTHETIC_RUNS],
                    choices=[r.model for r in SYNTHETIC_RUNS])
    ap.add_argument("--data", default="synthetic", help="'synthetic' (default) or the real file")
    ap.add_argument("--publish-only", action="store_true",
                    help="no training: publish the finished runs in build/shipped/ again")
    args = ap.parse_args(argv)
    try:
        for model in args.models:
            cfg = config_for(model, args.data)
            best = cfg.out_dir / "best.pt" if args.publish_only else train(cfg).best
            path = publish(best)
            print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
        atomic_write_text(SHIPPED_DIR / "README.md", readme())
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {SHIPPED_DIR / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
