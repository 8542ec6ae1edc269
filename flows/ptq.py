"""Post-training quantization: a checkpoint of any bit width -> 8-bit weights and activations,
activation scales calibrated with Brevitas on frames of the train split.

    python -m flows.ptq --model bacalhaunet --checkpoint best.pt --calib-frames 2048 --data synthetic

The model is rebuilt at --bits (8), the checkpoint's float weights, BatchNorm statistics and
learned input range are loaded, and every activation quantizer's scale is re-estimated:
`brevitas.graph.calibrate.calibration_mode` runs the calibration frames with quantization off
and sets each scale from the average of its statistics. Weight scales follow the weights (per
tensor, from their maximum). Calibration frames: a seeded random draw from the train split,
with the checkpoint's class subset and SNR range. Writes OUT/ptq_w<W>a<W>.pt (toolchain
checkpoint format) and OUT/evaluation/ (test split), and prints the source checkpoint's test
accuracy beside the quantized one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from flows.errors import ToolchainError
from flows.train import (
    DEFAULT_SYNTHETIC_FRAMES_PER_CELL,
    REPO_ROOT,
    _console,
    evaluate_rows,
    full_state_dict,
    load_weights,
    make_splits,
    model_from_checkpoint,
    open_for_model,
    read_checkpoint,
    resolve_data,
    save_checkpoint,
    versions,
)
from models.checkpoints import check_header


def reset_activation_scales(model: nn.Module) -> int:
    """Put every runtime-statistics activation scale back to its uncollected state (loading a
    trained checkpoint marks them as learned, which would make calibration a no-op); returns
    how many were reset."""
    from brevitas.core.scaling.standalone import ParameterFromRuntimeStatsScaling

    n = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ParameterFromRuntimeStatsScaling):
                m.counter = 0
                m.buffer.fill_(1.0)
                m.value.fill_(1.0)  # init_scale multiplies the collected statistics into it
                n += 1
    return n


def calibrate(model: nn.Module, loader, input_shape: Sequence[int]) -> int:
    """Brevitas calibration over `loader` (BatchNorm statistics untouched); returns frames."""
    from brevitas.graph.calibrate import calibration_mode

    model.eval()
    frames = 0
    with torch.no_grad(), calibration_mode(model):
        for x, _, _ in loader:
            model(x.view(len(x), *input_shape))
            frames += len(x)
    return frames


def run_ptq(model_name: str, checkpoint, data: str, calib_frames: int, *, bits: int = 8,
            out_dir: Path | None = None, seed: int = 0, batch_size: int = 256,
            command: list[str] | None = None) -> dict:
    """Quantize, calibrate, evaluate and save; returns the written checkpoint dict."""
    from flows.evaluate import print_summary, write_evaluation
    from flows.radioml import make_loader
    from models.registry import get_model_spec
    from models.zoo import build_model

    spec = get_model_spec(model_name)
    if calib_frames < 1:
        raise ToolchainError(f"--calib-frames {calib_frames}: expected 1 or more.")
    ckpt = read_checkpoint(checkpoint)
    check_header(checkpoint, ckpt, model=model_name,
                      fix="Pass a checkpoint of --model (any bit width)")
    trained = ckpt.get("dataset") or {}
    record = resolve_data(data, spec.dataset,
                          trained.get("frames_per_cell") or DEFAULT_SYNTHETIC_FRAMES_PER_CELL,
                          trained.get("seed") or 0)
    source = open_for_model(record["path"], spec)
    splits = make_splits(source)
    split = ckpt.get("split") or {}
    classes = ckpt.get("classes")
    train_rows = source.select(splits.train, snr_min=split.get("snr_min_db"),
                               snr_max=split.get("snr_max_db"), classes=classes)
    rng = np.random.default_rng(seed)
    calib_rows = rng.choice(train_rows, min(calib_frames, len(train_rows)), replace=False)

    model = build_model(model_name, weight_bits=bits, act_bits=bits)
    load_weights(model, checkpoint, ckpt)
    reset_activation_scales(model)
    t0 = time.perf_counter()
    n = calibrate(model, make_loader(source, calib_rows, batch_size=batch_size),
                  spec.input_shape)
    seconds = time.perf_counter() - t0

    out_dir = Path(out_dir) if out_dir else REPO_ROOT / "build" / "ptq" / f"{model_name}_w{bits}"
    path = out_dir / f"ptq_w{bits}a{bits}.pt"
    with full_state_dict():
        state = model.state_dict()
    result = {"model": model_name, "weight_bits": bits, "act_bits": bits, "state_dict": state,
              "ptq": {"source_checkpoint": str(checkpoint),
                      "source_bits": [ckpt["weight_bits"], ckpt["act_bits"]],
                      "calib_frames": n, "calib_seed": seed, "calib_seconds": round(seconds, 2),
                      "method": "brevitas calibration_mode (average of runtime statistics)"},
              "dataset": record, "classes": classes, "split": split, "versions": versions(),
              "command": command or []}
    ev = evaluate_rows(model, result, source, splits.test, split="test", classes=classes,
                       checkpoint=path)
    source_model, _ = model_from_checkpoint(checkpoint)
    before = evaluate_rows(source_model, ckpt, source, splits.test, split="test",
                           classes=classes, checkpoint=checkpoint)
    result["evaluation"] = ev.to_dict()
    result["source_test_accuracy"] = before.accuracy
    save_checkpoint(path, result)
    write_evaluation(ev, out_dir / "evaluation")
    print_summary(ev, out_dir / "evaluation")
    _console().print(f"PTQ {model_name}: w{ckpt['weight_bits']}a{ckpt['act_bits']} checkpoint "
                     f"{100 * before.accuracy:.2f} % -> w{bits}a{bits} after calibration on {n} "
                     f"frames {100 * ev.accuracy:.2f} %; {path}", highlight=False)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    from models.registry import model_names

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m flows.ptq",
                                description="8-bit post-training quantization with Brevitas "
                                            "calibration.")
    p.add_argument("--model", required=True, choices=model_names(), metavar="MODEL")
    p.add_argument("--checkpoint", required=True, type=Path, help="float or QAT checkpoint")
    p.add_argument("--calib-frames", required=True, type=int, metavar="N",
                   help="calibration frames drawn from the train split")
    p.add_argument("--data", required=True, metavar="FILE|synthetic",
                   help="RadioML file, or 'synthetic' (the checkpoint's synthetic file)")
    p.add_argument("--bits", type=int, default=8, help="weight and activation bits (8)")
    p.add_argument("--out", type=Path, help="output directory (default build/ptq/<model>_w<W>)")
    p.add_argument("--seed", type=int, default=0, help="calibration frame draw (0)")
    args = p.parse_args(argv)
    try:
        run_ptq(args.model, args.checkpoint, args.data, args.calib_frames, bits=args.bits,
                out_dir=args.out, seed=args.seed, command=["python", "-m", "flows.ptq", *argv])
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
