"""Training throughput on this machine: one QAT step (forward + backward + Adam step) per model
and batch size, and the data loader alone, in frames per second.

Uses the cached synthetic RML2018 file of `flows.train` (written once under data/ if absent).
Brevitas' activation quantizers collect statistics (a percentile per batch) for their first 300
training steps before their scale becomes a learned parameter, so each step is timed in both
phases: "collecting" (a fresh model) and "learned" (after the collection ended). The loader is
timed on the published train split, block-shuffled as in training; the file is warm in the page
cache after the first pass.

    PYTHONPATH=. python benchmarks/bench_train.py [--models bacalhaunet vgg10] [--batch 256 1024]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from rich.console import Console
from rich.table import Table

from flows.radioml import make_loader
from flows.train import (
    DEFAULT_SYNTHETIC_FRAMES_PER_CELL,
    full_state_dict,
    make_splits,
    open_for_model,
    resolve_data,
)
from models.registry import get_model_spec
from models.zoo import build_model


def step_fps(name: str, batch: int, steps: int, learned: bool) -> float:
    """Frames/s of forward + backward + Adam step on random frames (median of `steps`)."""
    spec = get_model_spec(name)
    torch.manual_seed(0)
    model = build_model(name)
    if learned:  # a state dict round trip ends the statistics collection
        with full_state_dict():
            model.load_state_dict(model.state_dict())
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(batch, *spec.input_shape)
    y = torch.randint(0, spec.n_classes, (batch,))
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and kernels
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:])
    return batch / times[len(times) // 2]


def loader_fps(source, rows, batch: int, max_batches: int) -> float:
    loader = make_loader(source, rows, batch_size=batch, shuffle=True, seed=0)
    n, t0 = 0, time.perf_counter()
    for i, (x, _, _) in enumerate(loader):
        n += len(x)
        if i + 1 == max_batches:
            break
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["bacalhaunet", "vgg10"])
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per case (median)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    console = Console()
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    record = resolve_data("synthetic", "rml2018", DEFAULT_SYNTHETIC_FRAMES_PER_CELL, 0)
    source = open_for_model(record["path"], get_model_spec("vgg10"))
    train_rows = make_splits(source).train
    loader_frames_s = {}
    for batch in args.batch:
        loader_fps(source, train_rows, batch, 8)  # warm the page cache
        loader_frames_s[batch] = loader_fps(source, train_rows, batch, 20)

    table = Table(title="training throughput (frames/s), CPU")
    for col in ("model", "batch", "step, collecting", "step, learned", "loader alone"):
        table.add_column(col, justify="right")
    rows = []
    for name in args.models:
        for batch in args.batch:
            collecting = step_fps(name, batch, args.steps, learned=False)
            learned = step_fps(name, batch, args.steps, learned=True)
            rows.append({"model": name, "batch": batch, "step_collecting_fps": collecting,
                         "step_learned_fps": learned, "loader_fps": loader_frames_s[batch]})
            table.add_row(name, str(batch), f"{collecting:.0f}", f"{learned:.0f}",
                          f"{loader_frames_s[batch]:.0f}")
            console.print(f"{name} batch {batch}: {collecting:.0f} (collecting) / "
                          f"{learned:.0f} (learned) frames/s")
    console.print(table)
    slowest_loader = min(loader_frames_s.values())
    fastest_step = max(max(r["step_collecting_fps"], r["step_learned_fps"]) for r in rows)
    console.print(f"loader / fastest training step: {slowest_loader / fastest_step:.0f}x: data "
                  f"loading is {'not ' if slowest_loader > 5 * fastest_step else ''}the "
                  "bottleneck")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "loader_fps": loader_frames_s,
                       "threads": torch.get_num_threads(), "data": record["path"]}, f, indent=2)


if __name__ == "__main__":
    main()
