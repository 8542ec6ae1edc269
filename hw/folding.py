"""Folding: PE/SIMD per layer for a frame-rate target, lowered until the design fits the board.

FINN's SetFolding makes the slowest layer meet the target (clock / fps cycles per frame).
Parallelism costs resources roughly in proportion, so when the estimate exceeds the share of the
board the build may use, the target is scaled down by the overshoot and tried again. A user's
folding file (FINN's JSON format: node name -> {"PE": .., "SIMD": ..}) bypasses the search.
"""

from __future__ import annotations

import json
from pathlib import Path

from flows.errors import InputFileError, ToolchainError
from flows.fileio import atomic_path

# Node attributes that make up a folding config; written out and accepted back.
FOLDING_ATTRS = ("PE", "SIMD", "ram_style", "resType", "mem_mode", "parallel_window")
MAX_ATTEMPTS = 12
MIN_TARGET_FPS = 10.0
LIFTED_WWIDTH_MAX = 1 << 16  # effectively no cap on SIMD x weight bits


def utilisation(total: dict, board, max_utilisation: float) -> tuple[dict, bool]:
    """Share of each board resource the estimate uses, and whether all stay within the limit."""
    res = board.resources
    capacity = {"lut": res.lut, "bram18": res.bram18, "uram": res.uram, "dsp": res.dsp}
    used = {}
    for key, cap in capacity.items():
        need = total.get(key, 0)
        used[key] = (need / cap) if cap else (0.0 if need == 0 else float("inf"))
    return used, all(u <= max_utilisation for u in used.values())


def _attempt(model, cfg, target: float, wwidth_max: int) -> tuple[object, dict]:
    from hw import finn_flow as ff

    clock = cfg.effective_clock_mhz
    folded = ff.set_folding(model, target, clock, mvau_wwidth_max=wwidth_max)
    est = ff.estimates(folded, cfg.fpga_part, clock)
    used, fits = utilisation(est["total"], cfg.board_record, cfg.max_utilisation)
    return folded, {"target_fps": round(target, 1), "mvau_wwidth_max": wwidth_max,
                    "estimated_fps": round(est["throughput_fps"], 1),
                    "bottleneck": est["bottleneck"], **est["total"],
                    "utilisation": {k: round(v, 4) for k, v in used.items()}, "fits": fits}


def fold_to_fit(model, cfg) -> tuple[object, list[dict]]:
    """Fold for cfg.effective_target_fps; lower the target until the estimate fits.

    FINN's SetFolding stops widening an MVAU once SIMD x weight bits exceeds
    `mvau_wwidth_max` (36), which can leave the design far below its target (5.7x on FINN's
    own VGG10 example). When that happens the same target is tried with the cap lifted, and
    the faster design that fits is kept. Returns the folded model and the search: one record
    per attempt (target, cap, estimated frame rate, resources, utilisation, fits).
    """
    target = cfg.effective_target_fps
    search: list[dict] = []
    for _ in range(MAX_ATTEMPTS):
        folded, record = _attempt(model, cfg, target, cfg.mvau_wwidth_max)
        search.append(record)
        if record["fits"] and record["estimated_fps"] < 0.95 * target:
            lifted, lifted_record = _attempt(model, cfg, target, LIFTED_WWIDTH_MAX)
            search.append(lifted_record)
            if lifted_record["fits"] and \
                    lifted_record["estimated_fps"] > record["estimated_fps"]:
                folded, record = lifted, lifted_record
        if record["fits"]:
            record["chosen"] = True
            return folded, search
        overshoot = max(record["utilisation"].values()) / cfg.max_utilisation
        target = target * min(0.8, 0.95 / overshoot) if overshoot != float("inf") else 0.0
        if target < MIN_TARGET_FPS:
            break
    worst = search[-1]
    raise ToolchainError(
        f"{cfg.model} does not fit {cfg.board} ({cfg.max_utilisation:.0%} of its resources) "
        f"even at {worst['target_fps']:g} frames/s: the last estimate uses "
        + ", ".join(f"{k} {v:.0%}" for k, v in worst["utilisation"].items())
        + ". Try a larger board (--board), fewer bits (--bits) or a folding file (--folding).")


def apply_folding_file(model, cfg):
    """Apply the user's folding config to `model`, checking every node it names exists."""
    from finn.transformation.general import ApplyConfig

    from hw import finn_flow as ff

    path = Path(cfg.folding)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputFileError(path, "no such folding file",
                             fix="Pass --folding with a JSON file, e.g. the "
                                 "report/folding_config.json of an earlier build") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(path, f"not a readable JSON file ({exc})",
                             expected="FINN's folding config: {node name: {attr: value}}") \
            from None
    if not isinstance(config, dict):
        raise InputFileError(path, "holds no JSON object",
                             expected="FINN's folding config: {node name: {attr: value}}")
    names = {n.name for n in model.graph.node}
    unknown = sorted(k for k in config if k != "Defaults" and k not in names)
    if unknown:
        raise InputFileError(path, f"names layers this model does not have: {unknown[:5]}",
                             expected=f"layer names of this build, e.g. {sorted(names)[:3]}",
                             fix="Start from the report/folding_config.json of a build of "
                                 "the same model and board")
    try:
        model = model.transform(ApplyConfig(config))
    except Exception as exc:  # noqa: BLE001  (FINN raises assorted errors on bad attributes)
        raise InputFileError(path, f"cannot be applied: {exc}") from None
    return ff.minimize_bit_widths(model)


def write_folding_config(model, path: Path) -> None:
    """The folding of every layer as an editable JSON file that --folding accepts."""
    from qonnx.custom_op.registry import getCustomOp

    config = {"Defaults": {}}
    for node in model.graph.node:
        inst = getCustomOp(node)
        attrs = inst.get_nodeattr_types()
        config[node.name] = {a: inst.get_nodeattr(a) for a in FOLDING_ATTRS if a in attrs}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")
