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
FOLDING_ATTRS = ("PE", "SIMD", "ram_style", "runtime_writeable_weights", "resType", "mem_mode",
                 "parallel_window")
MAX_ATTEMPTS = 12
MAX_LIFTED_ATTEMPTS = 5
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
                    "multipliers": "dsp" if ff.dsp_layers(model) else "lut",
                    "weights_in_uram": ff.uram_weight_layers(model),
                    "estimated_fps": round(est["throughput_fps"], 1),
                    "bottleneck": est["bottleneck"], **est["total"],
                    "utilisation": {k: round(v, 4) for k, v in used.items()}, "fits": fits}


def _dsp_bound(record: dict, cfg) -> bool:
    """DSPs are what the estimate runs out of, while LUTs are left: the case for moving the
    multipliers into LUTs."""
    used = record["utilisation"]
    return (used["dsp"] > cfg.max_utilisation and used["dsp"] == max(used.values())
            and used["lut"] < 0.5 * cfg.max_utilisation)


def _with_lut_multipliers_if_dsp_bound(model, cfg, target: float, wwidth_max: int, folded,
                                       record: dict, search: list[dict]):
    """(model, folded, record) to go on with: unchanged, or, when `record` ran out of DSPs with
    LUTs to spare and `model` still multiplies in DSPs, `model` with LUT multipliers
    (`finn_flow.lut_multipliers`) and its attempt at the same target (added to `search`).
    A model switched once has no DSP layer left, so it is never switched again."""
    from hw import finn_flow as ff

    if record["fits"] or not _dsp_bound(record, cfg) or not ff.dsp_layers(model):
        return model, folded, record
    model = ff.lut_multipliers(model, cfg.fpga_part)
    folded, record = _attempt(model, cfg, target, wwidth_max)
    search.append(record)
    return model, folded, record


def _with_uram_weights_if_bram_bound(model, cfg, target: float, wwidth_max: int, folded,
                                     record: dict, search: list[dict]):
    """(model, folded, record) to go on with: unchanged, or, when `record` runs out of block
    RAM on a board with UltraRAM, `model` with the weights of its largest MVAU memories moved
    to URAM (`finn_flow.weights_to_uram`), largest first until the rest fits the block RAM,
    and its attempt at the same target, if that attempt's largest utilisation is lower. The
    attempt is added to `search` either way."""
    from qonnx.custom_op.registry import getCustomOp

    from hw import finn_flow as ff

    res = cfg.board_record.resources
    used = record["utilisation"]
    if record["fits"] or not res.uram or used["bram18"] <= cfg.max_utilisation:
        return model, folded, record
    layers = ff.estimates(folded, cfg.fpga_part, cfg.effective_clock_mhz)["layers"]
    movable = {n.name for n in folded.graph.node if n.op_type.startswith("MVAU")
               and getCustomOp(n).get_nodeattr("mem_mode") == "internal_decoupled"
               and getCustomOp(n).get_nodeattr("ram_style") != "ultra"}
    excess = record["bram18"] - cfg.max_utilisation * res.bram18
    moved = []
    for layer in sorted(layers, key=lambda l: -l["bram18"]):
        if excess <= 0 or layer["bram18"] == 0:
            break
        if layer["name"] in movable:
            moved.append(layer["name"])
            excess -= layer["bram18"]
    if not moved:
        return model, folded, record
    uram_model = ff.weights_to_uram(model, moved)
    uram_folded, uram_record = _attempt(uram_model, cfg, target, wwidth_max)
    search.append(uram_record)
    # URAM is 72 bits x 4,096 deep: wide, shallow memories waste most of it. Keep the move only
    # if it brings the design closer to fitting (hakimi7 on ZCU104 would need 3.6x the URAM).
    if max(uram_record["utilisation"].values()) >= max(used.values()):
        return model, folded, record
    return uram_model, uram_folded, uram_record


