"""Is the synthetic RadioML data learnable, and does accuracy depend on SNR as it should?

Usage: python benchmarks/bench_synth_learnable.py [--frames-per-cell 160] [--train-seconds 120]
       [--classes all | QPSK 16QAM ...] [--out benchmarks/results/synth_learnable.json]

Writes a small rml2018 file with `flows.synth.write_rml2018` (by default 8 classes from every
family x 26 SNRs: two minutes on 2 shared cores are too few epochs for all 24), splits every
cell into train and test (the test fraction of the real split), trains a small plain-PyTorch CNN
for a fixed wall-clock budget and prints the test accuracy per SNR. It should rise from about
chance at -20 dB to high at +30 dB. The figures go to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from flows import synth  # noqa: E402
from flows.rml_formats import RML2018_CLASSES, RML2018_SNRS_DB, RML2018_TEST_FRACTION  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "synth_learnable.json"
DEFAULT_CLASSES = ("4ASK", "BPSK", "QPSK", "8PSK", "16QAM", "AM-DSB-WC", "FM", "GMSK")


def small_cnn(n_classes: int) -> nn.Module:
    """Three conv blocks (stride 2, then pooling 1024 -> 16), global average pool, linear.

    About 0.9 M multiply-accumulates per frame: small enough for several epochs on 2 cores.
    """
    def block(cin, cout, kernel, pool, stride=1):
        return [nn.Conv1d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
                nn.BatchNorm1d(cout), nn.ReLU(), nn.MaxPool1d(pool)]
    return nn.Sequential(*block(2, 24, 7, 4, stride=2), *block(24, 32, 5, 4),
                         *block(32, 64, 3, 2), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(64, n_classes))


def split_rows(n_classes: int, n_snrs: int, fpc: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per cell, a random RML2018_TEST_FRACTION of the rows to test, the rest to train."""
    rng = np.random.default_rng(seed)
    n_test = math.ceil(RML2018_TEST_FRACTION * fpc)
    train, test = [], []
    for cell in range(n_classes * n_snrs):
        rows = cell * fpc + rng.permutation(fpc)
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return np.concatenate(train), np.concatenate(test)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-per-cell", type=int, default=160)
    parser.add_argument("--classes", nargs="+", default=list(DEFAULT_CLASSES),
                        help=f"'all' or names (default {' '.join(DEFAULT_CLASSES)})")
    parser.add_argument("--train-seconds", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    classes = [c for c in RML2018_CLASSES if args.classes == ["all"] or c in args.classes]

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = synth.write_rml2018(Path(tmp) / "synth.hdf5", args.frames_per_cell,
                                   seed=args.seed, classes=classes)
        with h5py.File(path, "r") as f:
            x = torch.from_numpy(f["X"][...].transpose(0, 2, 1).copy())  # (N, 2, 1024)
            y_onehot = f["Y"][...]
            z = f["Z"][:, 0]
    generate_s = time.perf_counter() - started
    column = {RML2018_CLASSES.index(c): i for i, c in enumerate(classes)}
    y = torch.from_numpy(np.array([column[c] for c in y_onehot.argmax(1)]))
    train, test = split_rows(len(classes), len(RML2018_SNRS_DB), args.frames_per_cell, args.seed)
    print(f"generated {len(x)} frames ({len(classes)} classes x 26 SNRs x "
          f"{args.frames_per_cell}) in {generate_s:.1f} s; train {len(train)}, test {len(test)}")

    model = small_cnn(len(classes))
    lr_max = 3e-3
    opt = torch.optim.Adam(model.parameters(), lr=lr_max)
    loss_fn = nn.CrossEntropyLoss()
    batch, epochs, train_start = 256, 0, time.perf_counter()
    train_t = torch.from_numpy(train)
    elapsed = 0.0
    while elapsed < args.train_seconds:
        model.train()
        order = train_t[torch.randperm(len(train_t))]
        total, seen = 0.0, 0
        for k in range(0, len(order), batch):
            elapsed = time.perf_counter() - train_start
            if elapsed >= args.train_seconds:
                break
            for group in opt.param_groups:  # cosine decay over the time budget
                group["lr"] = lr_max * 0.5 * (1 + math.cos(math.pi * elapsed / args.train_seconds))
            idx = order[k:k + batch]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        epochs += seen / len(order)
        print(f"  epoch {math.ceil(epochs)}: train loss {total / max(seen, 1):.3f} "
              f"({time.perf_counter() - train_start:.0f} s)", flush=True)

    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[test[k:k + 1024]]).argmax(1)
                          for k in range(0, len(test), 1024)]).numpy()
    correct = pred == y.numpy()[test]
    snr_test = z[test]
    per_snr = {int(s): float(correct[snr_test == s].mean()) for s in RML2018_SNRS_DB}
    high = snr_test >= 10
    per_class_high = {c: float(correct[high & (y.numpy()[test] == i)].mean())
                      for i, c in enumerate(classes)}
    print(f"\ntest accuracy per SNR ({len(classes)} classes, chance {1 / len(classes):.3f}):")
    for s, acc in per_snr.items():
        print(f"  {s:+3d} dB  {acc:.3f}  {'#' * round(40 * acc)}")
    print(f"overall {correct.mean():.3f}; mean at SNR >= 10 dB {correct[high].mean():.3f}")
    print("per class at SNR >= 10 dB: " + ", ".join(f"{c} {a:.2f}"
                                                     for c, a in per_class_high.items()))
    result = {
        "classes": classes,
        "frames_per_cell": args.frames_per_cell,
        "train_frames": int(len(train)),
        "test_frames": int(len(test)),
        "train_seconds": args.train_seconds,
        "epochs": round(epochs, 2),
        "threads": args.threads,
        "chance_accuracy": 1 / len(classes),
        "overall_accuracy": float(correct.mean()),
        "accuracy_snr_ge_10db": float(correct[high].mean()),
        "per_snr_accuracy": per_snr,
        "per_class_accuracy_snr_ge_10db": per_class_high,
        "generate_seconds": generate_s,
        "total_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
