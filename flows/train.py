"""Quantization-aware training of zoo models on RadioML files or synthetic ones.

    python -m flows.train --model bacalhaunet --data synthetic --epochs 5
    python -m flows.train --model vgg10 --data GOLD_XYZ_OSC.0001_1024.hdf5

Recipe (the published one unless the model's entry in `RECIPES` says otherwise): Adam, lr 0.01,
CosineAnnealingWarmRestarts(T_0=5) stepped once per epoch, cross-entropy, batch 1024, 20 epochs.

Data and split
- `--data FILE` is a RadioML 2018.01A HDF5 file or 2016.10a pickle (or any file in their
  layout); its format must be the model's (24 classes x 1024 samples, or 11 x 128).
- `--data synthetic` writes (once) a file of the model's format with `flows.synth`, cached as
  `data/synthetic/<format>_fpc<frames per cell>_seed<seed>_<generator hash>.<ext>` in the repo
  root; a revised generator gets a new file, so retraining is the same command.
- Splits are the published ones (`flows.radioml`). RML2018 has no validation set there, so
  model selection uses a validation slice held out of the train part: in each (class, SNR)
  cell, the first ceil(5 %) of that cell's train rows in the published shuffled order (at least
  one train row stays). RML2016 uses its train/val/test split. `--snr-min/--snr-max` and
  `--classes` filter train and validation; the final test evaluation keeps every SNR.
- A class subset keeps the model's full output layer (the zoo builds every model with the
  format's class count, and the hardware flow loads checkpoints into that model): labels stay
  the format's class indices, the subset only selects the frames trained on, and the model
  learns to leave the other outputs low. Evaluation scores the subset's frames with the argmax
  over all outputs.

Outputs in `--out` (default build/train/<model>_w<W>a<A>/): `last.pt` after every epoch,
`best.pt` (highest validation accuracy; with pruning, of the final sparsity), `train_config.json`,
and `evaluation/` (best.pt on the test split: JSON and PNG plots). A checkpoint is the toolchain's
format (`model`, `weight_bits`, `act_bits`, `state_dict`, loadable with
`models.checkpoints.load_checkpoint`) plus metadata: `epoch`, `metrics`, `history`, `dataset`,
`split`, `config`, `command`, `versions`, and the state to resume bit-exactly (`optimizer`,
`scheduler`, `rng`, `quantizer_state`, `pruning`).

Knowledge distillation (`--teacher CKPT`): loss = a T^2 KL(teacher_T || student_T) +
(1 - a) CE, with a = --kd-weight and T = --kd-temperature. Pruning (`--prune-rounds R` with
`--prune-fraction F` or `--prune-threshold T`): after `--epochs`, R rounds of magnitude pruning,
each followed by `--finetune-epochs` epochs (see `flows.prune`). `--kd-from-unpruned` (Imperial's
recipe) distils the fine-tuning epochs from the model as it was just before the first pruning
round (kept as `teacher_unpruned.pt` in `--out`, so a resumed run uses the same teacher). Imperial
trains with its auxiliary classifiers (`forward_with_aux`, summed cross-entropy).

Rotation augmentation (`--rotate-augment`, ULCNN's recipe): each training frame z = I + jQ is
multiplied by j^k, k drawn uniformly from {0, 1, 2, 3} per frame and step (a rotation by 0, 90,
180 or 270 degrees, exact in float). ULCNN's authors enlarged the training set fourfold with the
three rotations; drawing one rotation per frame per step gives the same distribution in
expectation at the cost of one epoch, not four. Validation and test frames are not rotated.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mashumaro import DataClassDictMixin
from mashumaro.config import BaseConfig
from mashumaro.exceptions import ExtraKeysError, InvalidFieldValue, MissingField
from torch import nn

from flows.errors import InputFileError, ToolchainError
from flows.fileio import atomic_path, atomic_write_text
from models.checkpoints import (
    check_header,
    full_state_dict,  # re-exported: tests and PTQ use it here
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC_DIR = REPO_ROOT / "data" / "synthetic"  # git-ignored (/data/)
# 24 x 26 x 32 = 19,968 frames (160 MB) for RML2018: a few minutes per epoch on 2 cores.
DEFAULT_SYNTHETIC_FRAMES_PER_CELL = 32
VAL_FRACTION = 0.05  # of each cell's train rows, for model selection (RML2018 only)
CHECKPOINT_FORMAT = 1  # bump when the metadata layout changes incompatibly
SYNTH_SOURCE = REPO_ROOT / "flows" / "synth.py"
UNPRUNED_TEACHER = "teacher_unpruned.pt"  # --kd-from-unpruned: the teacher, in --out


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """Training defaults of a model (published values unless noted)."""

    epochs: int = 20
    batch_size: int = 1024
    lr: float = 0.01
    weight_decay: float = 0.0
    snr_min: int | None = None
    rotate_augment: bool = False  # random multiples of 90 degrees on the training frames


# VGG10 (challenge baseline): seed 0, batch 1024, 20 epochs, Adam lr 0.01, T_0 = 5.
# BacalhauNet: Adam lr 0.01 "with weight decay" (value not published: 1e-4 assumed), trained on
# SNR >= -6 dB only. ULCNN: 4x rotation augmentation (90/180/270 degrees); its "decaying
# learning rate" is not specified further, so the cosine schedule stays. Imperial: pruning of 15 %
# of the live weights (global L1) per round, 20 fine-tuning epochs per round, distilled from the
# unpruned model; the number of rounds is not in the notes, so it is not a default here: pass
# `--prune-rounds R --prune-fraction 0.15 --finetune-epochs 20 --kd-from-unpruned`
# (benchmarks/train_shipped.py does, for the real file). Others: the VGG10 recipe.
RECIPES: dict[str, Recipe] = {
    "bacalhaunet": Recipe(weight_decay=1e-4, snr_min=-6),
    "bacalhaunet-faithful": Recipe(weight_decay=1e-4, snr_min=-6),
    "ulcnn": Recipe(rotate_augment=True),
}


def recipe_for(model: str) -> Recipe:
    return RECIPES.get(model, Recipe())


@dataclass
class TrainConfig(DataClassDictMixin):
    """One training run; each field is the command-line option of the same name."""

    model: str  # zoo model name
    data: str  # RadioML file, or "synthetic"
    out: Path | None = None  # output directory; None: build/train/<model>_w<W>a<A>
    bits: int | None = None  # weight and activation bits; None: the model's default
    epochs: int | None = None  # epochs before pruning; None: the recipe's
    batch_size: int | None = None  # None: the recipe's
    lr: float | None = None  # Adam learning rate; None: the recipe's
    weight_decay: float | None = None  # Adam weight decay; None: the recipe's
    restart_epochs: int = 5  # T_0 of CosineAnnealingWarmRestarts, stepped once per epoch
    snr_min: int | None = None  # lowest training SNR in dB; None: the recipe's (else all)
    snr_max: int | None = None  # highest training SNR in dB; None: all
    classes: list[str] | None = None  # class subset to train on; None: all
    seed: int = 0  # initial weights and batch order
    resume: Path | None = None  # continue this run from its checkpoint (same options)
    init: Path | None = None  # start from these weights (same model and bits)
    init_any_bits: bool = False  # let --init come from another bit width (QAT fine-tuning)
    teacher: Path | None = None  # distil from this checkpoint (any model of the same format)
    kd_temperature: float = 4.0  # T of the soft targets
    kd_weight: float = 0.5  # a: loss = a T^2 KL + (1 - a) CE
    kd_from_unpruned: bool = False  # distil the pruning fine-tuning from the unpruned model
    prune_rounds: int = 0  # magnitude pruning rounds after the training epochs
    prune_fraction: float | None = None  # share of the live weights removed per round
    prune_threshold: float | None = None  # or: remove weights with |w| below this
    finetune_epochs: int = 2  # epochs of fine-tuning after each pruning round
    rotate_augment: bool | None = None  # training frames rotated by k x 90 degrees; None: recipe
    max_frames: int | None = None  # cap on training frames (seeded random subset)
    synthetic_frames_per_cell: int = DEFAULT_SYNTHETIC_FRAMES_PER_CELL  # --data synthetic size
    synthetic_seed: int = 0  # --data synthetic generator seed
    block_len: int = 8  # rows per contiguous read in the shuffled batches (flows.radioml)

    class Config(BaseConfig):
        forbid_extra_keys = True

    # -- derived ----------------------------------------------------------------------------
    @property
    def spec(self):
        from models.registry import get_model_spec

        return get_model_spec(self.model)

    @property
    def weight_bits(self) -> int:
        return self.bits if self.bits is not None else self.spec.default_bits

    @property
    def act_bits(self) -> int:
        return self.weight_bits

    @property
    def out_dir(self) -> Path:
        if self.out is not None:
            return Path(self.out)
        return REPO_ROOT / "build" / "train" / f"{self.model}_w{self.weight_bits}a{self.act_bits}"

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.prune_rounds * self.finetune_epochs

    def phase_of(self, epoch: int) -> int:
        """0 while training, r during the fine-tuning after pruning round r."""
        return 0 if epoch < self.epochs else 1 + (epoch - self.epochs) // self.finetune_epochs

    def with_recipe(self) -> TrainConfig:
        """A copy with the unset recipe fields filled from the model's recipe."""
        recipe = recipe_for(self.model)
        filled = {name: getattr(recipe, name) for name in ("epochs", "batch_size", "lr",
                                                           "weight_decay", "snr_min",
                                                           "rotate_augment")
                  if getattr(self, name) is None}
        return dataclasses.replace(self, **filled)

    def to_argv(self) -> list[str]:
        """Command-line arguments giving this configuration (fields at their default left out)."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            flag = "--" + f.name.replace("_", "-")
            if isinstance(value, bool) and f.default is None:  # on/off over a recipe default
                argv += [flag if value else "--no-" + flag[2:]]
            elif isinstance(value, bool):
                argv += [flag] if value else []
            elif isinstance(value, list):
                argv += [flag, *map(str, value)]
            else:
                argv += [flag, str(value)]
        return argv

    def check(self) -> None:
        """Option values that are wrong on their own (before any file is read)."""
        from models.registry import get_model_spec

        get_model_spec(self.model)
        for name in ("epochs", "finetune_epochs", "prune_rounds"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ToolchainError(f"--{name.replace('_', '-')} {getattr(self, name)}: "
                                     "expected 0 or more.")
        for name in ("batch_size", "max_frames", "synthetic_frames_per_cell", "block_len"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ToolchainError(f"--{name.replace('_', '-')} {getattr(self, name)}: "
                                     "expected 1 or more.")
        if self.bits is not None and not 2 <= self.bits <= 16:
            raise ToolchainError(f"--bits {self.bits}: expected 2..16.")
        if self.prune_rounds:
            if (self.prune_fraction is None) == (self.prune_threshold is None):
                raise ToolchainError("--prune-rounds needs exactly one of --prune-fraction F "
                                     "(share of live weights per round) or --prune-threshold T.")
            if self.finetune_epochs < 1:
                raise ToolchainError("--prune-rounds needs --finetune-epochs of at least 1.")
        elif self.prune_fraction is not None or self.prune_threshold is not None:
            raise ToolchainError("--prune-fraction/--prune-threshold need --prune-rounds R.")
        if self.total_epochs < 1:
            raise ToolchainError("nothing to train: --epochs 0 and no --prune-rounds.")
        if not 0 <= self.kd_weight <= 1 or self.kd_temperature <= 0:
            raise ToolchainError(f"--kd-weight {self.kd_weight} must be in [0, 1] and "
                                 f"--kd-temperature {self.kd_temperature} positive.")
        if self.kd_from_unpruned and (not self.prune_rounds or self.teacher is not None):
            raise ToolchainError("--kd-from-unpruned distils the fine-tuning after pruning from "
                                 "the unpruned model: it needs --prune-rounds R and no --teacher.")
        if self.resume is not None and self.init is not None:
            raise ToolchainError("--resume continues a run with its own weights; drop --init.")


# Options that must agree between a checkpoint and the run that resumes it (--epochs may grow).
_RESUME_FIELDS = ("model", "bits", "batch_size", "lr", "weight_decay", "restart_epochs",
                  "snr_min", "snr_max", "classes", "seed", "teacher", "kd_temperature",
                  "kd_weight", "kd_from_unpruned", "rotate_augment", "prune_rounds",
                  "prune_fraction", "prune_threshold", "finetune_epochs", "max_frames",
                  "synthetic_frames_per_cell", "synthetic_seed",
                  "block_len")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def generator_tag() -> str:
    """Short hash of the synthetic generator's source: a revised generator, a new cache file."""
    return hashlib.sha256(SYNTH_SOURCE.read_bytes()).hexdigest()[:10]


