"""Bit operations and weight memory of a quantized model: the 2021 challenge's cost metric.

    python -m flows.cost --model bacalhaunet                       # untrained weights
    python -m flows.cost --checkpoint runs/vgg10/best.pt --out runs/vgg10/cost
    python -m flows.cost --checkpoint published.pth --model vgg10  # a bare state dict
    python -m flows.cost --onnx model_qonnx.onnx

The figures are qonnx's own (`qonnx.util.inference_cost` for the graph preprocessing and
`qonnx.analysis.inference_cost` per node): per Conv / MatMul / Gemm, bit operations = MACs x
input bits x weight bits and weight memory = weights x weight bits; with the sparsity discount
both count non-zero weights only. This module only arranges them in a typed report, keeps the
discounted and the dense figures side by side, and lists every node the analysis did not cost.

The challenge score is 0.5 x bops / bops(baseline) + 0.5 x weight bits / weight bits(baseline),
the baseline being the challenge's 8-bit VGG10. `baseline_cost()` computes it with this same
code from the challenge's trained checkpoint (`vgg10-challenge/pretrained_VGG10_w8a8_20.pth`
under ../shared/reference or $AMC_REFERENCE_DIR, sparsity discount on, which is how the
challenge normalised), or, without that file, from the dense cost of the 8-bit architecture
(weight-independent, about 2 % above the challenge's normalisers). No figure is typed in.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qonnx.core.modelwrapper import ModelWrapper

from flows.errors import InputFileError, ToolchainError
from flows.fileio import atomic_write_text
from models.checkpoints import load_state, read_checkpoint_file

__all__ = [
    "BaselineCost", "ChallengeScore", "CostReport", "CostTotals", "LayerCost", "OpRef",
    "baseline_cost", "challenge_score", "checkpoint_cost", "cost_markdown", "cost_report",
    "cost_score", "main", "model_cost", "print_cost_report", "reference_dir", "scored",
    "sweep_cost", "write_cost_report", "zoo_model_cost",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_ENV = "AMC_REFERENCE_DIR"  # overrides ../shared/reference (the repo's sibling)
BASELINE_MODEL = "vgg10"
BASELINE_BITS = 8
BASELINE_CHECKPOINT = Path("vgg10-challenge") / "pretrained_VGG10_w8a8_20.pth"


# --- the typed report ------------------------------------------------------------------------

@dataclass(frozen=True)
class OpRef:
    """A node of the costed graph (names as qonnx's preprocessing gives them: op type + index)."""

    name: str
    op_type: str


@dataclass(frozen=True)
class LayerCost:
    """One node qonnx costed (Conv, MatMul, Gemm, Upsample), per frame."""

    name: str
    op_type: str
    input_bits: int  # bits of the activation operand
    weight_bits: int  # bits of the weight operand (of the second operand when both are dynamic)
    weights: int  # weight elements (0 when both operands are dynamic)
    zero_weights: int  # of those, exactly zero after quantization
    macs_dense: float
    bops_dense: float  # macs x input bits x weight bits
    mem_w_bits_dense: float  # weights x weight bits
    macs_discounted: float  # zero weights discounted (qonnx discount_sparsity)
    bops_discounted: float
    mem_w_bits_discounted: float
    mem_o_bits: float  # output elements x output bits (qonnx's activation memory)

    @property
    def sparsity(self) -> float:
        return self.zero_weights / self.weights if self.weights else 0.0


@dataclass(frozen=True)
class CostTotals:
    """Sums over the costed layers, per frame."""

    total_bops: float
    total_mem_w_bits: float
    total_mem_o_bits: float
    total_macs: float
    total_weights: float  # weight elements counted (the non-zero ones when discounted)


@dataclass(frozen=True)
class BaselineCost:
    """The normalisers of the challenge score: the 8-bit VGG10's cost."""

    total_bops: float
    total_mem_w_bits: float
    kind: str  # "checkpoint" (the challenge's trained weights) or "dense" (architecture only)
    discount_sparsity: bool
    source: str  # where the figures come from, in words


@dataclass(frozen=True)
class ChallengeScore:
    score: float  # 0.5 x bops_ratio + 0.5 x mem_w_bits_ratio; the baseline scores 1.0
    bops_ratio: float
    mem_w_bits_ratio: float
    baseline: BaselineCost


@dataclass(frozen=True)
class CostReport:
    source: str  # what was costed, in words
    discount_sparsity: bool  # whether the headline totals (total_bops, ...) discount zero weights
    discounted: CostTotals
    dense: CostTotals
    layers: tuple[LayerCost, ...]
    zero_cost_ops: tuple[OpRef, ...]  # nodes the metric defines as free (qonnx's list)
    unsupported_ops: tuple[OpRef, ...]  # nodes the metric could not cost: not in any total
    qonnx_version: str
    score: ChallengeScore | None = None  # set by `scored`

    @property
    def headline(self) -> CostTotals:
        return self.discounted if self.discount_sparsity else self.dense

    @property
    def total_bops(self) -> float:
        return self.headline.total_bops

    @property
    def total_mem_w_bits(self) -> float:
        return self.headline.total_mem_w_bits

    @property
    def total_mem_o_bits(self) -> float:
        return self.headline.total_mem_o_bits

    @property
    def total_macs(self) -> float:
        return self.headline.total_macs

    @property
    def total_weights(self) -> int:
        """All weight elements, zero or not (the parameter count of the costed layers)."""
        return int(self.dense.total_weights)

    @property
    def zero_weights(self) -> int:
        return sum(layer.zero_weights for layer in self.layers)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.update(total_bops=self.total_bops, total_mem_w_bits=self.total_mem_w_bits,
                   total_mem_o_bits=self.total_mem_o_bits, total_macs=self.total_macs,
                   total_weights=self.total_weights, zero_weights=self.zero_weights)
        return out


# --- costing ---------------------------------------------------------------------------------

def _qonnx_version() -> str:
    from importlib.metadata import version

    return version("qonnx")


def _load_onnx(model: ModelWrapper | str | os.PathLike) -> tuple[ModelWrapper, str]:
    if isinstance(model, ModelWrapper):
        return copy.deepcopy(model), "QONNX model"
    path = Path(model)
    if not path.is_file():
        raise InputFileError(path, "no such ONNX file" if not path.exists() else "is not a file",
                             expected="a QONNX model (.onnx)")
    from google.protobuf.message import DecodeError

    try:
        return ModelWrapper(str(path)), str(path)
    except (DecodeError, OSError, ValueError) as exc:
        raise InputFileError(path, f"not a readable ONNX model ({type(exc).__name__})",
                             expected="a QONNX model (.onnx)") from None


def _sums(costs: dict) -> tuple[float, float, float, float, float]:
    """(bops, macs, mem_w_bits, mem_w_elems, mem_o_bits) of one qonnx cost dict, summed by
    qonnx's own helpers."""
    from qonnx.util.inference_cost import compute_bops_and_macs, compute_mem_bits_and_elems

    bops, macs = compute_bops_and_macs(costs)
    mem_w_bits, mem_w_elems = compute_mem_bits_and_elems(costs, "mem_w")
    mem_o_bits, _ = compute_mem_bits_and_elems(costs, "mem_o")
    return bops, macs, mem_w_bits, mem_w_elems, mem_o_bits


def cost_report(qonnx_model: ModelWrapper | str | os.PathLike, *, discount_sparsity: bool = True,
                source: str | None = None) -> CostReport:
    """The cost of a QONNX model (a `ModelWrapper`, not modified, or a path).

    qonnx's `inference_cost` preprocesses the graph (shapes, datatypes, weight quantizers folded
    into integer weights); its per-node analysis then runs on that graph with and without the
    sparsity discount. `discount_sparsity` picks which of the two the headline totals are."""
    from qonnx.analysis.inference_cost import inference_cost as analyse
    from qonnx.util.inference_cost import inference_cost

    wrapper, what = _load_onnx(qonnx_model)
    with tempfile.TemporaryDirectory(prefix="amc_cost_") as tmp:
        graph_path = Path(tmp) / "cost_graph.onnx"
        try:
            checked = inference_cost(wrapper, output_onnx=str(graph_path), preprocess=True,
                                     discount_sparsity=True)["total_cost"]
            graph = ModelWrapper(str(graph_path))
            raw = {discount: graph.analysis(lambda m, d=discount: analyse(m, d, True))
                   for discount in (True, False)}
        except (AssertionError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise ToolchainError(f"{source or what}: qonnx cannot cost this graph "
                                 f"({type(exc).__name__}: {exc}); expected a QONNX model with "
                                 "known input shapes, as exported by brevitas") from None

    totals = {}
    for discount, res in raw.items():
        bops, macs, mem_w_bits, mem_w_elems, mem_o_bits = _sums(res["total_cost"])
        totals[discount] = CostTotals(bops, mem_w_bits, mem_o_bits, macs, mem_w_elems)
    # the analysis on the preprocessed graph is the one qonnx.util.inference_cost ran
    if (checked["total_bops"], checked["total_mem_w_bits"]) != \
            (totals[True].total_bops, totals[True].total_mem_w_bits):
        raise RuntimeError("cost analysis disagrees with qonnx.util.inference_cost: "
                           f"{checked['total_bops']} vs {totals[True].total_bops} bops")

    node_costs = {d: res["node_cost"] for d, res in raw.items()}
    unsupported_types = raw[True]["total_cost"]["unsupported"]
    layers, zero_cost, unsupported = [], [], []
    for node in graph.graph.node:
        if node.name in node_costs[False]:
            layers.append(_layer_cost(graph, node, node_costs[True][node.name],
                                      node_costs[False][node.name]))
        elif node.op_type in unsupported_types:
            unsupported.append(OpRef(node.name, node.op_type))
        else:
            zero_cost.append(OpRef(node.name, node.op_type))
    return CostReport(source=source or what, discount_sparsity=discount_sparsity,
                      discounted=totals[True], dense=totals[False], layers=tuple(layers),
                      zero_cost_ops=tuple(zero_cost), unsupported_ops=tuple(unsupported),
                      qonnx_version=_qonnx_version())


def _layer_cost(graph: ModelWrapper, node, discounted: dict, dense: dict) -> LayerCost:
    bops_d, macs_d, mem_w_bits_d, mem_w_elems_d, mem_o_bits = _sums(discounted)
    bops, macs, mem_w_bits, mem_w_elems, _ = _sums(dense)
    act, weight = node.input[0], node.input[1]
    if graph.get_initializer(act) is not None and graph.get_initializer(weight) is None:
        act, weight = weight, act  # MatMul with the constant first
    weights = round(mem_w_elems)
    return LayerCost(
        name=node.name, op_type=node.op_type,
        input_bits=graph.get_tensor_datatype(act).bitwidth(),
        weight_bits=graph.get_tensor_datatype(weight).bitwidth(),
        weights=weights, zero_weights=weights - round(mem_w_elems_d),
        macs_dense=macs, bops_dense=bops, mem_w_bits_dense=mem_w_bits,
        macs_discounted=macs_d, bops_discounted=bops_d, mem_w_bits_discounted=mem_w_bits_d,
        mem_o_bits=mem_o_bits)


def model_cost(model, input_shape: Sequence[int], *, discount_sparsity: bool = True,
               source: str = "Brevitas model") -> CostReport:
    """The cost of a Brevitas model for one frame of `input_shape` (no batch axis), exported
    with `hw.finn_flow.export_qonnx` into a temporary directory."""
    from hw.finn_flow import export_qonnx

    with tempfile.TemporaryDirectory(prefix="amc_cost_") as tmp:
        exported = export_qonnx(model, input_shape, Path(tmp) / "model_qonnx.onnx")
        return cost_report(exported, discount_sparsity=discount_sparsity, source=source)


# --- the challenge score -----------------------------------------------------------------------

def reference_dir() -> Path:
    """$AMC_REFERENCE_DIR, else ../shared/reference next to the repository."""
    env = os.environ.get(REFERENCE_ENV)
    return Path(env) if env else REPO_ROOT.parent / "shared" / "reference"


def baseline_cost(reference: str | os.PathLike | None = None) -> BaselineCost:
    """The 8-bit VGG10's cost, the score's normalisers: from the challenge's trained checkpoint
    under `reference` (default `reference_dir()`) with the sparsity discount on, as the
    challenge computed them; without that file, the dense cost of the architecture. Computed
    once per process and reference directory."""
    ref = Path(reference) if reference is not None else reference_dir()
    return _baseline_cost(str(ref.resolve()))


@functools.cache
def _baseline_cost(reference: str) -> BaselineCost:
    import torch

    from models.registry import get_model_spec
    from models.zoo import build_model

    spec = get_model_spec(BASELINE_MODEL)
    checkpoint = Path(reference) / BASELINE_CHECKPOINT
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(BASELINE_MODEL, BASELINE_BITS)
    if checkpoint.is_file():
        state = read_checkpoint_file(checkpoint)
        load_state(model, state, BASELINE_MODEL, checkpoint)
        sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        report = model_cost(model, spec.input_shape, discount_sparsity=True)
        return BaselineCost(
            report.total_bops, report.total_mem_w_bits, "checkpoint", True,
            f"{BASELINE_MODEL} at {BASELINE_BITS} bits with the challenge's trained weights "
            f"{checkpoint} (sha256 {sha[:12]}), sparsity discount on: the challenge's "
            "normalisers")
    report = model_cost(model, spec.input_shape, discount_sparsity=False)
    return BaselineCost(
        report.total_bops, report.total_mem_w_bits, "dense", False,
        f"dense cost of the {BASELINE_MODEL} architecture at {BASELINE_BITS} bits (no "
        f"checkpoint at {checkpoint}; set ${REFERENCE_ENV} to the directory holding "
        f"{BASELINE_CHECKPOINT}): about 2 % above the challenge's normalisers")


def challenge_score(report: CostReport, baseline: BaselineCost | None = None) -> ChallengeScore:
    """0.5 x bops / bops(baseline) + 0.5 x weight bits / weight bits(baseline), from the
    report's headline totals; `baseline` defaults to `baseline_cost()`."""
    baseline = baseline if baseline is not None else baseline_cost()
    bops_ratio = report.total_bops / baseline.total_bops
    mem_ratio = report.total_mem_w_bits / baseline.total_mem_w_bits
    return ChallengeScore(0.5 * bops_ratio + 0.5 * mem_ratio, bops_ratio, mem_ratio, baseline)


def scored(report: CostReport, baseline: BaselineCost | None = None) -> CostReport:
    """`report` with its challenge score attached."""
    return dataclasses.replace(report, score=challenge_score(report, baseline))


def zoo_model_cost(model_name: str, bits: int | None = None, state_dict: dict | None = None, *,
                   discount_sparsity: bool = True) -> CostReport:
    """The cost of zoo model `model_name` at `bits` (default: its own), with `state_dict`
    loaded (a Conv1d-layout published state dict is accepted), else untrained (seed 0)."""
    import torch

    from models.registry import get_model_spec
    from models.zoo import build_model

    spec = get_model_spec(model_name)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(model_name, bits)
    if state_dict is not None:
        load_state(model, state_dict, model_name, "state dict")
    bits_used = spec.default_bits if bits is None else bits
    weights = "given weights" if state_dict is not None else "untrained weights (seed 0)"
    return model_cost(model, spec.input_shape, discount_sparsity=discount_sparsity,
                      source=f"{model_name} at {bits_used} bits, {weights}")


def cost_score(model_name: str, bits: int | None = None, state_dict: dict | None = None, *,
               discount_sparsity: bool = True) -> float:
    """The challenge score of a zoo model (lower is better; the 8-bit VGG10 baseline is 1.0):
    the cost axis of a bit-width sweep."""
    report = zoo_model_cost(model_name, bits, state_dict, discount_sparsity=discount_sparsity)
    return challenge_score(report).score


def sweep_cost(model, ckpt: dict) -> dict:
    """A `cost_fn` for `flows.sweep.run_sweep`: (trained model, checkpoint dict) -> columns."""
    from models.registry import get_model_spec

    report = scored(model_cost(model, get_model_spec(ckpt["model"]).input_shape))
    return {"total_bops": report.total_bops, "total_mem_w_bits": report.total_mem_w_bits,
            "challenge_score": report.score.score}


# --- weights -----------------------------------------------------------------------------------

def checkpoint_cost(path: str | os.PathLike, *, model_name: str | None = None,
                    bits: int | None = None, discount_sparsity: bool = True) -> CostReport:
    """The cost of a checkpoint: a toolchain checkpoint (dict with model, weight_bits,
    act_bits, state_dict) at its own bit widths unless `bits` is given, or a bare state dict
    of zoo model `model_name`."""
    import torch

    from models.checkpoints import split_checkpoint
    from models.registry import get_model_spec, model_names
    from models.zoo import build_model

    path = Path(path)
    header, state = split_checkpoint(read_checkpoint_file(path), path)
    named = header.get("model")
    if named is not None and model_name is not None and named != model_name:
        raise InputFileError(path, f"is a checkpoint for model {named!r}",
                             expected=f"model {model_name!r}", fix="Drop --model or pass "
                                                                   "the checkpoint's own")
    name = named or model_name
    if name is None:
        raise InputFileError(path, "is a bare state dict that names no model",
                             fix=f"Pass --model NAME (one of: {', '.join(model_names())})")
    spec = get_model_spec(name)
    weight_bits, act_bits = (
        bits if bits is not None else header.get(key, spec.default_bits)
        for key in ("weight_bits", "act_bits"))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(name, weight_bits=weight_bits, act_bits=act_bits)
    load_state(model, state, name, path)
    return model_cost(model, spec.input_shape, discount_sparsity=discount_sparsity,
                      source=f"{name} (weights {weight_bits} bits, activations {act_bits} bits) "
                             f"from {path}")


# --- writers -----------------------------------------------------------------------------------

_LAYER_COLUMNS = ("layer", "op", "in bits", "w bits", "weights", "zeros", "sparsity", "MACs",
                  "bops", "mem_w bits", "mem_o bits")


def _n(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _layer_rows(report: CostReport) -> list[tuple[str, ...]]:
    """Rows of the per-layer table (headline figures) and a totals row."""
    d = report.discount_sparsity
    rows = [(layer.name, layer.op_type, str(layer.input_bits), str(layer.weight_bits),
             _n(layer.weights), _n(layer.zero_weights), f"{layer.sparsity:.1%}",
             _n(layer.macs_discounted if d else layer.macs_dense),
             _n(layer.bops_discounted if d else layer.bops_dense),
             _n(layer.mem_w_bits_discounted if d else layer.mem_w_bits_dense),
             _n(layer.mem_o_bits)) for layer in report.layers]
    total_sparsity = report.zero_weights / report.total_weights if report.total_weights else 0.0
    rows.append(("total", "", "", "", _n(report.total_weights), _n(report.zero_weights),
                 f"{total_sparsity:.1%}", _n(report.total_macs), _n(report.total_bops),
                 _n(report.total_mem_w_bits), _n(report.total_mem_o_bits)))
    return rows


def _summary_lines(report: CostReport) -> list[str]:
    mode = "zero weights discounted" if report.discount_sparsity else "dense, no sparsity discount"
    lines = [f"Source: {report.source}. Per frame, {mode} (qonnx {report.qonnx_version}).",
             (f"Totals, discounted: {_n(report.discounted.total_bops)} bops, "
              f"{_n(report.discounted.total_mem_w_bits)} weight bits; "
              f"dense: {_n(report.dense.total_bops)} bops, "
              f"{_n(report.dense.total_mem_w_bits)} weight bits.")]
    if report.score is not None:
        s = report.score
        lines.append(f"Challenge score {s.score:.4f} (bops ratio {s.bops_ratio:.4f}, weight-bit "
                     f"ratio {s.mem_w_bits_ratio:.4f}); baseline {_n(s.baseline.total_bops)} "
                     f"bops, {_n(s.baseline.total_mem_w_bits)} weight bits: {s.baseline.source}.")
    if report.unsupported_ops:
        lines.append(f"NOT COSTED: {len(report.unsupported_ops)} node(s) of types "
                     f"{', '.join(sorted({op.op_type for op in report.unsupported_ops}))} are in "
                     "no total (qonnx has no cost function for them).")
    return lines


def _by_type(ops: Sequence[OpRef]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for op in ops:
        groups.setdefault(op.op_type, []).append(op.name)
    return groups


def cost_markdown(report: CostReport) -> str:
    lines = ["# Inference cost", "", *_summary_lines(report), "",
             "| " + " | ".join(_LAYER_COLUMNS) + " |", "|" + "---|" * len(_LAYER_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in _layer_rows(report)]
    lines += ["", "## Not costed (unsupported by the metric)", ""]
    if report.unsupported_ops:
        lines += ["| node | op |", "|---|---|"]
        lines += [f"| {op.name} | {op.op_type} |" for op in report.unsupported_ops]
    else:
        lines.append("None: every node is costed or free by definition.")
    lines += ["", "## Zero cost by definition", ""]
    lines += [f"- {op_type} ({len(names)}): {', '.join(names)}"
              for op_type, names in sorted(_by_type(report.zero_cost_ops).items())]
    return "\n".join(lines) + "\n"


def write_cost_report(report: CostReport, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """`out_dir/cost.json` (every figure) and `out_dir/cost.md` (tables), written atomically."""
    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "cost.json", out_dir / "cost.md"
    atomic_write_text(json_path, json.dumps(report.to_dict(), indent=2) + "\n")
    atomic_write_text(md_path, cost_markdown(report))
    return json_path, md_path


def print_cost_report(report: CostReport, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and pipes: full numbers, not 80-column ellipses
            console.width = max(console.width, 150)
    table = Table(title=f"inference cost: {report.source}")
    for col in _LAYER_COLUMNS:
        table.add_column(col, justify="left" if col in ("layer", "op") else "right")
    rows = _layer_rows(report)
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i == len(rows) - 2)
    console.print(table)
    for line in _summary_lines(report):
        console.print(line, highlight=False)
    for op_type, names in sorted(_by_type(report.unsupported_ops).items()):
        console.print(f"  not costed: {op_type} x{len(names)}: {', '.join(names)}",
                      highlight=False)
    free = _by_type(report.zero_cost_ops)
    console.print("Zero cost by definition: " + (", ".join(
        f"{t} x{len(n)}" for t, n in sorted(free.items())) or "none"), highlight=False)


# --- command line ------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from models.registry import model_names

    p = argparse.ArgumentParser(
        prog="python -m flows.cost",
        description="Bit operations and weight memory of a quantized model (qonnx's inference "
                    "cost, the 2021 challenge's metric) and its challenge score against the "
                    "8-bit VGG10 baseline.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="a checkpoint (flows.train's, or a bare "
                                                     "state dict with --model)")
    src.add_argument("--onnx", type=Path, help="an existing QONNX file")
    p.add_argument("--model", choices=model_names(),
                   help="zoo model (alone: untrained weights, seed 0)")
    p.add_argument("--bits", type=int, help="weight and activation bits (default: the "
                                            "checkpoint's, else the model's)")
    p.add_argument("--out", type=Path, help="write cost.json and cost.md here")
    p.add_argument("--no-discount", action="store_true",
                   help="headline totals without the sparsity discount (the challenge used it)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.checkpoint is None and args.onnx is None and args.model is None:
        parser.error("pass --checkpoint CKPT, --onnx FILE or --model NAME")
    if args.onnx is not None and (args.model is not None or args.bits is not None):
        parser.error("--model and --bits do not apply to --onnx (the file fixes both)")
    discount = not args.no_discount
    try:
        if args.onnx is not None:
            report = cost_report(args.onnx, discount_sparsity=discount)
        elif args.checkpoint is not None:
            report = checkpoint_cost(args.checkpoint, model_name=args.model, bits=args.bits,
                                     discount_sparsity=discount)
        else:
            report = zoo_model_cost(args.model, args.bits, discount_sparsity=discount)
        report = scored(report)
        print_cost_report(report)
        if args.out is not None:
            for path in write_cost_report(report, args.out):
                print(f"wrote {path}")
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
