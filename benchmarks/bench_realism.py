"""How RadioML-like the synthetic frames are: the real-data VGG10 classifies them.

Usage: python benchmarks/bench_realism.py [--frames-per-cell 32] [--snr-min -20] [--seed 0]
           [--weights ../shared/reference/vgg10-challenge/pretrained_VGG10_w8a8_20.pth]
           [--json benchmarks/results/realism.json] [--png benchmarks/results/realism.png]

The judge is the 2021 challenge organisers' 8-bit VGG10, trained on the real RadioML 2018.01A
train split (about 93 % at +30 dB on the real test split), loaded through the project's import
of published checkpoints (`models.published`). It classifies `--frames-per-cell` frames of each
(class, SNR) cell made by `flows.synth.cell_frames` (in memory, the frames the writer would
store). Reported: accuracy per class and SNR, the mean per-class accuracy at SNR >= 10 dB (real
frames: about 0.9), per-class accuracy at +30 dB, and at SNR >= 10 dB what each class is taken for.

The judge measures, it does not train: nothing here feeds its outputs back into the generator.

Speed: the Brevitas model spends most of its time in fake-quantization bookkeeping; the script
runs a frozen float twin (the same quantized weights, BatchNorm, the same activation grids
round(x / s) clamped, Conv1d and MaxPool1d), checked against the Brevitas model on the first
frames before use (same class for >= 99 % of the frames, logits within 1e-3 for >= 85 % of them:
the rest is rounding-boundary flips from another float summation order).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy / torch are imported

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from flows import synth
from flows.rml_formats import RML2018_CLASSES, RML2018_SNRS_DB

DEFAULT_WEIGHTS = ROOT.parent / "shared" / "reference" / "vgg10-challenge" / \
    "pretrained_VGG10_w8a8_20.pth"
HIGH_SNR_DB = 10  # the headline: mean per-class accuracy at SNR >= this
GOAL_HIGH_SNR = 0.80  # issue 7: at least this at SNR >= 10 dB ...
GOAL_PER_CLASS_30DB = 0.50  # ... and every class above this at +30 dB


def load_judge(weights: Path):
    """The published VGG10 (Brevitas, through models.published) in eval mode."""
    from models.checkpoints import load_checkpoint
    from models.zoo import build_model

    if not weights.is_file():
        raise SystemExit(f"error: {weights}: the real-data VGG10 checkpoint is absent (see "
                         "../shared/reference/README.md); pass --weights FILE")
    model = build_model("vgg10", 8)
    load_checkpoint(model, weights, "vgg10", 8, 8)
    return model.eval()


class FrozenVGG10:
    """The judge's arithmetic as plain torch ops on (N, 2, L) frames (see module docstring)."""

    def __init__(self, model):
        import brevitas.nn as qnn
        import torch
        from torch import nn

        self.ops = []
        with torch.no_grad():
            for layer in model:
                if isinstance(layer, qnn.QuantHardTanh):
                    q = layer.act_quant
                    s, b = float(q.scale().detach()), int(q.bit_width())
                    self.ops.append(("quant", s, -(2 ** (b - 1)), 2 ** (b - 1) - 1))
                elif isinstance(layer, qnn.QuantReLU):
                    q = layer.act_quant
                    s, b = float(q.scale().detach()), int(q.bit_width())
                    self.ops.append(("quant", s, 0, 2 ** b - 1))
                elif isinstance(layer, qnn.QuantConv2d):
                    w = layer.quant_weight().value.detach()[:, :, 0, :].clone()
                    self.ops.append(("conv", w, layer.padding[1]))
                elif isinstance(layer, qnn.QuantLinear):
                    w = layer.quant_weight().value.detach().clone()
                    bias = layer.bias  # re-quantized to the int32 grid below
                    self.ops.append(("linear", w, None if bias is None else bias.detach()))
                elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
                    shift = layer.bias - layer.running_mean * scale
                    self.ops.append(("bn", scale.detach().clone(), shift.detach().clone()))
                elif isinstance(layer, nn.MaxPool2d):
                    self.ops.append(("pool", layer.kernel_size[1]))
                elif isinstance(layer, nn.Flatten):
                    self.ops.append(("flatten",))
                else:
                    raise TypeError(f"unexpected layer {type(layer).__name__}")
        # the last linear's bias is quantized at (input scale x weight scale), 32 bits
        last_act = [op for op in self.ops if op[0] == "quant"][-1][1]
        kind, w, bias = self.ops[-1]
        w_scale = float(model[-1].quant_weight().scale.detach())
        step = last_act * w_scale
        self.ops[-1] = (kind, w, torch.round(bias / step) * step)

    def __call__(self, x):
        import torch
        import torch.nn.functional as F

        for op in self.ops:
            kind = op[0]
            if kind == "quant":
                _, s, lo, hi = op
                x = torch.clamp(torch.round(x / s), lo, hi) * s
            elif kind == "conv":
                x = F.conv1d(x, op[1], padding=op[2])
            elif kind == "bn":
                shape = (1, -1, 1) if x.ndim == 3 else (1, -1)
                x = x * op[1].view(shape) + op[2].view(shape)
            elif kind == "pool":
                x = F.max_pool1d(x, op[1])
            elif kind == "flatten":
                x = x.flatten(1)
            elif kind == "linear":
                x = F.linear(x, op[1], op[2])
        return x