def synthetic_path(dataset: str, frames_per_cell: int, seed: int) -> Path:
    ext = "h5" if dataset == "rml2018" else "pkl"
    return SYNTHETIC_DIR / f"{dataset}_fpc{frames_per_cell}_seed{seed}_{generator_tag()}.{ext}"


def resolve_data(data: str | Path, dataset: str, frames_per_cell: int, seed: int) -> dict:
    """The dataset record of a run: for "synthetic", the cached file (written if absent)."""
    if str(data) != "synthetic":
        path = Path(data)
        return {"path": str(path.resolve()), "format": dataset, "synthetic": False,
                "size_bytes": path.stat().st_size if path.is_file() else None}
    from flows import synth

    path = synthetic_path(dataset, frames_per_cell, seed)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = synth.write_rml2018 if dataset == "rml2018" else synth.write_rml2016
        _console().print(f"writing synthetic {dataset} data ({frames_per_cell} frames per cell, "
                         f"seed {seed}) to {path}", highlight=False)
        writer(path, frames_per_cell, seed=seed, force=True)
    return {"path": str(path), "format": dataset, "synthetic": True,
            "size_bytes": path.stat().st_size, "frames_per_cell": frames_per_cell,
            "seed": seed, "generator": f"flows.synth@{generator_tag()}"}


