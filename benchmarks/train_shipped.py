"""Train the shipped checkpoints `models/weights/<name>.pt` and write `models/weights/README.md`.

    PYTHONPATH=. python benchmarks/train_shipped.py                      # synthetic data
    PYTHONPATH=. python benchmarks/train_shipped.py --models bacalhaunet   # one model
    PYTHONPATH=. python benchmarks/train_shipped.py --data GOLD_XYZ_OSC.0001_1024.hdf5
    PYTHONPATH=. python benchmarks/train_shipped.py --data RML2016.10a_dict.pkl

With synthetic data (the default) each model gets a short run sized to about 10 minutes of
training on a shared 2-core machine (`SYNTHETIC_RUNS`), on a synthetic file of its own format
(RadioML 2018.01A or 2016.10a layout): the synthetic generator will be revised, and this one
command retrains everything on its new output (the cache file name carries a hash of the
generator). With `--data` pointing at a real RadioML file, the models of that file's format
train with their published recipe (`flows.train.RECIPES`: 20 epochs, batch 1024, ...; plus
`REAL_DATA_OPTIONS`) instead.

The shipped file is best.pt without the training state (`flows.train.inference_checkpoint`),
with its test-split evaluation (overall and per-SNR accuracy) and the run's metadata. The README
table is rebuilt from the metadata of every shipped file.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from flows.errors import ToolchainError
from flows.fileio import atomic_write_text
from flows.train import (
    REPO_ROOT,
    TrainConfig,
    generator_tag,
    inference_checkpoint,
    model_from_checkpoint,
    read_checkpoint,
    save_checkpoint,
    train,
)
from models.checkpoints import SHIPPED_DIR, pack_weights

SYNTHETIC_FRAMES_PER_CELL = 64  # RML2018: 39,936 frames; 57 train rows per cell before validation


@dataclass(frozen=True)
class SyntheticRun:
    """The short synthetic-data run of one shipped model (everything else: the recipe)."""

    model: str
    epochs: int
    max_frames: int | None = None  # cap on training frames (a seeded subset)
    batch_size: int = 128  # the recipe's 1024 gives too few steps on ~20k frames
    lr: float | None = None  # None: the recipe's
    snr_min: int = -6  # BacalhauNet's recipe; for all here: few epochs, spent where signal is
    frames_per_cell: int = SYNTHETIC_FRAMES_PER_CELL  # of the synthetic file (its cache name)
    prune_rounds: int = 0  # magnitude pruning rounds after `epochs` (flows.train)
    prune_fraction: float | None = None  # share of the live weights removed per round
    finetune_epochs: int = 1  # after each pruning round
    kd_from_unpruned: bool = False  # distil the fine-tuning from the unpruned model
    note: str = ""  # what this short run leaves out of the recipe, for the README


# Zoo models without a shipped checkpoint, and why (the README lists them). Measured on the
# synthetic RML2016 file (frames of RMS ~0.006, as the real 2016.10a frames): with PyTorch's
# default initialisation the bias terms swamp the signal, the logits' spread over a batch is
# ~3e-5 (Hakimi7) and the first conv's weight gradient ~3e-7; training loss stays at ln 11 (chance)
# with Adam lr 0.01, 0.001 and 0.0003, zero biases or Glorot weights (Keras' defaults), up to 8
# epochs. ULCNN, with BatchNorm after its first conv, trains on the same file. A fix belongs to
# the model definitions (input scaling or normalisation), not to the training run. O'Shea's
# gradients do flow (logit spread 0.06), but it learns nothing in the few steps that fit.
NOT_SHIPPED: dict[str, str] = {}  # every zoo model ships (O'Shea's in 8-bit integer form)

# Recipe elements that flows.train does not default (see flows.train.RECIPES), used with the
# real file. Imperial: 15 % of the live weights per round, 20 fine-tuning epochs per round,
# distilled from the unpruned model; the round count is not in the notes: 3 rounds assumed.
REAL_DATA_OPTIONS: dict[str, dict] = {
    "imperial": dict(prune_rounds=3, prune_fraction=0.15, finetune_epochs=20,
                     kd_from_unpruned=True),
}


# Every zoo model, in shipping order. Sized for at most about 10 minutes of training each on
# 2 cores, from benchmarks/bench_train.py at batch 256 (an idle machine: BacalhauNet 220-390
# frames/s, VGG10 125-210, VGG10 w4a4-32 470-800; under load from other jobs the same steps ran
# 3-8x slower) and, for the others, training steps at batch 128 and one thread on the loaded
# machine (ULCNN, Hakimi7 and Imperial ~175 frames/s, O'Shea ~35). 5 epochs = one cosine cycle
# (T_0 = 5). The RML2016 models share one synthetic file of 128 frames per cell (28,160 frames;
# 5,888 train rows at SNR >= -6 dB, 14,080 test rows).
SYNTHETIC_RUNS: tuple[SyntheticRun, ...] = (
    SyntheticRun("bacalhaunet", epochs=5),
    # bacalhaunet's run, so that the two forms compare (shipped with --generator e723b3b711:
    # the very frames bacalhaunet.pt was trained on)
    SyntheticRun("bacalhaunet-faithful", epochs=5,
                 note="bacalhaunet's run on its training file; diverged after epoch 1 at lr "
                      "0.01 (see compare_bacalhaunet)"),
    SyntheticRun("vgg10-w4a4-32", epochs=5),
    SyntheticRun("vgg10", epochs=5, max_frames=12000),
    SyntheticRun("ulcnn", epochs=10, frames_per_cell=128),  # rotation augmentation: recipe
    # RML2016 CNNs without a normalisation layer: they learn since their constant input gain
    # (models/oshea.py INPUT_GAIN); before it they stayed at chance
    SyntheticRun("hakimi7", epochs=20, frames_per_cell=128, lr=1e-3),
    # O'Shea learns little in the steps that fit: this run reached 12.4 % (chance 9.1 %); runs
    # on all 6,382 frames for 12-15 epochs at lr 1e-3 or 3e-4 stayed at chance (loss ln 11
    # from epoch 2: the 2.6 M-weight dense layer's ReLUs die)
    SyntheticRun("oshea", epochs=5, frames_per_cell=128, max_frames=5000, lr=1e-3,
                 note="5,000 training frames, 5 epochs: 12.4 %, barely above chance"),
    SyntheticRun("imperial", epochs=3, max_frames=12000, prune_rounds=2, prune_fraction=0.15,
                 finetune_epochs=2, kd_from_unpruned=True,
                 note="12,000 training frames; pruning 2 x 15 % with 2 (not 20) fine-tuning "
                      "epochs each, distilled from the unpruned model"),
)


def config_for(model: str, data: str) -> TrainConfig:
    out = Path("build") / "shipped" / model  # relative: the recorded command stays portable
    if data != "synthetic":
        return TrainConfig(model=model, data=data, out=out, **REAL_DATA_OPTIONS.get(model, {}))
    run = {r.model: r for r in SYNTHETIC_RUNS}[model]
    pruning = dict(prune_rounds=run.prune_rounds, prune_fraction=run.prune_fraction,
                   finetune_epochs=run.finetune_epochs) if run.prune_rounds else {}
    return TrainConfig(model=model, data="synthetic", out=out, epochs=run.epochs,
                       batch_size=run.batch_size, lr=run.lr, max_frames=run.max_frames,
                       snr_min=run.snr_min, synthetic_frames_per_cell=run.frames_per_cell,
                       kd_from_unpruned=run.kd_from_unpruned, **pruning)


def pin_generator(cfg: TrainConfig, tag: str) -> TrainConfig:
    """`cfg` on the cached synthetic file of generator version `tag` (data/synthetic/, written
    by an earlier run) instead of the current generator's: to train a model on exactly the
    frames another shipped checkpoint saw."""
    from flows.train import SYNTHETIC_DIR, synthetic_path

    fmt = cfg.spec.dataset
    name = synthetic_path(fmt, cfg.synthetic_frames_per_cell, cfg.synthetic_seed).name
    path = SYNTHETIC_DIR / name.replace(generator_tag(), tag)
    if not path.is_file():
        raise ToolchainError(f"--generator {tag}: no cached synthetic file {path} (the cache "
                             "holds the files of generator versions that were trained on).")
    return dataclasses.replace(cfg, data=str(path.relative_to(REPO_ROOT)))


def synthetic_record(ckpt: dict) -> dict:
    """The dataset record of a run on a pinned synthetic cache file, as `resolve_data` writes
    it for --data synthetic (the file name carries format, frames per cell, seed, generator)."""
    m = re.fullmatch(r"(rml2018|rml2016)_fpc(\d+)_seed(\d+)_([0-9a-f]{10})\.(h5|pkl)",
                     Path(ckpt["dataset"]["path"]).name)
    if m is None:
        return ckpt["dataset"]
    return {**ckpt["dataset"], "synthetic": True, "frames_per_cell": int(m[2]),
            "seed": int(m[3]), "generator": f"flows.synth@{m[4]}"}


def models_for(data: str) -> list[str]:
    """The models one --data trains by default: every one for synthetic data, else those of
    the file's format (RadioML 2018.01A or 2016.10a)."""
    names = [r.model for r in SYNTHETIC_RUNS if r.model not in NOT_SHIPPED]
    if data == "synthetic":
        return names
    from flows.radioml import open_radioml
    from models.registry import get_model_spec

    source = open_radioml(data)
    fmt = "rml2018" if type(source).__name__ == "RML2018File" else "rml2016"
    source.close()
    return [n for n in names if get_model_spec(n).dataset == fmt]


