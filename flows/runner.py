"""Run a flow: the steps between --from and --until, each leaving its checkpoint and time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flows.background import background
from flows.config import BuildConfig
from flows.errors import ToolchainError
from flows.fileio import atomic_write_text
from flows.presets import flow_for
from flows.steps import get_step, step_range

console = Console(stderr=True, soft_wrap=True)  # messages stay on one line: greppable

# Fields that must agree between a build directory and a run that resumes in it.
_RESUME_FIELDS = ("model", "board", "bits", "weights", "data", "verify_frames", "seed")


def checkpoint_path(cfg: BuildConfig, index: int, name: str) -> Path | None:
    """Where step `name` at position `index` leaves its output; None for a step that only
    reports and passes its input on unchanged."""
    checkpoint = get_step(name).checkpoint
    if checkpoint is None:
        return None
    return cfg.intermediate_dir / f"{index:02d}_{name}{checkpoint.suffix}"


def _resume_point(cfg: BuildConfig, names: list[str], start: int) -> tuple[int, Path]:
    """The last step before `start` that leaves a checkpoint, and that checkpoint."""
    for index in range(start - 1, -1, -1):
        path = checkpoint_path(cfg, index, names[index])
        if path is not None:
            return index, path
    raise ToolchainError(f"--from {cfg.from_step}: no earlier step leaves a checkpoint")


def _check_resumable(cfg: BuildConfig) -> None:
    saved = cfg.out_dir / "build_config.json"
    if not saved.exists():
        raise ToolchainError(f"--from {cfg.from_step}: {cfg.out_dir} holds no earlier build "
                             "(no build_config.json). Run without --from first.")
    old = BuildConfig.load(saved)
    for field in _RESUME_FIELDS:
        if getattr(old, field) != getattr(cfg, field):
            raise ToolchainError(
                f"--from {cfg.from_step}: {cfg.out_dir} was built with {field}="
                f"{getattr(old, field)!r}, this run asks for {getattr(cfg, field)!r}. "
                "Resume with the same options, or build into another --out.")


def _finish_step(cfg: BuildConfig, work, step, index: int, seconds: float, model,
                 records: dict, log_path: Path) -> None:
    """Write the step's checkpoint (staged until its checks pass) and its time."""
    path = checkpoint_path(cfg, index, step.name)
    staged = None
    if path is not None:
        staged = path.with_name(f"{path.stem}.unverified{path.suffix}")
        step.checkpoint.save(model, staged, cfg)

    def passed():
        if staged is not None:
            staged.replace(path)
        records[step.name] = {"step": step.name, "index": index, "seconds": round(seconds, 3),
                              "checkpoint": None if path is None
                              else str(path.relative_to(cfg.out_dir))}
        ordered = sorted(records.values(), key=lambda r: r["index"])
        atomic_write_text(log_path, json.dumps(ordered, indent=2) + "\n")

    def failed():
        if staged is not None and staged.exists():
            staged.replace(path.with_name(f"{path.stem}.failed-verification{path.suffix}"))

    work.when_checked(step.name, passed, failed)


def run_flow(cfg: BuildConfig, flow: tuple[str, ...] | None = None) -> Any:
    """Run `flow` (default: `flow_for(cfg)`) from cfg.from_step to cfg.until_step; return the
    last step's output."""
    names = list(flow if flow is not None else flow_for(cfg))
    start, stop = step_range(names, cfg)
    if start > stop:
        raise ToolchainError(f"--from {cfg.from_step} comes after --until {cfg.until_step}; "
                             f"the step order is: {' -> '.join(names)}.")
    model = None
    if start > 0:
        _check_resumable(cfg)
        index, prev = _resume_point(cfg, names, start)
        if not prev.exists():
            raise ToolchainError(f"--from {cfg.from_step} needs the checkpoint {prev}, which "
                                 f"does not exist. Run with --until {names[index]} first.")
        model = get_step(names[index]).checkpoint.load(prev, cfg)

    for d in (cfg.out_dir, cfg.intermediate_dir, cfg.report_dir, cfg.data_dir):
        d.mkdir(parents=True, exist_ok=True)
    cfg.save(cfg.out_dir / "build_config.json")

    log_path = cfg.report_dir / "steps.json"
    records = {r["step"]: r for r in json.loads(log_path.read_text())} if log_path.exists() else {}
    with background(cfg.out_dir / "finn") as work:
        for index in range(start, stop + 1):
            step = get_step(names[index])
            console.print(f"[bold][{index:02d}][/bold] {step.name}: {step.summary}")
            t0 = time.perf_counter()
            model = step.func(model, cfg)  # may leave its verification to `work`
            seconds = time.perf_counter() - t0
            work.settle(except_step=step.name)  # the earlier steps' checks pass first
            _finish_step(cfg, work, step, index, seconds, model, records, log_path)

    table = Table(title=f"build {cfg.model} for {cfg.board}: {cfg.out_dir}")
    for col in ("#", "step", "seconds", "checkpoint"):
        table.add_column(col)
    for r in sorted(records.values(), key=lambda r: r["index"]):
        table.add_row(f"{r['index']:02d}", r["step"], f"{r['seconds']:.2f}", r["checkpoint"] or "-")
    console.print(table)
    return model
