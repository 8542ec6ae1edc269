"""FINN build steps: QONNX export to folded HW layers, estimates and generated code.

Each step is a plain chain of `hw.finn_flow` stages. Every step that changes the graph executes
the whole network on the verification frames and compares it with the golden (Brevitas)
logits (`_verify`): top-1 classes identical, logits within `cfg.verify_atol` for all but
`cfg.verify_off_fraction` of the frames (quantization-boundary rounding), and every frame
within `cfg.verify_atol + cfg.verify_rtol x` its largest |golden logit| (the median frame's if
larger). The result is
appended to `OUT/report/verification.json`; a mismatch stops the build, names the step and the
first diverging node, and leaves frames, logits and the model in `OUT/report/mismatch/`.

After `partition` the flow carries the HW-only dataflow model; the parent graph (input
layout change + one StreamingDataflowPartition, and a model's host part: a HostPartition) is
kept beside it in `intermediate/`.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flows.config import BuildConfig
from flows.errors import ToolchainError
from flows.fileio import atomic_path, atomic_write_text
from flows.steps import ONNX_CHECKPOINT, build_step

PARENT_NAME = "partition_parent.onnx"


def _finn(cfg: BuildConfig):
    """Prepare finn-plus for this build (idempotent) and return the stage module."""
    # Execute without rounding tensors to their annotated datatypes: a stage whose values
    # leave their datatype then shows up as a difference instead of being silently repaired.
    os.environ.setdefault("SANITIZE_QUANT_TENSORS", "0")
    from hw.finn_env import configure_finn

    configure_finn(cfg.out_dir / "finn")
    from hw import finn_flow

    return finn_flow


def _finn_stage(stage: str, cfg: BuildConfig, model, *args, **kwargs):
    """Run the `hw.finn_flow` stage `stage`. FINN and qonnx fail on graphs they cannot map with
    assorted exceptions (an IndexError deep in a transformation): that becomes one error naming
    the stage and the model, with the traceback kept in `report/<stage>_error.log`."""
    import traceback

    try:
        return getattr(_finn(cfg), stage)(model, *args, **kwargs)
    except ToolchainError:
        raise
    except Exception as exc:  # noqa: BLE001  (see the docstring)
        log = cfg.report_dir / f"{stage}_error.log"
        atomic_write_text(log, traceback.format_exc())
        raise ToolchainError(
            f"FINN's {stage} failed on {cfg.model}'s graph: {type(exc).__name__}: {exc} "
            f"(traceback in {log}). {cfg.model}: {cfg.model_spec.description}") from None


def _parent(cfg: BuildConfig):
    from qonnx.core.modelwrapper import ModelWrapper

    path = cfg.intermediate_dir / PARENT_NAME
    if not path.exists():
        raise ToolchainError(f"{path} is missing: rerun the build from the partition step "
                             "(--from partition).")
    return ModelWrapper(str(path))


def _whole(model, cfg: BuildConfig, dataflow: bool):
    """The whole network: `model` itself, or the dataflow model put back into its parent."""
    if not dataflow:
        return model
    return _finn(cfg).with_dataflow_model(_parent(cfg), model)


def _verify(step: str, model, previous, cfg: BuildConfig, *, dataflow: bool = False,
            node_by_node: bool = True) -> None:
    """Compare the whole network after `step` with the golden logits; record and raise.

    During a build the check runs in the background process (`flows.background`) while the
    next step runs; its result is recorded, or raised, when the build collects it."""
    from flows import background

    _finn(cfg)
    whole = _whole(model, cfg, dataflow)
    previous = previous if node_by_node else None
    job = _VerifyJob(step=step, frames=str(cfg.data_dir / "verify_frames.npz"),
                     golden=str(cfg.report_dir / "golden_outputs.npz"),
                     input_shape=tuple(cfg.model_spec.input_shape), atol=cfg.verify_atol,
                     rtol=cfg.verify_rtol, off_fraction=cfg.verify_off_fraction,
                     evidence_dir=str(cfg.report_dir / "mismatch" / step))
    work = background.active()
    if work is None:
        _record_check(cfg, job, _run_verify_job(job, whole, previous))
        return
    work.submit(step, _run_verify_job, job, whole.model.SerializeToString(),
                None if previous is None else previous.model.SerializeToString(),
                on_done=lambda outcome: _record_check(cfg, job, outcome))


def _as_model(model):
    """A ModelWrapper from itself, or from the serialized proto a background job receives
    (None stays None)."""
    if not isinstance(model, bytes):
        return model
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper

    return ModelWrapper(onnx.load_model_from_string(model))


@dataclass(frozen=True)
class _VerifyJob:
    """What one check needs besides the two graphs (plain values: it crosses processes)."""

    step: str
    frames: str  # verify_frames.npz
    golden: str  # golden_outputs.npz
    input_shape: tuple[int, ...]
    atol: float
    rtol: float
    off_fraction: float
    evidence_dir: str


def _run_verify_job(job: _VerifyJob, whole, previous) -> dict:
    """Execute and compare (in this process or the background one): the record's outcome
    fields, or {"error": ..., "raise": ...} when the check fails."""
    from hw import finn_flow as ff

    started = time.perf_counter()
    frames = np.load(job.frames)["x"]
    frames = frames.reshape(len(frames), *job.input_shape).astype(np.float32)
    golden = np.load(job.golden)["logits"]
    try:
        check = ff.verify(job.step, _as_model(whole), frames, golden,
                          previous=_as_model(previous),
                          atol=job.atol, max_off_fraction=job.off_fraction, rtol=job.rtol,
                          evidence_dir=job.evidence_dir)
    except ToolchainError as exc:
        return {"error": str(exc), "raise": str(exc)}
    except Exception as exc:  # noqa: BLE001  (FINN/qonnx execution raises anything)
        return {"error": f"{type(exc).__name__}: {exc}",
                "raise": f"verification after {job.step} could not execute the graph: "
                         f"{type(exc).__name__}: {exc}"}
    return {"frames": int(len(frames)), "classes_equal": check.classes_equal,
            "frames_within_atol": check.frames_within(job.atol),
            "max_abs_diff": check.max_abs_diff,
            "seconds": round(time.perf_counter() - started, 3)}


def _record_check(cfg: BuildConfig, job: _VerifyJob, outcome) -> None:
    """Append the check's record to verification.json; raise if it failed."""
    if isinstance(outcome, BaseException):  # the background process itself failed
        outcome = {"error": f"{type(outcome).__name__}: {outcome}",
                   "raise": f"verification after {job.step} could not run: "
                            f"{type(outcome).__name__}: {outcome}"}
    record = {"step": job.step, "frames": outcome.get("frames", cfg.verify_frames),
              "atol": job.atol, "rtol": job.rtol}
    if "raise" in outcome:
        record.update(passed=False, error=outcome["error"])
        _record_verification(cfg, record)
        raise ToolchainError(outcome["raise"])
    record.update(passed=True, classes_equal=outcome["classes_equal"],
                  frames_within_atol=outcome["frames_within_atol"],
                  max_abs_diff=outcome["max_abs_diff"], seconds=outcome["seconds"])
    _record_verification(cfg, record)