def open_for_model(path: str | Path, spec):
    """Open a RadioML file and check that its format is the one `spec` (a ModelSpec) takes."""
    from flows.radioml import open_radioml

    source = open_radioml(path)
    fmt = "rml2018" if type(source).__name__ == "RML2018File" else "rml2016"
    if (fmt != spec.dataset or len(source.classes) != spec.n_classes
            or source.frame_len != spec.input_shape[-1]):
        source.close()
        raise InputFileError(
            path, f"holds {fmt} data ({len(source.classes)} classes, frames of "
            f"{source.frame_len} samples)",
            expected=f"{spec.dataset} data for model {spec.name} ({spec.n_classes} classes, "
                     f"frames of {spec.input_shape[-1]} samples)",
            fix="Pass a file of the model's format, or --data synthetic")
    return source


@dataclass(frozen=True)
class Splits:
    """Row indices of the published split (plus the held-out validation slice)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    rule: str  # how they were made, for the checkpoint

    def part(self, name: str) -> np.ndarray:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def make_splits(source) -> Splits:
    """The published split of `source`'s rows; see the module docstring for validation."""
    split = source.split()
    if len(split) == 3:  # RML2016: the project's train/val/test (flows.radioml.rml2016_split)
        train, val, test = split
        return Splits(train, val, test, "rml2016 seed-2016 split: train/val/test as "
                                        "flows.radioml.rml2016_split")
    train, test = split
    snr_index = np.searchsorted(source.snr_grid_db, source.snrs_db[train])
    cell = source.labels[train].astype(np.int64) * len(source.snr_grid_db) + snr_index
    order = np.argsort(cell, kind="stable")  # cell by cell, published order within each cell
    starts = np.flatnonzero(np.r_[True, np.diff(cell[order]) != 0])
    sizes = np.diff(np.r_[starts, len(order)])
    n_val = np.minimum(np.ceil(VAL_FRACTION * sizes).astype(np.int64), sizes - 1)
    is_val = np.zeros(len(train), dtype=bool)
    for start, k in zip(starts, n_val):
        is_val[order[start:start + k]] = True
    return Splits(train[~is_val], train[is_val], test,
                  f"rml2018 published split (seed 2018, 10 % test per cell); validation: the "
                  f"first ceil({VAL_FRACTION:g} n) of each cell's n train rows in published "
                  "order (at least one stays in train)")


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def read_checkpoint(path: str | Path) -> dict:
    """A toolchain checkpoint (dict with model, weight_bits, act_bits, state_dict), checked."""
    from models.checkpoints import read_checkpoint_file

    ckpt = read_checkpoint_file(Path(path))
    missing = [k for k in ("model", "weight_bits", "act_bits", "state_dict")
               if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise InputFileError(path, f"has no {', '.join(missing)} entry (a bare state dict?)",
                             expected="a checkpoint written by flows.train, naming its model "
                                      "and bit widths")
    return ckpt


def load_weights(model: nn.Module, path, ckpt: dict) -> None:
    """The weights of `ckpt` (already read from `path`) into `model` (which may have other bit
    widths: the keys are the same), with `models.checkpoints.load_state`'s key and shape
    checks."""
    from models.checkpoints import load_state

    load_state(model, ckpt["state_dict"], ckpt["model"], Path(path))


def model_from_checkpoint(path, *, weight_bits: int | None = None, act_bits: int | None = None
                          ) -> tuple[nn.Module, dict]:
    """(model in eval mode, checkpoint dict): the checkpoint's model, at its own bit widths or
    the ones given, with its weights."""
    from models.zoo import build_model

    ckpt = read_checkpoint(path)
    model = build_model(ckpt["model"],
                        weight_bits=ckpt["weight_bits"] if weight_bits is None else weight_bits,
                        act_bits=ckpt["act_bits"] if act_bits is None else act_bits)
    load_weights(model, path, ckpt)
    return model.eval(), ckpt


def quantizer_runtime_state(model: nn.Module) -> dict:
    """What Brevitas keeps outside the state dict: an activation quantizer collects statistics
    for its first steps (`counter`, `buffer`) before its scale becomes a parameter. Needed to
    resume bit-exactly; `load_state_dict` alone marks the collection as finished."""
    from brevitas.core.scaling.standalone import (
        ParameterFromRuntimeStatsScaling,
        ParameterFromStatsFromParameterScaling,
    )

    state = {}
    for name, m in model.named_modules():
        if isinstance(m, ParameterFromRuntimeStatsScaling):
            state[name] = {"counter": int(m.counter), "buffer": m.buffer.detach().clone(),
                           "value": m.value.detach().clone()}
        elif isinstance(m, ParameterFromStatsFromParameterScaling):
            state[name] = {"init_done": bool(m.init_done), "value": m.value.detach().clone()}
    return state


def restore_quantizer_runtime_state(model: nn.Module, state: dict) -> None:
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, s in state.items():
            m = modules[name]
            m.value.copy_(s["value"])
            if "counter" in s:
                m.counter = s["counter"]
                m.buffer.copy_(s["buffer"])
            else:
                m.init_done = s["init_done"]


def versions() -> dict:
    import brevitas

    return {"torch": str(torch.__version__), "brevitas": str(brevitas.__version__),
            "numpy": str(np.__version__), "python": platform.python_version()}


def save_checkpoint(path: Path, ckpt: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def inference_checkpoint(ckpt: dict) -> dict:
    """The checkpoint without the training state (optimizer, scheduler, RNG, masks): what to
    ship. Still loadable by `load_checkpoint`; not resumable."""
    drop = ("optimizer", "scheduler", "rng", "quantizer_state", "pruning")
    out = {k: v for k, v in ckpt.items() if k not in drop}
    if ckpt.get("pruning") is not None:
        out["pruning_rounds_done"] = ckpt["pruning"]["rounds_done"]
    return out


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, weight: float) -> torch.Tensor:
    """a T^2 KL(softmax(t/T) || softmax(s/T)) + (1 - a) CE(s, y), KL averaged over the batch
    (Hinton et al.: T^2 keeps the soft gradients' scale independent of T)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1),
                    F.log_softmax(teacher_logits / t, dim=1), reduction="batchmean",
                    log_target=True)
    return weight * t * t * soft + (1 - weight) * F.cross_entropy(student_logits, labels)


def rotate_iq(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Frames x (B, 2, L) of I/Q samples multiplied by j^k (k (B,) in 0..3): rotated by k x 90
    degrees. Exact: every factor is 0 or +-1."""
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=x.dtype)[k].view(-1, 1)
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=x.dtype)[k].view(-1, 1)
    i, q = x[:, 0], x[:, 1]
    return torch.stack([cos * i - sin * q, sin * i + cos * q], dim=1)