def fold_to_fit(model, cfg) -> tuple[object, list[dict]]:
    """Fold for cfg.effective_target_fps; lower the target until the estimate fits.

    FINN's SetFolding stops widening an MVAU once SIMD x weight bits exceeds
    `mvau_wwidth_max` (36), which can leave the design far below its target (5.7x on FINN's
    own VGG10 example; 24x for the 8-bit VGG10 on ZCU104). When the capped design fits but
    misses the target, the cap is lifted and the target lowered from where it was until a
    lifted design fits, then raised half-way back (geometrically) while it still fits; the
    fastest design that fits is kept. Returns the folded model and the search: one record per
    attempt (target, cap, multipliers, estimated frame rate, resources, utilisation, fits).

    A design that runs out of DSP slices with most LUTs unused is tried again with every
    MVAU/VVAU multiplying in LUTs (`finn_flow.lut_multipliers`), and the search goes on with
    those. Only when no design fits in block RAM, on a board with UltraRAM, the search runs
    again moving the largest weight memories of designs short of block RAM to URAM
    (`finn_flow.weights_to_uram`): the driver cannot load URAM weights yet, so such a design
    gets no deploy package, and a slower design without them is preferred.
    """
    search: list[dict] = []
    found = _search(model, cfg, search, uram=False)
    if found is None and cfg.board_record.resources.uram:
        found = _search(model, cfg, search, uram=True)  # block RAM alone cannot hold it
    if found is not None:
        return found, search
    worst = search[-1]
    smallest = min(search, key=lambda r: max(r["utilisation"].values()))
    holding = _boards_holding({k: smallest[k] for k in ("lut", "bram18", "uram", "dsp")}, cfg)
    raise ToolchainError(
        f"{cfg.model} does not fit {cfg.board} ({cfg.max_utilisation:.0%} of its resources) "
        f"even at {worst['target_fps']:g} frames/s: the last estimate uses "
        + ", ".join(f"{k} {v:.0%}" for k, v in worst["utilisation"].items())
        + ". Its smallest design estimated (" + f"{smallest['estimated_fps']:,.0f} frames/s) fits "
        + (", ".join(holding) + " (smallest first)" if holding else "no board listed here")
        + ". Try a larger board (--board), fewer bits (--bits) or a folding file (--folding).")


def _search(model, cfg, search: list[dict], uram: bool):
    """fold_to_fit's search from the first target, its attempts added to `search`: the chosen
    folded model (its record marked "chosen"), or None if nothing fits. With `uram`, designs
    short of block RAM may move weights to URAM."""
    target = cfg.effective_target_fps
    for _ in range(MAX_ATTEMPTS):
        folded, record = _attempt(model, cfg, target, cfg.mvau_wwidth_max)
        search.append(record)
        model, folded, record = _with_lut_multipliers_if_dsp_bound(
            model, cfg, target, cfg.mvau_wwidth_max, folded, record, search)
        if uram:
            model, folded, record = _with_uram_weights_if_bram_bound(
                model, cfg, target, cfg.mvau_wwidth_max, folded, record, search)
        if record["fits"]:
            if record["estimated_fps"] < 0.95 * target:
                folded, record = _faster_with_cap_lifted(model, cfg, target, folded, record,
                                                         search)
            record["chosen"] = True
            return folded
        target = _lowered(target, record, cfg)
        if target < MIN_TARGET_FPS:
            return None
    return None


def _boards_holding(total: dict, cfg) -> list[str]:
    """Boards whose resources hold `total` within cfg.max_utilisation, smallest first."""
    from hw.boards import BOARDS

    return [b.name for b in sorted(BOARDS.values(), key=lambda b: b.resources.lut)
            if utilisation(total, b, cfg.max_utilisation)[1]]


def _lowered(target: float, record: dict, cfg) -> float:
    """The next target after an estimate that does not fit: what the design reached (SetFolding
    can stop far below a high target) scaled down by the overshoot."""
    overshoot = max(record["utilisation"].values()) / cfg.max_utilisation
    reached = min(target, record["estimated_fps"])
    return reached * min(0.8, 0.95 / overshoot) if overshoot != float("inf") else 0.0