def check_twin(model, twin, x) -> dict:
    """The twin against the Brevitas model on frames x (N, 2, L): raise if they disagree."""
    import torch

    with torch.inference_mode():
        ref = model(torch.from_numpy(x)[:, :, None, :]).numpy()
        got = twin(torch.from_numpy(x)).numpy()
    diff = np.abs(ref - got).max(axis=1)
    same = int((ref.argmax(1) == got.argmax(1)).sum())
    # float summation order differs (Conv1d here, (1, k) Conv2d there): a value on a rounding
    # boundary of one of the 9 activation grids now and then rounds the other way and moves
    # the logits of that frame by ~0.1 (measured: 7 of 96 frames, all classes equal)
    if same < 0.99 * len(x) or (diff > 1e-3).mean() > 0.15 or diff.max() > 0.5:
        raise SystemExit(f"error: the frozen twin disagrees with the Brevitas judge: classes "
                         f"equal {same}/{len(x)}, max logit diff {diff.max():.3g}")
    return {"frames": len(x), "classes_equal": same, "max_abs_logit_diff": float(diff.max())}


def frames_of_cell(name: str, snr: int, fpc: int, seed: int) -> np.ndarray:
    """(fpc, 2, 1024) float32 channels-first (I, Q), as a RadioML reader yields them."""
    z = synth.cell_frames(name, snr, fpc, seed)
    return np.stack([z.real, z.imag], axis=1).astype(np.float32)


def measure(predict, classes, snrs, fpc: int, seed: int, batch: int = 512):
    """accuracy (classes, SNRs) and confusion (classes, classes) at SNR >= HIGH_SNR_DB."""
    import torch

    acc = np.zeros((len(classes), len(snrs)))
    confusion_high = np.zeros((len(classes), len(RML2018_CLASSES)), dtype=np.int64)
    gen_s = judge_s = 0.0
    for i, name in enumerate(classes):
        for j, snr in enumerate(snrs):
            t0 = time.perf_counter()
            x = frames_of_cell(name, snr, fpc, seed)
            t1 = time.perf_counter()
            pred = []
            with torch.inference_mode():
                for k in range(0, len(x), batch):
                    pred.append(predict(torch.from_numpy(x[k:k + batch])).argmax(1).numpy())
            pred = np.concatenate(pred)
            judge_s += time.perf_counter() - t1
            gen_s += t1 - t0
            label = RML2018_CLASSES.index(name)
            acc[i, j] = float(np.mean(pred == label))
            if snr >= HIGH_SNR_DB:
                confusion_high[i] += np.bincount(pred, minlength=len(RML2018_CLASSES))
    return acc, confusion_high, gen_s, judge_s