def _record_verification(cfg: BuildConfig, record: dict) -> None:
    path = cfg.report_dir / "verification.json"
    records = json.loads(path.read_text()) if path.exists() else []
    records = [r for r in records if r["step"] != record["step"]] + [record]
    atomic_write_text(path, json.dumps(records, indent=2) + "\n")


@build_step("export_qonnx", ONNX_CHECKPOINT)
def step_export_qonnx(model, cfg: BuildConfig):
    """Export the Brevitas model to QONNX (TorchScript exporter) and check it against it.

    The QONNX graph, executed in Python, must reproduce the golden logits on the verification
    frames: this is the golden-model equivalence of the export.
    """
    ff = _finn(cfg)
    with atomic_path(cfg.intermediate_dir / "export.qonnx.onnx") as tmp:
        qonnx_model = ff.export_qonnx(model, cfg.model_spec.input_shape, tmp)
    _verify("export_qonnx", qonnx_model, None, cfg)
    return qonnx_model


@build_step("import_onnx", ONNX_CHECKPOINT)
def step_import_onnx(data_summary: dict, cfg: BuildConfig):
    """Read the user's QONNX file (`--onnx`), clean it up, and run it as the golden model.

    The graph executed in Python on the verification frames gives the golden logits
    (`OUT/report/golden_outputs.npz`) every later stage is compared with; the file itself is
    only read.
    """
    from flows.onnx_input import (CONVERTED_FROM_KEY, read_user_onnx,
                                  read_user_onnx_unconverted, sha256_of)

    model = read_user_onnx(cfg.onnx)
    converted = model.get_metadata_prop(CONVERTED_FROM_KEY) is not None
    frames = np.load(cfg.data_dir / "verify_frames.npz")
    x = frames["x"].reshape(len(frames["x"]), *cfg.model_spec.input_shape).astype(np.float32)
    try:
        golden = read_user_onnx_unconverted(cfg.onnx) if converted else model
        logits = _finn(cfg).execute(golden, x).reshape(len(x), -1)
    except Exception as exc:  # noqa: BLE001  (qonnx execution raises anything)
        raise ToolchainError(f"{cfg.onnx}: qonnx cannot execute the graph ({type(exc).__name__}: "
                             f"{exc}); expected a QONNX graph qonnx.core.onnx_exec runs") from None
    with atomic_path(cfg.report_dir / "golden_outputs.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, logits=logits.astype(np.float32), y=frames["y"], snr=frames["snr"])
    summary = {"model": cfg.model, "onnx": str(cfg.onnx), "onnx_sha256": sha256_of(cfg.onnx),
               "weight_bits": cfg.model_spec.default_bits, "dataset": cfg.model_spec.dataset,
               "input_shape": list(cfg.model_spec.input_shape), "golden": "the QONNX graph",
               "verify_frames": int(len(logits)),
               "verify_accuracy": float(np.mean(logits.argmax(1) == frames["y"]))}
    atomic_write_text(cfg.report_dir / "model.json", json.dumps(summary, indent=2) + "\n")
    if converted:  # the opset conversion must not change what the file computes
        _verify("import_onnx", model, None, cfg)
    return model


@build_step("cost", None)
def step_cost(model, cfg: BuildConfig):
    """Report bit operations and weight/activation memory of the QONNX graph (qonnx's
    inference cost), sparsity-discounted and dense, per layer, with the challenge score
    against the 8-bit VGG10 baseline the tool computes itself; list every op not costed.

    Writes `report/cost.json` and `report/cost.md` and prints the table. During a build the
    analysis runs in the background process while the next steps run.
    """
    from flows import background

    work = background.active()
    if work is None:
        _write_cost(cfg, _cost_job(model))
    else:
        work.submit("cost", _cost_job, model.model.SerializeToString(),
                    on_done=lambda report: _write_cost(cfg, report), before_next_step=False)
    return model


def _cost_job(model):
    """The scored cost report of a QONNX model (a ModelWrapper or its serialized proto)."""
    from flows.cost import cost_report, scored

    return scored(cost_report(_as_model(model)))


def _write_cost(cfg: BuildConfig, report) -> None:
    from flows.cost import print_cost_report, write_cost_report

    if isinstance(report, ToolchainError):
        raise report
    if isinstance(report, BaseException):
        raise ToolchainError(f"the cost report failed: {type(report).__name__}: {report}")
    write_cost_report(report, cfg.report_dir)
    print_cost_report(report)


@build_step("to_finn", ONNX_CHECKPOINT)
def step_to_finn(model, cfg: BuildConfig):
    """Convert QONNX to FINN-ONNX: weight quantizers folded, activations to MultiThreshold."""
    out = _finn_stage("to_finn", cfg, model)
    _verify("to_finn", out, None, cfg)
    return out


@build_step("streamline", ONNX_CHECKPOINT)
def step_streamline(model, cfg: BuildConfig):
    """Streamline: scales and biases into thresholds, convolutions lowered, integer tensors.

    Handles residual adds and forks with the project's fork-safe transformations (see
    `hw.transforms`). Tensor names are reused across this step for other values, so a
    mismatch here is reported against the golden logits, not node by node.
    """
    out = _finn_stage("streamline", cfg, model)
    _verify("streamline", out, None, cfg)
    return out


@build_step("label_select", ONNX_CHECKPOINT)
def step_label_select(model, cfg: BuildConfig):
    """Append a top-1 selection so the accelerator returns the class; the output scale it
    absorbs is kept as metadata, so logits stay checkable."""
    out = _finn_stage("insert_topk", cfg, model, k=1)
    _verify("label_select", out, model, cfg)
    return out


@build_step("convert_to_hw", ONNX_CHECKPOINT)
def step_convert_to_hw(model, cfg: BuildConfig):
    """Map every layer onto FINN HW layers (MVAU, VVAU, SWG, Thresholding, Pool, ...), then
    minimize weight and accumulator widths."""
    out = _finn_stage("convert_to_hw", cfg, model)
    _verify("convert_to_hw", out, model, cfg)
    return out


@build_step("partition", ONNX_CHECKPOINT)
def step_partition(model, cfg: BuildConfig):
    """Split off the dataflow partition: every HW layer in one StreamingDataflowPartition.

    The parent graph (what stays in software around it) is saved as
    `intermediate/partition_parent.onnx` and listed in `report/partition.json`, each node with
    its role and why it is not in HW (a HostPartition with the names of the model's nodes it
    runs); the flow continues with the dataflow model.
    """
    ff = _finn(cfg)
    try:
        parent = ff.partition(model, cfg.out_dir / "finn" / "partitions")
    except ToolchainError as exc:  # say what the model is: the zoo marks its unmappable forms
        raise ToolchainError(f"{exc} ({cfg.model}: {cfg.model_spec.description})") from None
    with atomic_path(cfg.intermediate_dir / PARENT_NAME) as tmp:
        parent.save(str(tmp))
    child = ff.dataflow_model(parent)
    software = [_software_node(parent, n) for n in parent.graph.node
                if n.op_type != "StreamingDataflowPartition"]
    summary = {"software_nodes": software, "hw_nodes": len(child.graph.node),
               "hw_op_types": sorted({n.op_type for n in child.graph.node})}
    atomic_write_text(cfg.report_dir / "partition.json", json.dumps(summary, indent=2) + "\n")
    _verify("partition", child, model, cfg, dataflow=True)
    return child


def _software_node(parent, node) -> dict:
    """One node left outside the HW partition, for `report/partition.json`: its name, op type,
    role and why it is software."""
    from qonnx.custom_op.registry import getCustomOp

    entry = {"name": node.name, "op_type": node.op_type}
    inputs = {i.name for i in parent.graph.input}
    readers = parent.find_consumers(node.output[0]) if node.output else []
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
    if node.op_type == "Transpose" and perm == [0, 2, 3, 1] and readers and all(
            r.op_type == "StreamingDataflowPartition" for r in readers):
        entry.update(role="input layout change",
                     why="the host passes frames channels-first (NCHW); the HW layers stream "
                         "channels-last (NHWC)")
    elif node.op_type == "HostPartition":
        names = list(getCustomOp(node).get_nodeattr("node_names"))
        entry.update(role="host part of the model",
                     why="computed in software from the raw frame by the model's definition "
                         "(ops FINN has no HW layer for), with the layers that combine it with "
                         "the HW result",
                     host_nodes=names,  # node names of intermediate/02_export_qonnx.onnx
                     host_op_types=sorted({n.op_type for n in
                                           getCustomOp(node).get_nodeattr("body").node}))
    elif node.op_type == "TopK" and parent.find_producer(node.input[0]) is not None and \
            parent.find_producer(node.input[0]).op_type == "HostPartition":
        entry.update(role="top-1 class of the host part's logits",
                     why="the classifier producing the logits runs on the host")
    elif node.input and node.input[0] in inputs:
        entry.update(role="input preprocessing",
                     why="float arithmetic on the raw frame before the input quantizer; FINN's "
                         "HW layers except thresholds and elementwise ops take integer inputs")
    else:
        entry.update(role="software", why="not mapped to a HW layer")
    return entry


@build_step("specialize", ONNX_CHECKPOINT)
def step_specialize(model, cfg: BuildConfig):
    """Choose the HLS or RTL implementation of every HW layer for the board's FPGA part."""
    out = _finn_stage("specialize", cfg, model, cfg.fpga_part)
    _verify("specialize", out, _whole(model, cfg, True), cfg, dataflow=True)
    return out


@build_step("fold", ONNX_CHECKPOINT)
def step_fold(model, cfg: BuildConfig):
    """Fold (PE/SIMD per layer) for the target frame rate, lowering it until the estimate fits.

    With `--folding FILE` the user's config is applied as it is. Otherwise the target is
    `--target-fps` or the board's realistic maximum; if the resource estimate exceeds
    `max_utilisation` of the board, the target is lowered step by step and the report says
    so. The config used is always written to `report/folding_config.json` (editable, and
    accepted back by --folding).
    """
    from flows.runner import console
    from hw.folding import (apply_folding_file, fold_to_fit, shortfall, shortfall_message,
                            write_folding_config)

    _finn(cfg)
    if cfg.folding is not None:
        out, search = apply_folding_file(model, cfg), None
    else:
        out, search = fold_to_fit(model, cfg)
    write_folding_config(out, cfg.report_dir / "folding_config.json")
    note_path = cfg.report_dir / "folding_shortfall.json"
    note = shortfall(search, cfg) if search is not None else None
    if note_path.exists():
        note_path.unlink()  # from an earlier run of this step
    if note is not None:
        atomic_write_text(note_path, json.dumps(note, indent=2) + "\n")
        console.print(f"[bold yellow]note:[/bold yellow] {shortfall_message(note, cfg)}",
                      highlight=False)
    if search is not None:
        atomic_write_text(cfg.report_dir / "folding_search.json",
                          json.dumps(search, indent=2) + "\n")
    _verify("fold", out, _whole(model, cfg, True), cfg, dataflow=True)
    return out


@build_step("estimate", None)
def step_estimate(model, cfg: BuildConfig):
    """Estimate resources, cycles, throughput and latency per layer and in total.

    Writes `report/estimates.json`, `report/estimates.md` and `report/estimates.png`, and
    prints the table. These are FINN's analytical estimates, not synthesis results.
    """
    from hw.estimates import estimate_report, write_estimate_report

    report = estimate_report(model, cfg)
    write_estimate_report(report, cfg)
    return model


@build_step("codegen", ONNX_CHECKPOINT)
def step_codegen(model, cfg: BuildConfig):
    """Generate every layer's HLS C++ / RTL sources under `OUT/finn/` without vendor tools.

    RTL layers get their filled Verilog/SystemVerilog and memory files; HLS layers their C++
    and Vitis HLS script, which only the vendor tools compile. `report/codegen.json` lists
    where each layer's code is.
    """
    from qonnx.custom_op.registry import getCustomOp

    ff = _finn(cfg)
    out = ff.generate_code(model, cfg.fpga_part, cfg.effective_clock_mhz)
    layers = []
    for node in out.graph.node:
        inst = getCustomOp(node)
        code_dir = inst.get_nodeattr("code_gen_dir_ipgen")
        files = sorted(p.name for p in Path(code_dir).iterdir()) if code_dir else []
        layers.append({"name": node.name, "op_type": node.op_type, "code_dir": code_dir,
                       "files": files})
    atomic_write_text(cfg.report_dir / "codegen.json", json.dumps(layers, indent=2) + "\n")
    missing = [layer["name"] for layer in layers if not layer["files"]]
    if missing:
        raise ToolchainError(f"code generation produced no files for {', '.join(missing)}")
    return out