def publish(best: Path) -> Path:
    """models/weights/<model>.pt from a run's best.pt (training state dropped), with the length
    of the whole run from its last.pt; returns the path."""
    ckpt = inference_checkpoint(read_checkpoint(best))
    history = read_checkpoint(Path(best).with_name("last.pt"))["history"]
    ckpt["epochs_trained"] = len(history)
    ckpt["training_seconds"] = round(sum(h["seconds"] for h in history), 1)
    ckpt["dataset"] = synthetic_record(ckpt)
    if ckpt["dataset"].get("synthetic"):
        ckpt["shipping_note"] = {r.model: r for r in SYNTHETIC_RUNS}[ckpt["model"]].note
    ckpt = pack_weights(ckpt, model_from_checkpoint(best)[0])  # integer weights: 1/4 the size
    path = SHIPPED_DIR / f"{ckpt['model']}.pt"
    save_checkpoint(path, ckpt)
    return path


FORMS_RESULT = Path(__file__).resolve().parent / "results" / "bacalhaunet_forms.json"


def forms_section() -> list[str]:
    """The faithful/deployable BacalhauNet comparison (benchmarks/compare_bacalhaunet.py), if
    it has been run."""
    import json

    if not FORMS_RESULT.is_file():
        return []
    r = json.loads(FORMS_RESULT.read_text())
    lines = ["", "## BacalhauNet: faithful against deployable", "",
             f"`benchmarks/compare_bacalhaunet.py`, both on the test split of "
             f"`{Path(r['data']['path']).name}` ({next(iter(r['forms'].values()))['frames']} "
             "frames); cost from `flows.cost` (sparsity discounted, score against the "
             "challenge's 8-bit VGG10):", "",
             "| form | test accuracy (%) | at -10 / 0 / +10 / +20 dB (%) | bops (M) | "
             "bops, add outputs at 7 bits (M) | weight bits (k) | zero weights | score |",
             "|---|---|---|---|---|---|---|---|"]
    for form, f in r["forms"].items():
        snr = f["accuracy_by_snr"]
        recount = f["total_bops_add_at_int_width"]
        lines.append(f"| {form} | {_pct(f['accuracy'])} | "
                     + " / ".join(_pct(snr[str(s)]) for s in (-10, 0, 10, 20))
                     + f" | {f['total_bops'] / 1e6:.2f} | "
                     + ("-" if recount is None else f"{recount / 1e6:.2f}")
                     + f" | {f['total_mem_w_bits'] / 1e3:.2f} | {f['zero_weights']} / "
                     f"{f['total_weights']} | {f['challenge_score']:.4f} |")
    for pair in r.get("pairs", []):
        d, f = pair["forms"]["deployable"], pair["forms"]["faithful"]
        lines += ["", f"Another pair, {pair['label']} ({d['training_frames']} training frames, "
                  f"test split as above): deployable {_pct(d['accuracy'])} %, faithful "
                  f"{_pct(f['accuracy'])} %; scores {d['challenge_score']:.4f} / "
                  f"{f['challenge_score']:.4f}. Commands: `{' '.join(d['command'])}`; "
                  f"`{' '.join(f['command'])}`."]
    lines += ["", "The forms have the same layers and weight count: the cost metric differs only "
              "through the trained weights' exact zeros. qonnx costs the DW conv after each "
              "residual add at 32 input bits in both forms (the add output carries no "
              "quantizer); on the deployable form's shared grid the sum is an exact unsigned "
              "7-bit integer (what FINN streams), hence the recount column; the faithful sum "
              "lies on no integer grid. \"faithful -> deployable\" is the faithful checkpoint "
              "loaded into the deployable form (each add's two scales merged into the larger, "
              "as for the published weights), without retraining."]
    return lines


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def readme() -> str:
    """The README of models/weights, from the metadata of every shipped checkpoint."""
    files = sorted(SHIPPED_DIR.glob("*.pt"))
    ckpts = [(p, read_checkpoint(p)) for p in files]
    synthetic = any(c["dataset"].get("synthetic") for _, c in ckpts)
    lines = ["# Shipped checkpoints", ""]
    if synthetic:
        lines += ["**Trained on SYNTHETIC data** (`flows.synth`, in the RadioML 2018.01A layout "
                  "for the 24-class models and the 2016.10a layout for the 11-class ones), not on "
                  "the real RadioML files: these accuracies say nothing about real signals. The "
                  "weights exist so that the hardware flow has trained, non-random parameters "
                  "(realistic activation ranges and sparsity) to build and verify. Each run is "
                  "short (minutes on a loaded 2-core machine), so the accuracies are also far "
                  "below what the same models reach on the same synthetic data with the full "
                  "recipe.", ""]
    lines += ["| model | bits (W/A) | file | data | training frames | epochs (best) | training "
              "time (s) | test accuracy (%) | at -10 / 0 / +10 / +20 dB (%; RML2016: +18 dB) "
              "| notes |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for path, c in ckpts:
        ev, ds = c["evaluation"], c["dataset"]
        by_snr = {r["snr_db"]: r["accuracy"] for r in ev["per_snr"]}
        top = max(s for s in by_snr if s <= 20)  # +20 dB; RML2016 ends at +18
        picks = " / ".join(_pct(by_snr[s]) if s in by_snr else "-" for s in (-10, 0, 10, top))
        data = (f"SYNTHETIC {ds['format']}, {ds['frames_per_cell']} frames/cell, seed "
                f"{ds['seed']}, {ds['generator']}" if ds.get("synthetic")
                else Path(ds["path"]).name)
        cfg = c["config"]
        notes = [c.get("shipping_note") or ""]
        if cfg.get("rotate_augment"):
            notes.append("rotation augmentation")
        if c.get("pruning_rounds_done"):
            notes.append(f"{100 * c['sparsity']['sparsity']:.0f} % of weights zero")
        lines.append(f"| {c['model']} | {c['weight_bits']}/{c['act_bits']} | {path.name} | "
                     f"{data} | {c['split']['train_frames']} (SNR >= "
                     f"{c['split']['snr_min_db'] if c['split']['snr_min_db'] is not None else -20}"
                     f" dB) | {c['epochs_trained']} ({c['epoch']}) | {c['training_seconds']} | "
                     f"{_pct(ev['accuracy'])} | {picks} | {'; '.join(n for n in notes if n)} |")
    for fmt, title in (("rml2018", "RadioML 2018.01A layout, 24 classes, 2 x 1024"),
                       ("rml2016", "RadioML 2016.10a layout, 11 classes, 2 x 128")):
        group = [(p, c) for p, c in ckpts if c["dataset"]["format"] == fmt]
        if not group:
            continue
        snrs = sorted({r["snr_db"] for _, c in group for r in c["evaluation"]["per_snr"]})
        lines += ["", f"Test accuracy (%) per SNR, {title} (test split of each model's file, "
                  f"every SNR, {group[0][1]['evaluation']['frames']} frames):", "",
                  "| SNR (dB) | " + " | ".join(c["model"] for _, c in group) + " |",
                  "|---|" + "---|" * len(group)]
        for s in snrs:
            cells = []
            for _, c in group:
                acc = {r["snr_db"]: r["accuracy"] for r in c["evaluation"]["per_snr"]}.get(s)
                cells.append(_pct(acc) if acc is not None else "-")
            lines.append(f"| {s:+d} | " + " | ".join(cells) + " |")
    missing = [(name, why) for name, why in NOT_SHIPPED.items()
               if not (SHIPPED_DIR / f"{name}.pt").is_file()]
    if missing:
        lines += ["", "Not shipped (the hardware flow builds them with untrained weights):", ""]
        lines += [f"- `{name}`: {why} (see `NOT_SHIPPED` in benchmarks/train_shipped.py)."
                  for name, why in missing]
    lines += forms_section()
    lines += ["", "## Retrain", "",
              "On synthetic data (after a generator change, this is the whole job; about 10 "
              "minutes per model on 2 cores):", "", "```",
              "PYTHONPATH=. python benchmarks/train_shipped.py", "```", "",
              "On the real files, with each model's published recipe (20 epochs, batch 1024, "
              "Adam lr 0.01, cosine warm restarts; BacalhauNet on SNR >= -6 dB with weight "
              "decay; ULCNN with rotation augmentation; Imperial with its auxiliary classifiers "
              "and 3 pruning rounds of 15 % with 20 fine-tuning epochs each, distilled from the "
              "unpruned model; days on a CPU). The RadioML 2018.01A file trains the 24-class "
              "models, the 2016.10a pickle the 11-class ones:", "",
              "```", "PYTHONPATH=. python benchmarks/train_shipped.py --data "
              "/path/to/GOLD_XYZ_OSC.0001_1024.hdf5",
              "PYTHONPATH=. python benchmarks/train_shipped.py --data "
              "/path/to/RML2016.10a_dict.pkl", "```", "",
              "The exact command of each run is in its checkpoint (`command`); a single model: "
              "`python -m flows.train --model MODEL --data FILE`.", ""]
    for path, c in ckpts:
        lines.append(f"- `{path.name}`: `{' '.join(c['command'])}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", choices=[r.model for r in SYNTHETIC_RUNS],
                    help="default: every model of --data's format")
    ap.add_argument("--data", default="synthetic", help="'synthetic' (default) or the real file")
    ap.add_argument("--publish-only", action="store_true",
                    help="no training: publish the finished runs in build/shipped/ again")
    ap.add_argument("--generator", metavar="TAG",
                    help="synthetic data: train on the cached file of this generator version "
                         "(e.g. the one another shipped checkpoint was trained on)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: the machine is shared)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    try:
        models = args.models or models_for(args.data)
        for model in models:
            cfg = config_for(model, args.data)
            if args.generator:
                cfg = pin_generator(cfg, args.generator)
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