def _console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    out_dir: Path
    best: Path  # best.pt
    last: Path  # last.pt
    best_val_accuracy: float
    test_accuracy: float
    seconds: float
    history: list[dict] = field(default_factory=list)


class _Run:
    """Everything a training run holds; built (and every input checked) before any epoch."""

    def __init__(self, cfg: TrainConfig, command: list[str]):
        from flows.prune import MagnitudePruner
        from flows.radioml import make_loader
        from models.zoo import build_model

        cfg = cfg.with_recipe()
        cfg.check()
        resume_ckpt = self._check_resume(cfg) if cfg.resume is not None else None
        spec = cfg.spec
        init_ckpt = None
        if cfg.init is not None:
            init_ckpt = read_checkpoint(cfg.init)
            check_header(cfg.init, init_ckpt, model=cfg.model,
                              weight_bits=None if cfg.init_any_bits else cfg.weight_bits,
                              act_bits=None if cfg.init_any_bits else cfg.act_bits,
                              fix="Pass a checkpoint of this model and bit width (or "
                                  "--init-any-bits to fine-tune from another width)")
        self.teacher = self.teacher_spec = None
        if cfg.teacher is not None:
            self.teacher, teacher_ckpt = model_from_checkpoint(cfg.teacher)
            self.teacher_spec = _spec(teacher_ckpt["model"])
            if self.teacher_spec.dataset != spec.dataset:
                raise InputFileError(cfg.teacher, f"is a checkpoint of {teacher_ckpt['model']} "
                                     f"({self.teacher_spec.dataset})",
                                     expected=f"a teacher for {spec.dataset} data like the "
                                              f"student {cfg.model}")

        self.dataset = resolve_data(cfg.data, spec.dataset, cfg.synthetic_frames_per_cell,
                                    cfg.synthetic_seed)
        self.source = open_for_model(self.dataset["path"], spec)
        self.splits = make_splits(self.source)
        filt = dict(snr_min=cfg.snr_min, snr_max=cfg.snr_max, classes=cfg.classes)
        train = self.source.select(self.splits.train, **filt)
        if cfg.max_frames is not None and cfg.max_frames < len(train):
            rng = np.random.default_rng(cfg.seed)
            train = rng.choice(train, cfg.max_frames, replace=False)
        self.val_rows = self.source.select(self.splits.val, **filt) if len(self.splits.val) \
            else self.splits.val
        if len(self.val_rows) == 0:
            raise InputFileError(self.dataset["path"], "leaves no validation frame for model "
                                 "selection (too few frames per cell)",
                                 fix="Use a file with more frames per (class, SNR) cell")
        self.train_rows = np.sort(train)
        self.split_record = {"rule": self.splits.rule, "train_frames": len(self.train_rows),
                             "val_frames": len(self.val_rows),
                             "test_frames": len(self.splits.test),
                             "snr_min_db": cfg.snr_min, "snr_max_db": cfg.snr_max,
                             "classes": cfg.classes, "max_frames": cfg.max_frames}

        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, weight_bits=cfg.weight_bits, act_bits=cfg.act_bits)
        # Weights go in before the optimizer exists: Brevitas replaces its scale parameters
        # when loading a state dict, and an optimizer made earlier would step stale ones.
        if init_ckpt is not None:
            load_weights(self.model, cfg.init, init_ckpt)
        if resume_ckpt is not None:
            self.model.load_state_dict(resume_ckpt["state_dict"])
            restore_quantizer_runtime_state(self.model, resume_ckpt["quantizer_state"])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr,
                                          weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=cfg.restart_epochs)
        self.pruner = MagnitudePruner(self.model) if cfg.prune_rounds else None
        self.loader = make_loader(self.source, self.train_rows, batch_size=cfg.batch_size,
                                  shuffle=True, seed=cfg.seed, block_len=cfg.block_len,
                                  drop_last=len(self.train_rows) >= cfg.batch_size)
        self.val_loader = make_loader(self.source, self.val_rows, batch_size=max(cfg.batch_size,
                                                                                 256))
        self.cfg, self.spec, self.command = cfg, spec, command
        self.start_epoch, self.history = 0, []
        self.best_val, self.best_phase = -1.0, 0
        if resume_ckpt is not None:
            self._restore(resume_ckpt)

    # -- distillation from the unpruned model ----------------------------------------------
    def _teacher_from_unpruned(self) -> None:
        """The model as it is now (before the first pruning round) becomes the teacher: saved
        to teacher_unpruned.pt and read back from there, as a resumed run reads it."""
        path = self.cfg.out_dir / UNPRUNED_TEACHER
        with full_state_dict():
            state = self.model.state_dict()
        save_checkpoint(path, {"model": self.cfg.model, "weight_bits": self.cfg.weight_bits,
                               "act_bits": self.cfg.act_bits, "state_dict": state})
        self._load_unpruned_teacher(path)

    def _load_unpruned_teacher(self, path: Path) -> None:
        """Loaded as any --teacher checkpoint is (eval mode, the stored quantizer scales)."""
        self.teacher, _ = model_from_checkpoint(path)
        self.teacher_spec = self.spec

    # -- checks -----------------------------------------------------------------------------
    @staticmethod
    def _check_resume(cfg: TrainConfig) -> dict:
        ckpt = read_checkpoint(cfg.resume)
        fix = "Resume with the options of the original run (only --epochs and --out may change)"
        check_header(cfg.resume, ckpt, model=cfg.model, weight_bits=cfg.weight_bits,
                          act_bits=cfg.act_bits, fix=fix)
        if "optimizer" not in ckpt or "config" not in ckpt:
            raise InputFileError(cfg.resume, "holds no training state (an inference checkpoint, "
                                 "e.g. a shipped one?)", expected="last.pt or best.pt of a run",
                                 fix="Use --init to start a new run from its weights")
        try:
            saved = TrainConfig.from_dict(ckpt["config"]).with_recipe()
        except (ExtraKeysError, InvalidFieldValue, MissingField) as exc:
            raise InputFileError(cfg.resume, f"holds a training configuration this version "
                                 f"cannot read ({exc})", fix=fix) from None
        for name in _RESUME_FIELDS:
            old, new = getattr(saved, name), getattr(cfg, name)
            if isinstance(old, Path) or isinstance(new, Path):
                old, new = (str(Path(v).resolve()) if v is not None else None for v in (old, new))
            if old != new:
                raise InputFileError(cfg.resume, f"was trained with {name}={old!r}, this run asks "
                                     f"for {new!r}", fix=fix)
        data_now = cfg.data if cfg.data == "synthetic" else str(Path(cfg.data).resolve())
        data_then = saved.data if saved.data == "synthetic" else ckpt["dataset"]["path"]
        if data_now != data_then:
            raise InputFileError(cfg.resume, f"was trained on {data_then}, this run asks for "
                                 f"{data_now}", fix=fix)
        return ckpt

    def _restore(self, ckpt: dict) -> None:
        """The training state of `ckpt` (its weights are already loaded)."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.pruner is not None and ckpt.get("pruning") is not None:
            self.pruner.load_state_dict(ckpt["pruning"])
        if self.cfg.kd_from_unpruned and self.pruner is not None and self.pruner.rounds_done:
            src = Path(self.cfg.resume).with_name(UNPRUNED_TEACHER)
            if not src.is_file():
                raise InputFileError(src, "is missing: the run distils from the unpruned model "
                                     "and this checkpoint is past the first pruning round",
                                     fix="Resume from the run's own directory")
            dst = self.cfg.out_dir / UNPRUNED_TEACHER
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            self._load_unpruned_teacher(dst)
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.start_epoch, self.history = int(ckpt["epoch"]), list(ckpt["history"])
        self.best_val, self.best_phase = float(ckpt["best_val_accuracy"]), int(ckpt["best_phase"])
        best_src = Path(self.cfg.resume).with_name("best.pt")
        best_dst = self.cfg.out_dir / "best.pt"
        if best_src.is_file() and not best_dst.exists():
            best_dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(best_src, best_dst)
        elif not best_dst.exists():
            self.best_val = -1.0

    # -- one epoch --------------------------------------------------------------------------
    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, main logits) of a batch: CE (or the KD loss) on the main output, plus the
        cross-entropy of each auxiliary classifier (Imperial)."""
        xs = x.view(len(x), *self.spec.input_shape)
        aux: Sequence[torch.Tensor] = ()
        if hasattr(self.model, "forward_with_aux"):
            logits, *aux = self.model.forward_with_aux(xs)
        else:
            logits = self.model(xs)
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(x.view(len(x), *self.teacher_spec.input_shape))
            loss = kd_loss(logits, teacher_logits, y, self.cfg.kd_temperature,
                           self.cfg.kd_weight)
        else:
            loss = F.cross_entropy(logits, y)
        for a in aux:
            loss = loss + F.cross_entropy(a, y)
        return loss, logits

    def _train_epoch(self, epoch: int) -> dict:
        from tqdm import tqdm

        self.model.train()
        self.loader.sampler.set_epoch(epoch)
        total_loss, correct, seen = 0.0, 0, 0
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.cfg.total_epochs}",
                   unit="batch", leave=False, disable=None, file=sys.stderr)
        for x, y, _ in bar:
            if self.cfg.rotate_augment:  # the torch RNG: saved in the checkpoints (resume)
                x = rotate_iq(x, torch.randint(0, 4, (len(x),)))
            self.optimizer.zero_grad()
            loss, logits = self._loss(x, y)
            loss.backward()
            self.optimizer.step()
            if self.pruner is not None:
                self.pruner.apply()
            total_loss += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
        bar.close()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        return {"train_loss": total_loss / seen, "train_accuracy": correct / seen, "lr": lr}

    def _validate(self) -> float:
        from flows.evaluate import predict

        pred, y, _ = predict(self.model, self.val_loader, self.spec.input_shape)
        return float((pred == y).mean())

    # -- checkpoints ------------------------------------------------------------------------
    def _checkpoint(self, epoch: int, metrics: dict) -> dict:
        with full_state_dict():
            state = self.model.state_dict()
        return {
            "model": self.cfg.model, "weight_bits": self.cfg.weight_bits,
            "act_bits": self.cfg.act_bits, "state_dict": state,
            "format": CHECKPOINT_FORMAT, "epoch": epoch, "metrics": metrics,
            "history": self.history, "best_val_accuracy": self.best_val,
            "best_phase": self.best_phase, "dataset": self.dataset, "split": self.split_record,
            "classes": self.cfg.classes, "config": _jsonable(self.cfg.to_dict()),
            "command": self.command, "versions": versions(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "quantizer_state": quantizer_runtime_state(self.model),
            "pruning": self.pruner.state_dict() if self.pruner is not None else None,
            "sparsity": _sparsity(self.model),
        }

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        from flows.prune import print_report, sparsity_report

        cfg, out = self.cfg, self.cfg.out_dir
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "train_config.json",
                          json.dumps(_jsonable(cfg.to_dict()), indent=2) + "\n")
        console = _console()
        console.print(f"training {cfg.model} w{cfg.weight_bits}a{cfg.act_bits} on "
                      f"{self.dataset['path']}: {len(self.train_rows)} train / "
                      f"{len(self.val_rows)} val frames, epochs {self.start_epoch + 1}.."
                      f"{cfg.total_epochs}, out {out}", highlight=False)
        started = time.perf_counter()
        for epoch in range(self.start_epoch, cfg.total_epochs):
            phase = cfg.phase_of(epoch)
            if self.pruner is not None and phase > self.pruner.rounds_done:
                if cfg.kd_from_unpruned and self.pruner.rounds_done == 0:
                    self._teacher_from_unpruned()
                removed = self.pruner.prune_round(fraction=cfg.prune_fraction,
                                                  threshold=cfg.prune_threshold)
                self.best_val, self.best_phase = -1.0, phase  # best.pt: the final sparsity
                report = sparsity_report(self.model)
                console.print(f"pruning round {phase}: {removed} weights removed",
                              highlight=False)
                print_report(report, title=f"sparsity after pruning round {phase}")
            t0 = time.perf_counter()
            metrics = self._train_epoch(epoch)
            metrics["val_accuracy"] = self._validate()
            metrics.update(epoch=epoch + 1, phase=phase,
                           seconds=round(time.perf_counter() - t0, 3),
                           sparsity=_sparsity(self.model)["sparsity"])
            self.history.append(metrics)
            improved = metrics["val_accuracy"] > self.best_val
            if improved:
                self.best_val = metrics["val_accuracy"]
            ckpt = self._checkpoint(epoch + 1, metrics)
            save_checkpoint(out / "last.pt", ckpt)
            if improved:
                save_checkpoint(out / "best.pt", ckpt)
            console.print(
                f"epoch {epoch + 1}/{cfg.total_epochs}: loss {metrics['train_loss']:.4f}, "
                f"train acc {metrics['train_accuracy']:.3f}, val acc "
                f"{metrics['val_accuracy']:.3f}{' (best)' if improved else ''}, "
                f"{metrics['seconds']:.0f} s", highlight=False)
        seconds = time.perf_counter() - started
        ev = self.final_evaluation()
        if self.pruner is not None:
            print_report(sparsity_report(model_from_checkpoint(out / "best.pt")[0]),
                         title="sparsity of best.pt")
        return TrainResult(out, out / "best.pt", out / "last.pt", self.best_val, ev.accuracy,
                           seconds, self.history)

    def final_evaluation(self):
        """best.pt on the test split (the run's classes, every SNR): written to
        evaluation/ and into best.pt itself."""
        from flows.evaluate import print_summary, write_evaluation

        best = self.cfg.out_dir / "best.pt"
        model, ckpt = model_from_checkpoint(best)
        ev = evaluate_rows(model, ckpt, self.source, self.splits.test, split="test",
                           classes=self.cfg.classes, checkpoint=best)
        write_evaluation(ev, self.cfg.out_dir / "evaluation")
        ckpt["evaluation"] = ev.to_dict()
        save_checkpoint(best, ckpt)
        print_summary(ev, self.cfg.out_dir / "evaluation")
        return ev


