"""Faithful against deployable BacalhauNet: accuracy and challenge cost of the shipped checkpoints.

    PYTHONPATH=. python benchmarks/compare_bacalhaunet.py

The two forms differ only at the two residual adds: `bacalhaunet-faithful` (as published) gives
the skip input and the block output their own 6-bit activation scales, so the sum lies on no
common grid and the next DW conv sees an unquantized input (FINN cannot map it); the deployable
`bacalhaunet` (the default for hardware builds) quantizes both add inputs with one shared
QuantReLU. Both shipped checkpoints (`models/weights/<name>.pt`, trained by
benchmarks/train_shipped.py with the same run on the same synthetic file) are evaluated on one
test split: by default that of the file the deployable checkpoint was trained on (it is cached
in data/synthetic/), or with `--current-generator` the synthetic RML2018 file of the current
generator (`--frames-per-cell`, `--seed`; generated once, cached). The file each checkpoint was
trained on is recorded next to it.

A third row, "faithful -> deployable", loads the faithful checkpoint into the deployable form the
way a published faithful checkpoint is loaded (`models.published`: each shared quantizer takes the
larger of the two trained scales): what deploying a faithfully trained model costs in accuracy
without retraining.

`--pair LABEL DEPLOYABLE FAITHFUL` adds another pair of checkpoints of one training run each (for
example both forms at a lower learning rate, where neither diverges), evaluated on the same split,
under "pairs" in the JSON with the command that trained each.

Cost: `flows.cost` (qonnx's inference cost of the exported QONNX graph, sparsity discounted,
score against the challenge's 8-bit VGG10). Writes benchmarks/results/bacalhaunet_forms.json and
prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from flows.cost import model_cost, scored
from flows.errors import ToolchainError
from flows.fileio import atomic_write_text
from flows.train import (
    evaluate_rows,
    make_splits,
    model_from_checkpoint,
    open_for_model,
    read_checkpoint,
    resolve_data,
)
from models.checkpoints import SHIPPED_DIR
from models.registry import get_model_spec

RESULT = Path(__file__).resolve().parent / "results" / "bacalhaunet_forms.json"
FORMS = (("deployable", "bacalhaunet"), ("faithful", "bacalhaunet-faithful"))
FLOAT_BITS = 32  # qonnx's width of an unquantized tensor
ADD_OUTPUT_BITS = 7  # two unsigned 6-bit values on one grid add to an unsigned 7-bit value


def faithful_as_deployable(faithful_ckpt: Path):
    """The faithful checkpoint's weights in the deployable model (shared scale = the larger of
    the two trained ones), through the published-layout loader: Conv1d-shaped weights."""
    from models.checkpoints import load_state
    from models.zoo import build_model

    ckpt = read_checkpoint(faithful_ckpt)
    state = {k: (v.squeeze(2) if k.endswith("conv.weight") and v.ndim == 4 else v)
             for k, v in ckpt["state_dict"].items()}
    model = build_model("bacalhaunet", weight_bits=ckpt["weight_bits"],
                        act_bits=ckpt["act_bits"])
    load_state(model, state, "bacalhaunet", faithful_ckpt)
    return model.eval(), {**ckpt, "model": "bacalhaunet"}


def cost_row(model, *, shared_grid: bool) -> dict:
    """The cost report's figures. qonnx costs the DW conv after each residual add at 32 input
    bits in both forms (the exported add output carries no quantizer); on one shared 6-bit grid
    (deployable) the sum is an exact 7-bit unsigned integer, which is what FINN streams, so
    `total_bops_add_at_int_width` recounts those layers at 7 bits (None for the faithful form:
    its sum lies on no integer grid)."""
    report = scored(model_cost(model, get_model_spec("bacalhaunet").input_shape))
    by_layer = {layer.name: layer.input_bits for layer in report.layers}
    post_add = [layer for layer in report.layers if layer.input_bits == FLOAT_BITS]
    add_bits = ADD_OUTPUT_BITS if shared_grid else None
    recount = (report.total_bops - sum(layer.bops_discounted * (1 - add_bits / FLOAT_BITS)
                                       for layer in post_add)) if shared_grid else None
    return {"total_bops": report.total_bops, "total_mem_w_bits": report.total_mem_w_bits,
            "post_add_layers": [layer.name for layer in post_add],
            "add_output_bits": add_bits, "total_bops_add_at_int_width": recount,
            "dense_bops": report.dense.total_bops,
            "dense_mem_w_bits": report.dense.total_mem_w_bits,
            "zero_weights": report.zero_weights, "total_weights": report.total_weights,
            "challenge_score": report.score.score, "baseline": report.score.baseline.source,
            "layer_input_bits": by_layer}


def evaluation_row(model, ckpt: dict, source, rows) -> dict:
    ev = evaluate_rows(model, ckpt, source, rows, split="test")
    return {"accuracy": ev.accuracy, "frames": ev.frames,
            "accuracy_by_snr": {str(r["snr_db"]): r["accuracy"] for r in ev.per_snr}}


def test_data(current_generator: bool, frames_per_cell: int, seed: int) -> dict:
    """The dataset record of the file to evaluate on (see the module docstring)."""
    spec = get_model_spec("bacalhaunet")
    trained = read_checkpoint(SHIPPED_DIR / "bacalhaunet.pt")["dataset"]
    if not current_generator and Path(trained["path"]).is_file():
        return trained
    return resolve_data("synthetic", spec.dataset, frames_per_cell, seed)


def pair_rows(label: str, deployable: Path, faithful: Path, source, rows) -> dict:
    """Another pair of checkpoints (one per form), evaluated and costed like the shipped pair."""
    out = {"label": label, "forms": {}}
    for form, path, name in (("deployable", deployable, "bacalhaunet"),
                             ("faithful", faithful, "bacalhaunet-faithful")):
        model, ckpt = model_from_checkpoint(path)
        if ckpt["model"] != name:
            raise ToolchainError(f"--pair {label}: {path} is a {ckpt['model']} checkpoint, "
                                 f"expected {name} for the {form} form.")
        out["forms"][form] = {"checkpoint": str(path), "command": ckpt.get("command"),
                              "training_frames": ckpt["split"]["train_frames"],
                              **evaluation_row(model, ckpt, source, rows),
                              **cost_row(model, shared_grid=name == "bacalhaunet")}
    return out


def compare(record: dict, pairs: list[tuple[str, Path, Path]] = ()) -> dict:
    spec = get_model_spec("bacalhaunet")
    source = open_for_model(record["path"], spec)
    test_rows = make_splits(source).test
    out = {"data": record, "split": "test", "forms": {}}
    paths = {}
    for form, name in FORMS:
        path = SHIPPED_DIR / f"{name}.pt"
        if not path.is_file():
            raise ToolchainError(f"no shipped checkpoint {path}: train it first with "
                                 f"benchmarks/train_shipped.py --models {name}")
        paths[form] = path
        model, ckpt = model_from_checkpoint(path)
        out["forms"][form] = {
            "model": name, "checkpoint": str(path.relative_to(SHIPPED_DIR.parents[1])),
            "trained_on": ckpt["dataset"].get("generator", ckpt["dataset"]["path"]),
            "trained_on_file": Path(ckpt["dataset"]["path"]).name,
            "training_frames": ckpt["split"]["train_frames"],
            "epochs": ckpt.get("epochs_trained"),
            **evaluation_row(model, ckpt, source, test_rows),
            **cost_row(model, shared_grid=name == "bacalhaunet")}
    model, ckpt = faithful_as_deployable(paths["faithful"])
    out["forms"]["faithful -> deployable"] = {
        "model": "bacalhaunet", "checkpoint": out["forms"]["faithful"]["checkpoint"],
        "trained_on": out["forms"]["faithful"]["trained_on"],
        "trained_on_file": out["forms"]["faithful"]["trained_on_file"],
        "note": "faithful weights, each residual add's two scales merged into the larger",
        **evaluation_row(model, ckpt, source, test_rows), **cost_row(model, shared_grid=True)}
    f, d = out["forms"]["faithful"], out["forms"]["deployable"]
    out["deployable_minus_faithful"] = {
        "accuracy": d["accuracy"] - f["accuracy"],
        "total_bops": d["total_bops"] - f["total_bops"],
        "total_mem_w_bits": d["total_mem_w_bits"] - f["total_mem_w_bits"],
        "challenge_score": d["challenge_score"] - f["challenge_score"]}
    out["same_training_data"] = d["trained_on_file"] == f["trained_on_file"]
    out["pairs"] = [pair_rows(label, Path(dep), Path(fai), source, test_rows)
                    for label, dep, fai in pairs]
    source.close()
    return out


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"BacalhauNet forms on {Path(result['data']['path']).name} (test split)")
    for col in ("form", "trained on", "accuracy (%)", "-10 / 0 / +10 / +20 dB (%)",
                "bops (M)", "bops, add at 7 bits (M)", "weight bits (k)", "zero weights",
                "score"):
        table.add_column(col)
    for form, r in result["forms"].items():
        snr = r["accuracy_by_snr"]
        picks = " / ".join(f"{100 * snr[str(s)]:.1f}" for s in (-10, 0, 10, 20))
        table.add_row(form, r["trained_on"], f"{100 * r['accuracy']:.1f}", picks,
                      f"{r['total_bops'] / 1e6:.2f}",
                      "-" if r["total_bops_add_at_int_width"] is None
                      else f"{r['total_bops_add_at_int_width'] / 1e6:.2f}",
                      f"{r['total_mem_w_bits'] / 1e3:.2f}",
                      f"{r['zero_weights']}/{r['total_weights']}",
                      f"{r['challenge_score']:.4f}")
    console = Console(width=160)
    console.print(table)
    for pair in result.get("pairs", []):
        table = Table(title=f"pair {pair['label']}")
        for col in ("form", "training frames", "accuracy (%)", "score"):
            table.add_column(col)
        for form, r in pair["forms"].items():
            table.add_row(form, str(r["training_frames"]), f"{100 * r['accuracy']:.2f}",
                          f"{r['challenge_score']:.4f}")
        console.print(table)
    if not result["same_training_data"]:
        console.print("[yellow]the two checkpoints were trained on different generator "
                        "versions: the accuracy difference includes that[/yellow]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--current-generator", action="store_true",
                    help="evaluate on the current generator's file, not the training file")
    ap.add_argument("--frames-per-cell", type=int, default=64,
                    help="synthetic test file: frames per (class, SNR) cell (64, as the shipped "
                         "runs)")
    ap.add_argument("--seed", type=int, default=0, help="synthetic test file: generator seed")
    ap.add_argument("--pair", nargs=3, action="append", default=[],
                    metavar=("LABEL", "DEPLOYABLE", "FAITHFUL"),
                    help="also evaluate this pair of checkpoints (repeatable)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        result = compare(test_data(args.current_generator, args.frames_per_cell, args.seed),
                         [(label, Path(d), Path(f)) for label, d, f in args.pair])
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print_table(result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