def plot(acc: np.ndarray, classes, snrs, path: Path, headline: float) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from flows.fileio import atomic_path

    fig = Figure(figsize=(11, 7.5))
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    im = ax.imshow(100 * acc, aspect="auto", cmap="viridis", vmin=0, vmax=100)
    ax.set_xticks(range(len(snrs)), [str(s) for s in snrs], fontsize=6, rotation=90)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set(xlabel="SNR (dB)", title="real-data VGG10 on synthetic frames: accuracy (%)")
    fig.colorbar(im, ax=ax, fraction=0.04)
    ax2.plot(snrs, 100 * acc.mean(axis=0), marker="o", ms=3, color="k",
             label="mean over classes")
    for i, name in enumerate(classes):
        ax2.plot(snrs, 100 * acc[i], lw=0.6, alpha=0.5)
    ax2.axhline(100 * headline, ls="--", color="grey",
                label=f"mean per-class at SNR >= {HIGH_SNR_DB} dB: {100 * headline:.1f} %")
    ax2.set(xlabel="SNR (dB)", ylabel="accuracy (%)", ylim=(0, 100),
            title="per class (thin) and mean (black)")
    ax2.legend(loc="lower right", fontsize=7)
    ax2.grid(alpha=0.3)
    FigureCanvasAgg(fig)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-per-cell", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--snr-min", type=int, default=RML2018_SNRS_DB[0])
    parser.add_argument("--classes", nargs="+", default=list(RML2018_CLASSES))
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--brevitas", action="store_true",
                        help="run the Brevitas model itself (about 4x slower than the twin)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/realism.json")
    parser.add_argument("--png", type=Path, default=ROOT / "benchmarks/results/realism.png")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    snrs = [s for s in RML2018_SNRS_DB if s >= args.snr_min]
    classes = [c for c in RML2018_CLASSES if c in set(args.classes)]
    started = time.perf_counter()
    model = load_judge(args.weights)
    if args.brevitas:
        predict, twin_check = (lambda x: model(x[:, :, None, :])), None
    else:
        twin = FrozenVGG10(model)
        probe = np.concatenate([frames_of_cell(c, s, 2, 12345)
                                for c in RML2018_CLASSES for s in (0, 30)])
        twin_check, predict = check_twin(model, twin, probe), twin
    acc, confusion, gen_s, judge_s = measure(predict, classes, snrs, args.frames_per_cell,
                                             args.seed)
    high = [j for j, s in enumerate(snrs) if s >= HIGH_SNR_DB]
    per_class_high = acc[:, high].mean(axis=1)
    headline = float(per_class_high.mean()) if high else float("nan")
    at30 = acc[:, snrs.index(30)] if 30 in snrs else np.full(len(classes), np.nan)
    taken_for = {}
    for i, name in enumerate(classes):
        row = confusion[i]
        top = np.argsort(row)[::-1][:3]
        taken_for[name] = {RML2018_CLASSES[k]: round(float(row[k] / max(row.sum(), 1)), 3)
                           for k in top if row[k]}
    result = {
        "judge": str(args.weights.name),
        "judge_note": "real-data VGG10 (2021 challenge baseline, w8a8); on real frames about "
                      "0.9 mean per-class accuracy at SNR >= 10 dB",
        "generator": "flows.synth rml2018",
        "seed": args.seed,
        "frames_per_cell": args.frames_per_cell,
        "classes": classes,
        "snrs_db": snrs,
        f"mean_per_class_accuracy_snr_ge_{HIGH_SNR_DB}db": headline,
        "accuracy_per_class_snr_ge_10db": dict(zip(classes, per_class_high.round(4).tolist())),
        "accuracy_per_class_30db": dict(zip(classes, at30.round(4).tolist())),
        "classes_above_0.5_at_30db": int(np.sum(at30 > GOAL_PER_CLASS_30DB)),
        "mean_accuracy_per_snr": dict(zip(map(str, snrs), acc.mean(axis=0).round(4).tolist())),
        "accuracy_per_class_per_snr": {c: acc[i].round(4).tolist()
                                       for i, c in enumerate(classes)},
        "taken_for_snr_ge_10db": taken_for,
        "goal": {"mean_per_class_snr_ge_10db": GOAL_HIGH_SNR,
                 "every_class_at_30db_above": GOAL_PER_CLASS_30DB},
        "twin_check": twin_check,
        "generate_seconds": round(gen_s, 1),
        "judge_seconds": round(judge_s, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    print(f"{len(classes)} classes x {len(snrs)} SNRs x {args.frames_per_cell} frames, "
          f"seed {args.seed}: generate {gen_s:.0f} s, judge {judge_s:.0f} s")
    print(f"{'class':>10}  SNR>=10  +30 dB   taken for at SNR >= 10 dB")
    for i, name in enumerate(classes):
        other = ", ".join(f"{k} {v:.2f}" for k, v in taken_for[name].items() if k != name)
        print(f"{name:>10}  {per_class_high[i]:7.3f}  {at30[i]:6.3f}   {other}")
    print("mean accuracy per SNR: " + " ".join(f"{s}:{a:.2f}" for s, a in
                                               zip(snrs, acc.mean(axis=0))))
    print(f"mean per-class accuracy at SNR >= {HIGH_SNR_DB} dB: {headline:.3f} "
          f"(goal >= {GOAL_HIGH_SNR}); classes above {GOAL_PER_CLASS_30DB} at +30 dB: "
          f"{result['classes_above_0.5_at_30db']}/{len(classes)}")
    if not args.no_write:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        plot(acc, classes, snrs, args.png, headline)
        print(f"wrote {args.json} and {args.png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