def _spec(name: str):
    from models.registry import get_model_spec

    return get_model_spec(name)


def _sparsity(model: nn.Module) -> dict:
    from flows.prune import report_dict, sparsity_report

    return report_dict(sparsity_report(model))


def _jsonable(d: dict) -> dict:
    """Paths as strings (checkpoints load with weights_only=True, which refuses Path)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def train(cfg: TrainConfig, command: list[str] | None = None) -> TrainResult:
    """Run one training (see the module docstring); every input is checked before the first
    epoch. `command` is recorded in the checkpoints (default: the equivalent command line)."""
    if command is None:
        command = ["python", "-m", "flows.train", *cfg.to_argv()]
    return _Run(cfg, command).run()


# --------------------------------------------------------------------------------------------
# Evaluation of checkpoints (flows.evaluate's command line uses this)
# --------------------------------------------------------------------------------------------

def evaluate_rows(model: nn.Module, ckpt: dict, source, rows: np.ndarray, *, split: str,
                  snr_min: int | None = None, snr_max: int | None = None,
                  classes: Sequence[str] | None = None, checkpoint=None,
                  batch_size: int = 512):
    """`flows.evaluate.Evaluation` of `model` on `rows` of `source` after the filters."""
    from flows.evaluate import predict, summarize
    from flows.radioml import make_loader

    rows = source.select(rows, snr_min=snr_min, snr_max=snr_max, classes=classes)
    loader = make_loader(source, rows, batch_size=batch_size)
    pred, y, snr = predict(model, loader, _spec(ckpt["model"]).input_shape)
    return summarize(pred, y, snr, source.classes, model=ckpt["model"],
                     weight_bits=ckpt["weight_bits"], act_bits=ckpt["act_bits"],
                     checkpoint=None if checkpoint is None else str(checkpoint),
                     data=str(source.path), split=split, snr_min_db=snr_min, snr_max_db=snr_max)


def evaluate_checkpoint(checkpoint, data: str, *, split: str = "test", snr_min=None,
                        snr_max=None, classes=None, out_dir=None, batch_size: int = 512,
                        synthetic_frames_per_cell: int | None = None,
                        synthetic_seed: int | None = None):
    """Evaluate a checkpoint file and write the report; returns (Evaluation, out_dir)."""
    from flows.evaluate import write_evaluation

    model, ckpt = model_from_checkpoint(checkpoint)
    spec = _spec(ckpt["model"])
    trained = ckpt.get("dataset") or {}
    if synthetic_frames_per_cell is None:
        synthetic_frames_per_cell = (trained.get("frames_per_cell")
                                     or DEFAULT_SYNTHETIC_FRAMES_PER_CELL)
    if synthetic_seed is None:
        synthetic_seed = trained.get("seed") or 0
    record = resolve_data(data, spec.dataset, synthetic_frames_per_cell, synthetic_seed)
    source = open_for_model(record["path"], spec)
    if classes is None:
        classes = ckpt.get("classes")
    ev = evaluate_rows(model, ckpt, source, make_splits(source).part(split), split=split,
                       snr_min=snr_min, snr_max=snr_max, classes=classes,
                       checkpoint=checkpoint, batch_size=batch_size)
    if out_dir is None:
        out_dir = (REPO_ROOT / "build" / "evaluate"
                   / f"{ckpt['model']}_{Path(checkpoint).stem}_{split}")
    write_evaluation(ev, Path(out_dir))
    return ev, Path(out_dir)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from models.registry import load_zoo

    models = load_zoo()
    p = argparse.ArgumentParser(
        prog="python -m flows.train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Quantization-aware training of a zoo model (published recipe by default).",
        epilog="models:\n" + "\n".join(f"  {m.name:<22} {m.description}"
                                       for m in sorted(models.values(), key=lambda m: m.name)))
    a = p.add_argument
    a("--model", required=True, choices=sorted(models), metavar="MODEL", help="zoo model")
    a("--data", required=True, metavar="FILE|synthetic",
      help="RadioML file of the model's format, or 'synthetic' (generated once under data/)")
    a("--out", type=Path, help="output directory (default build/train/<model>_w<W>a<A>)")
    a("--bits", type=int, help="weight and activation bits (default: the model's)")
    a("--epochs", type=int, help="training epochs before any pruning (default: recipe, 20)")
    a("--batch-size", type=int, help="default: recipe (1024)")
    a("--lr", type=float, help="Adam learning rate (default: recipe, 0.01)")
    a("--weight-decay", type=float, help="Adam weight decay (default: recipe)")
    a("--restart-epochs", type=int, default=5, help="T_0 of the cosine warm restarts (5)")
    a("--snr-min", type=int, help="lowest training SNR, dB (default: recipe, else all)")
    a("--snr-max", type=int, help="highest training SNR, dB (default: all)")
    a("--classes", nargs="+", metavar="CLASS", help="train on these classes only")
    a("--seed", type=int, default=0, help="initial weights and batch order (default 0)")
    a("--resume", type=Path, metavar="CKPT", help="continue a run from its last.pt")
    a("--init", type=Path, metavar="CKPT", help="start from these weights")
    a("--init-any-bits", action="store_true",
      help="allow --init from another bit width (fine-tune to these bits)")
    a("--teacher", type=Path, metavar="CKPT", help="knowledge distillation from this checkpoint")
    a("--kd-temperature", type=float, default=4.0, help="KD temperature T (default 4)")
    a("--kd-weight", type=float, default=0.5, help="KD weight a (default 0.5)")
    a("--kd-from-unpruned", action="store_true",
      help="distil the fine-tuning after pruning from the unpruned model (Imperial's recipe)")
    a("--prune-rounds", type=int, default=0, help="magnitude pruning rounds after training")
    a("--prune-fraction", type=float, help="share of the live weights removed per round")
    a("--prune-threshold", type=float, help="or: remove weights with |w| below this")
    a("--finetune-epochs", type=int, default=2, help="epochs after each pruning round (2)")
    a("--rotate-augment", action=argparse.BooleanOptionalAction, default=None,
      help="rotate each training frame by a random multiple of 90 degrees (default: recipe; "
           "on for ulcnn)")
    a("--max-frames", type=int, help="cap on training frames (seeded random subset)")
    a("--synthetic-frames-per-cell", type=int, default=DEFAULT_SYNTHETIC_FRAMES_PER_CELL,
      help=f"frames per (class, SNR) cell of --data synthetic "
           f"(default {DEFAULT_SYNTHETIC_FRAMES_PER_CELL})")
    a("--synthetic-seed", type=int, default=0, help="generator seed of --data synthetic (0)")
    a("--block-len", type=int, default=8, help="rows per contiguous read when shuffling (8)")
    return p


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    args = _parser().parse_args(argv)
    return TrainConfig(**vars(args))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = config_from_args(argv)
    try:
        result = train(cfg, command=["python", "-m", "flows.train", *argv])
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; last.pt holds the last finished epoch (--resume it).",
              file=sys.stderr)
        return 130
    _console().print(f"done in {result.seconds:.0f} s: best val accuracy "
                     f"{result.best_val_accuracy:.4f}, test accuracy {result.test_accuracy:.4f}; "
                     f"{result.best}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
