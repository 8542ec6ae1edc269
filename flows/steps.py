"""Build steps and the registry that names them.

A step is `step_<verb>(model, cfg) -> model`: it takes what the previous step produced and
returns what the next one needs. `@build_step` registers it under a name, with the kind of
checkpoint it leaves (`intermediate/NN_<name>.<ext>`), so that `--from` can resume from any
step and a person can open every stage. Presets are tuples of step names that build on each
other (`flows.presets`); `build.py` runs `DEFAULT_FLOW`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flows.config import BuildConfig
from flows.errors import ToolchainError
from flows.fileio import atomic_path, atomic_write_text


@dataclass(frozen=True)
class Checkpoint:
    """How a step's output is written to and read back from `intermediate/`."""

    suffix: str
    save: Callable[[Any, Path, BuildConfig], None]
    load: Callable[[Path, BuildConfig], Any]


@dataclass(frozen=True)
class Step:
    name: str
    func: Callable[[Any, BuildConfig], Any]
    checkpoint: Checkpoint | None  # None: the step only reports; its input passes on unchanged

    @property
    def summary(self) -> str:
        return (self.func.__doc__ or "").strip().splitlines()[0]


_STEPS: dict[str, Step] = {}


def build_step(name: str, checkpoint: Checkpoint | None) -> Callable:
    """Decorator: register a step function under `name`."""

    def wrap(func: Callable) -> Callable:
        if name in _STEPS:
            raise ValueError(f"build step {name!r} registered twice")
        _STEPS[name] = Step(name, func, checkpoint)
        return func

    return wrap


def step_range(names: list[str], cfg: BuildConfig) -> tuple[int, int]:
    """Indices of cfg.from_step and cfg.until_step in the flow `names` (default: its first and
    last step); a step the flow does not have is an error listing the flow's steps."""
    for option, step in (("--from", cfg.from_step), ("--until", cfg.until_step)):
        if step is not None and step not in names:
            raise ToolchainError(f"{option} {step}: not a step of this flow; the steps are: "
                                 f"{' -> '.join(names)}.")
    start = names.index(cfg.from_step) if cfg.from_step else 0
    stop = names.index(cfg.until_step) if cfg.until_step else len(names) - 1
    return start, stop


def get_step(name: str) -> Step:
    import flows.presets  # noqa: F401  (imports every step module, which registers its steps)

    return _STEPS[name]


# --- checkpoint kinds -------------------------------------------------------------------------

def _save_json(obj: Any, path: Path, cfg: BuildConfig) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _load_json(path: Path, cfg: BuildConfig) -> Any:
    return json.loads(path.read_text())


def _save_torch(model, path: Path, cfg: BuildConfig) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save({"model": cfg.model, "weight_bits": cfg.weight_bits, "act_bits": cfg.act_bits,
                    "state_dict": model.state_dict()}, tmp)


def _load_torch(path: Path, cfg: BuildConfig):
    from models.checkpoints import instantiate

    return instantiate(cfg, path)


def _save_onnx(model, path: Path, cfg: BuildConfig) -> None:
    with atomic_path(path) as tmp:
        model.save(str(tmp))


def _load_onnx(path: Path, cfg: BuildConfig):
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(str(path))


JSON_CHECKPOINT = Checkpoint(".json", _save_json, _load_json)
ONNX_CHECKPOINT = Checkpoint(".onnx", _save_onnx, _load_onnx)
TORCH_CHECKPOINT = Checkpoint(".pt", _save_torch, _load_torch)


# --- steps ------------------------------------------------------------------------------------

@build_step("prepare_data", JSON_CHECKPOINT)
def step_prepare_data(model: None, cfg: BuildConfig) -> dict:
    """Pick the verification frames: from --data, or from synthetic RadioML-layout frames.

    Without --data a small synthetic file in the real RadioML layout of the model's dataset is
    generated under `OUT/data/`. Frames are taken from the published test split, spread evenly
    over classes and SNRs, and saved with their labels in `OUT/data/verify_frames.npz`, which
    every later verification reads.
    """
    from flows.verify_data import prepare_verification_frames

    return prepare_verification_frames(cfg)


@build_step("build_model", TORCH_CHECKPOINT)
def step_build_model(data_summary: dict, cfg: BuildConfig):
    """Instantiate the zoo model at the requested bits, load its weights, run the golden model.

    The Brevitas model in eval mode is the golden model: its logits on the verification frames
    go to `OUT/report/golden_outputs.npz`, the reference every later stage is compared with.
    """
    from models.checkpoints import (calibrate_untrained, instantiate, is_untrained,
                                    weights_source)
    from models.stats import count_macs, count_weights

    model = instantiate(cfg, cfg.weights)
    frames = np.load(cfg.data_dir / "verify_frames.npz")
    if is_untrained(cfg):
        calibrate_untrained(model, model_input(frames["x"], cfg))
    logits = golden_logits(model, frames["x"], cfg)
    with atomic_path(cfg.report_dir / "golden_outputs.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, logits=logits, y=frames["y"], snr=frames["snr"])
    agree = float(np.mean(logits.argmax(1) == frames["y"]))
    summary = {"model": cfg.model, "weight_bits": cfg.weight_bits, "act_bits": cfg.act_bits,
               "weights": weights_source(cfg), "weights_count": count_weights(model),
               "macs": count_macs(model, cfg.model_spec.input_shape).total,
               "verify_frames": int(len(logits)), "verify_accuracy": agree}
    atomic_write_text(cfg.report_dir / "model.json", json.dumps(summary, indent=2) + "\n")
    return model


def golden_logits(model, x: np.ndarray, cfg: BuildConfig) -> np.ndarray:
    """Logits of the Brevitas model on channels-first frames (N, 2, L)."""
    import torch

    with torch.no_grad():
        out = model.eval()(model_input(x, cfg))
    return out.detach().numpy().astype(np.float32)


def model_input(x: np.ndarray, cfg: BuildConfig):
    """Channels-first frames (N, 2, L) as the model's input tensor (N, *input_shape)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x)).reshape(len(x), *cfg.model_spec.input_shape)