def _faster_with_cap_lifted(model, cfg, target: float, folded, record: dict,
                            search: list[dict]) -> tuple[object, dict]:
    """The capped design (`folded`, `record`) fits but misses `target`: search targets between
    its frame rate and `target` with the cap lifted; return the fastest design that fits.

    When a lifted design runs out of DSP slices with LUTs to spare, the search goes on (once)
    with every MVAU/VVAU multiplying in LUTs (`finn_flow.lut_multipliers`), at the same
    target."""
    best, best_record = folded, record
    floor = record["estimated_fps"]
    too_high = None  # lowest lifted target known not to fit
    for _ in range(MAX_LIFTED_ATTEMPTS):
        if target <= floor * 1.05:
            break
        lifted, lifted_record = _attempt(model, cfg, target, LIFTED_WWIDTH_MAX)
        search.append(lifted_record)
        model, lifted, lifted_record = _with_lut_multipliers_if_dsp_bound(
            model, cfg, target, LIFTED_WWIDTH_MAX, lifted, lifted_record, search)
        if lifted_record["fits"]:
            if lifted_record["estimated_fps"] > best_record["estimated_fps"]:
                best, best_record = lifted, lifted_record
            if too_high is None or too_high < target * 1.1:
                break
            floor, target = target, (target * too_high) ** 0.5  # half-way back up
        else:
            too_high = target
            target = max(_lowered(target, lifted_record, cfg), floor)
            if target <= floor * 1.05 and too_high > floor * 1.1:
                target = (floor * too_high) ** 0.5  # the overshoot says floor: try between
    return best, best_record


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
    if unknown and ff.dsp_layers(model):
        # a config from a build whose search moved the multipliers into LUTs names the HLS
        # layers that this build's RTL ones become then (MVAU_rtl_3 -> MVAU_hls_3)
        lut_model = ff.lut_multipliers(model, cfg.fpga_part)
        lut_names = {n.name for n in lut_model.graph.node}
        if all(k == "Defaults" or k in lut_names for k in config):
            model, names, unknown = lut_model, lut_names, []
    if unknown:
        raise InputFileError(path, f"names layers this model does not have: {unknown[:5]}",
                             expected=f"layer names of this build, e.g. {sorted(names)[:3]}",
                             fix="Start from the report/folding_config.json of a build of "
                                 "the same model and board")
    try:
        model = model.transform(ApplyConfig(config))
    except Exception as exc:  # noqa: BLE001  (FINN raises assorted errors on bad attributes)
        raise InputFileError(path, f"cannot be applied: {exc}") from None
    from qonnx.custom_op.registry import getCustomOp

    in_uram = set(ff.uram_weight_layers(model))
    fixed_uram = [n.name for n in model.graph.node if n.name in in_uram
                  and not getCustomOp(n).get_nodeattr("runtime_writeable_weights")]
    if fixed_uram:  # FINN asserts this only at code generation
        raise InputFileError(path, f"puts the weights of {', '.join(fixed_uram)} in URAM "
                             "(ram_style \"ultra\") without runtime_writeable_weights",
                             fix="Set \"runtime_writeable_weights\": 1 for those layers: the "
                                 "bitstream cannot initialise URAM on UltraScale+")
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


def shortfall(search: list[dict], cfg) -> dict | None:
    """When the chosen design misses the first target: the target, what was reached, and the
    boards whose resources would hold the fastest design estimated at the target (at this
    build's clock), smallest first. None when the target was met."""
    chosen = next(r for r in search if r.get("chosen"))
    target = search[0]["target_fps"]
    if chosen["estimated_fps"] >= 0.95 * target:
        return None
    at_target = max((r for r in search if r["target_fps"] == target),
                    key=lambda r: r["estimated_fps"])
    total = {k: at_target[k] for k in ("lut", "bram18", "uram", "dsp")}
    return {"target_fps": target, "reached_fps": chosen["estimated_fps"],
            "design_at_target_fps": at_target["estimated_fps"],
            "design_at_target_resources": total,
            "boards_that_hold_it": _boards_holding(total, cfg)}


def shortfall_message(note: dict, cfg) -> str:
    boards = note["boards_that_hold_it"]
    return (f"{cfg.model} does not reach {note['target_fps']:,.0f} frames/s on {cfg.board} within "
            f"{cfg.max_utilisation:.0%} of its resources: the best folding that fits gives "
            f"{note['reached_fps']:,.0f} frames/s (report/folding_config.json). The design folded "
            f"for the target ({note['design_at_target_fps']:,.0f} frames/s: "
            + ", ".join(f"{v:,.0f} {k.upper()}" for k, v in
                        note["design_at_target_resources"].items() if v)
            + ") fits " + (", ".join(boards) + " (smallest first)" if boards else "no board "
                           "listed here") + ". Pass --target-fps to ask for less, or --board.")
