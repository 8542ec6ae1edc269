"""The cost report (qonnx's inference cost) and the challenge score.

Figures are checked against arithmetic written out here: a small hand-checkable model, the
8-bit VGG10's architecture, BacalhauNet's published size, and the zoo's own MAC and weight
counters (models.stats). The challenge's trained VGG10 is read from ../shared/reference/ (or
$AMC_REFERENCE_DIR); where it is absent the baseline test runs on the dense baseline and says so.
"""

from __future__ import annotations

import json
import math
import warnings

import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import brevitas.nn as qnn
from flows import cost
from flows.cost import (
    BASELINE_CHECKPOINT,
    OpRef,
    baseline_cost,
    challenge_score,
    cost_report,
    cost_score,
    model_cost,
    reference_dir,
    scored,
    write_cost_report,
    zoo_model_cost,
)
from flows.train import full_state_dict
from hw.finn_flow import export_qonnx
from models.registry import get_model_spec, model_names
from models.stats import count_macs, count_weights
from models.zoo import build_model

CHALLENGE_CKPT = reference_dir() / BASELINE_CHECKPOINT
CHALLENGE_ONNX = CHALLENGE_CKPT.with_name("pretrained_VGG10_w8a8_20_export.onnx")


# ------------------------------------------------------------------- a hand-checkable model

class Tiny(torch.nn.Sequential):
    """8-bit input (2, 1, 16) -> QuantConv2d 2->4, kernel (1, 3), no padding, 4-bit weights
    -> QuantReLU 5-bit -> flatten 4 x 14 = 56 -> QuantLinear 56->3, 3-bit weights, no bias."""

    def __init__(self):
        super().__init__(
            qnn.QuantIdentity(bit_width=8, return_quant_tensor=True),
            qnn.QuantConv2d(2, 4, (1, 3), bias=False, weight_bit_width=4),
            qnn.QuantReLU(bit_width=5),
            torch.nn.Flatten(),
            qnn.QuantLinear(56, 3, bias=False, weight_bit_width=3),
        )
        with torch.no_grad():  # magnitudes 0.5..1 of the max: no weight quantizes to zero
            for layer in (self[1], self[4]):
                n = layer.weight.numel()
                signs = torch.tensor([1.0, -1.0]).repeat(n)[:n]
                layer.weight.copy_((signs * torch.linspace(0.5, 1.0, n)).view_as(layer.weight))


def tiny_report(model: torch.nn.Module, **kw):
    model.eval()
    with torch.no_grad():
        model(torch.randn(8, 2, 1, 16))  # settles the activation scales
    return model_cost(model, (2, 1, 16), **kw)


# conv: 4 out x 2 in x 3 taps x 14 output positions; input 8 bits, weights 4 bits
CONV_MACS = 4 * 2 * 3 * 14  # 336
CONV_BOPS = CONV_MACS * 8 * 4  # 10,752
CONV_WEIGHTS = 4 * 2 * 3  # 24
CONV_MEM_W_BITS = CONV_WEIGHTS * 4  # 96
CONV_MEM_O_BITS = 4 * 14 * 32  # 1,792: qonnx types a MAC result as a 32-bit accumulator
# linear: 56 in x 3 out; input 5 bits (the QuantReLU), weights 3 bits
FC_MACS = 56 * 3  # 168
FC_BOPS = FC_MACS * 5 * 3  # 2,520
FC_WEIGHTS = 56 * 3  # 168
FC_MEM_W_BITS = FC_WEIGHTS * 3  # 504
FC_MEM_O_BITS = 3 * 32  # 96


def test_small_model_figures_by_hand():
    report = tiny_report(Tiny())
    conv, fc = report.layers
    assert (conv.op_type, conv.input_bits, conv.weight_bits) == ("Conv", 8, 4)
    assert (fc.op_type, fc.input_bits, fc.weight_bits) == ("MatMul", 5, 3)
    assert (conv.macs_dense, conv.bops_dense, conv.weights, conv.mem_w_bits_dense,
            conv.mem_o_bits) == (CONV_MACS, CONV_BOPS, CONV_WEIGHTS, CONV_MEM_W_BITS,
                                 CONV_MEM_O_BITS)
    assert (fc.macs_dense, fc.bops_dense, fc.weights, fc.mem_w_bits_dense, fc.mem_o_bits) == \
        (FC_MACS, FC_BOPS, FC_WEIGHTS, FC_MEM_W_BITS, FC_MEM_O_BITS)
    assert report.total_macs == 504
    assert report.total_bops == 13_272
    assert report.total_mem_w_bits == 600
    assert report.total_mem_o_bits == 1_888
    assert report.total_weights == 192 and report.zero_weights == 0
    assert report.discounted == report.dense  # no zero weights: the discount changes nothing
    assert report.unsupported_ops == ()
    assert {op.op_type for op in report.zero_cost_ops} == {"Quant", "Relu", "Flatten"}


def test_sparsity_discount_on_a_pruned_model():
    model = Tiny()
    with torch.no_grad():
        model[1].weight.view(-1)[::2] = 0.0  # 12 of the conv's 24 weights
        model[4].weight.view(-1)[::3] = 0.0  # 56 of the linear's 168 weights
    report = tiny_report(model)
    conv, fc = report.layers
    assert (conv.zero_weights, fc.zero_weights) == (12, 56)
    assert conv.sparsity == 0.5 and math.isclose(fc.sparsity, 1 / 3)
    # undiscounted figures do not move
    assert (report.dense.total_macs, report.dense.total_bops, report.dense.total_mem_w_bits) == \
        (504, 13_272, 600)
    # discounted: each layer's MACs and weight memory scale with its non-zero fraction
    assert conv.bops_discounted == CONV_BOPS * 12 / 24 == 5_376
    assert conv.mem_w_bits_discounted == 12 * 4
    assert fc.bops_discounted == FC_BOPS * 112 / 168 == 1_680
    assert fc.mem_w_bits_discounted == 112 * 3
    assert report.total_bops == 5_376 + 1_680
    assert report.total_mem_w_bits == 48 + 336
    assert report.total_macs == 168 + 112
    dense = tiny_report(model, discount_sparsity=False)
    assert (dense.total_bops, dense.total_mem_w_bits) == (13_272, 600)
    assert dense.discounted == report.discounted  # both are always in the report


# ------------------------------------------------------------------------ unsupported ops

def test_unsupported_ops_are_listed_by_name_and_type(tmp_path):
    w = numpy_helper.from_array(torch.ones(4, 3).numpy(), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc"),
         helper.make_node("Relu", ["y"], ["r"], name="relu"),
         helper.make_node("Atan", ["r"], ["a"], name="phase"),
         helper.make_node("Sqrt", ["a"], ["out"], name="magnitude")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])], initializer=[w])
    path = tmp_path / "atan.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    report = cost_report(path)
    assert report.unsupported_ops == (OpRef("Atan_0", "Atan"), OpRef("Sqrt_0", "Sqrt"))
    assert report.zero_cost_ops == (OpRef("Relu_0", "Relu"),)
    (fc,) = report.layers
    assert (fc.macs_dense, fc.input_bits, fc.weight_bits) == (4 * 3, 32, 32)  # float: 32 bits
    assert report.total_bops == 12 * 32 * 32
    md = cost.cost_markdown(report)
    assert "| Atan_0 | Atan |" in md and "| Sqrt_0 | Sqrt |" in md and "NOT COSTED" in md


# -------------------------------------------------------------------------------- baseline

def vgg10_by_hand(bits: int = 8) -> tuple[int, int]:
    """(MACs, weights) of the 64-filter VGG10: 7 convs k3 on 1024, 512, ..., 16 samples, then
    512 -> 128 -> 128 -> 24."""
    macs = weights = 0
    cin, length = 2, 1024
    for _ in range(7):
        weights += 64 * cin * 3
        macs += 64 * cin * 3 * length
        cin, length = 64, length // 2
    for fin, fout in ((512, 128), (128, 128), (128, 24)):
        weights += fin * fout
        macs += fin * fout
    return macs, weights


@pytest.fixture(scope="module")
def no_reference(tmp_path_factory):
    """A reference directory without the challenge checkpoint (shared: the baseline is cached
    per directory)."""
    return tmp_path_factory.mktemp("no_reference")


def test_dense_baseline_is_the_architecture_by_hand(no_reference):
    macs, weights = vgg10_by_hand()
    assert (macs, weights) == (12_864_512, 159_104)
    base = baseline_cost(no_reference)  # no checkpoint there: the dense architecture
    assert base.kind == "dense" and not base.discount_sparsity
    assert str(no_reference) in base.source
    # every layer: 8-bit inputs (the input quantizer, then 8-bit QuantReLUs), 8-bit weights
    assert base.total_bops == macs * 8 * 8 == 823_328_768
    assert base.total_mem_w_bits == weights * 8 == 1_272_832
    report = zoo_model_cost("vgg10", 8, discount_sparsity=False)
    assert challenge_score(report, base).score == 1.0


def test_baseline_scores_exactly_one():
    base = baseline_cost()
    if CHALLENGE_CKPT.is_file():
        assert base.kind == "checkpoint" and base.discount_sparsity
        assert str(CHALLENGE_CKPT) in base.source
        state = torch.load(CHALLENGE_CKPT, map_location="cpu", weights_only=True)
        assert cost_score("vgg10", 8, state_dict=state) == 1.0
    else:
        warnings.warn(f"{CHALLENGE_CKPT} absent: testing the DENSE baseline (architecture "
                      "only), not the challenge's normalisers")
        assert base.kind == "dense"
        assert cost_score("vgg10", 8, discount_sparsity=False) == 1.0


def test_checkpoint_baseline_matches_the_challenges_own_export():
    """Our export of the trained checkpoint and the organisers' 2021 QONNX file cost the same:
    these are the normalisers the challenge used."""
    if not (CHALLENGE_CKPT.is_file() and CHALLENGE_ONNX.is_file()):
        pytest.skip(f"reference files absent: {CHALLENGE_CKPT}, {CHALLENGE_ONNX}")
    base = baseline_cost()
    theirs = cost_report(CHALLENGE_ONNX)
    assert (theirs.total_bops, theirs.total_mem_w_bits) == \
        (base.total_bops, base.total_mem_w_bits)
    assert theirs.dense.total_bops == 823_328_768  # their dense cost is the architecture's
    assert theirs.dense.total_mem_w_bits == 1_272_832
    # the trained weights have exact zeros: the discount lowers both figures by about 2 %
    assert 0.97 < base.total_bops / theirs.dense.total_bops < 0.99
    assert 0.97 < base.total_mem_w_bits / theirs.dense.total_mem_w_bits < 0.99


def test_baseline_is_cached_per_reference_dir(no_reference, monkeypatch):
    assert baseline_cost(no_reference) is baseline_cost(no_reference)
    monkeypatch.setenv(cost.REFERENCE_ENV, str(no_reference))
    assert reference_dir() == no_reference
    assert baseline_cost() is baseline_cost(no_reference)
    assert baseline_cost().kind == "dense"


# -------------------------------------------------------------------------------- the zoo

# Op types qonnx has no cost function for, per zoo model (its exported graph at default bits).
NOT_COSTED = {
    "imperial": {"Abs", "Atan", "Cos", "Gather", "Greater", "Less", "Log", "Neg", "Pow",
                 "ReduceMax", "ReduceMean", "Sin", "Slice", "Sqrt", "Squeeze", "Unsqueeze",
                 "Where"},  # the statistics branch (FINN cannot map it either)
    "ulcnn": {"GlobalAveragePool", "Unsqueeze"},
    "hakimi7": {"GlobalAveragePool"},
}
SLOW = {"imperial", "ulcnn"}  # qonnx's graph passes are quadratic in the node count


def weights_per_inference(model: torch.nn.Module, input_shape) -> int:
    """Conv and linear weight elements times the number of calls in one inference forward:
    what the exported graph holds. Unlike `count_weights`, a layer used twice (ULCNN's shared
    attention layers; qonnx gives each use its own tensor) counts twice, and training-only
    layers (imperial's auxiliary heads) not at all."""
    calls: dict[torch.nn.Module, int] = {}

    def hook(module, inputs, output):
        calls[module] = calls.get(module, 0) + 1

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return sum(m.weight.numel() * n for m, n in calls.items())


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in model_names()])
def test_every_zoo_model_is_costed(name):
    spec = get_model_spec(name)
    torch.manual_seed(0)
    model = build_model(name)
    report = scored(model_cost(model, spec.input_shape))
    # qonnx's dense MACs and weights agree with the zoo's own counters (forward hooks)
    assert report.dense.total_macs == count_macs(model, spec.input_shape).total
    assert report.total_weights == weights_per_inference(model, spec.input_shape)
    if name not in ("imperial", "ulcnn"):
        assert report.total_weights == count_weights(model)
    assert {op.op_type for op in report.unsupported_ops} == NOT_COSTED.get(name, set())
    assert report.layers and 0 < report.score.score < math.inf


def test_bacalhaunet_figures():
    report = zoo_model_cost("bacalhaunet", discount_sparsity=False)
    assert report.total_macs == 2_044_032
    assert report.total_weights == 9_318
    assert {layer.weight_bits for layer in report.layers} == {6}
    assert report.total_mem_w_bits == 9_318 * 6
    # qonnx types a residual Add's output like a MAC result (32 bits): the DW conv after each
    # of the two adds is costed at 32-bit inputs
    assert [layer.input_bits for layer in report.layers].count(32) == 2


# ---------------------------------------------------------------------------- command line

def save_bacalhaunet(path, *, bare: bool = False):
    torch.manual_seed(1)
    model = build_model("bacalhaunet")
    with torch.no_grad():
        model.conv[0].pw.conv.weight.view(-1)[:10] = 0.0
    with full_state_dict():
        state = model.state_dict()
    torch.save(state if bare else {"model": "bacalhaunet", "weight_bits": 6, "act_bits": 6,
                                   "state_dict": state}, path)
    return model


def test_cli_checkpoint_writes_json_and_markdown(tmp_path, capsys):
    model = save_bacalhaunet(tmp_path / "ckpt.pt")
    save_bacalhaunet(tmp_path / "bare.pt", bare=True)  # the same weights, no metadata
    expected = model_cost(model, (2, 1, 1024))
    for i, argv in enumerate((["--checkpoint", str(tmp_path / "ckpt.pt")],
                              ["--checkpoint", str(tmp_path / "bare.pt"), "--model",
                               "bacalhaunet"])):
        out = tmp_path / f"out{i}"
        assert cost.main([*argv, "--out", str(out)]) == 0
        data = json.loads((out / "cost.json").read_text())
        assert data["total_bops"] == expected.total_bops
        assert data["total_mem_w_bits"] == expected.total_mem_w_bits
        assert data["zero_weights"] == expected.zero_weights >= 10
        assert data["score"]["baseline"]["source"] == baseline_cost().source
        assert "| total |" in (out / "cost.md").read_text()
        assert "Challenge score" in capsys.readouterr().out


def test_cli_onnx(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "bacalhaunet.onnx"
    export_qonnx(build_model("bacalhaunet"), (2, 1, 1024), path)
    assert cost.main(["--onnx", str(path), "--out", str(tmp_path / "out"), "--no-discount"]) == 0
    data = json.loads((tmp_path / "out" / "cost.json").read_text())
    assert data["discount_sparsity"] is False
    assert data["total_macs"] == 2_044_032
    assert data["total_bops"] == cost_report(path).dense.total_bops


@pytest.mark.parametrize("case", ["missing", "bare", "not_onnx", "bad_bits"])
def test_cli_errors(tmp_path, capsys, case):
    if case == "missing":
        argv, needle = ["--checkpoint", str(tmp_path / "nope.pt")], "no such checkpoint"
    elif case == "bare":
        save_bacalhaunet(tmp_path / "bare.pt", bare=True)
        argv, needle = ["--checkpoint", str(tmp_path / "bare.pt")], "--model"
    elif case == "not_onnx":
        (tmp_path / "x.onnx").write_text("not a model")
        argv, needle = ["--onnx", str(tmp_path / "x.onnx")], "not a readable ONNX model"
    else:
        argv, needle = ["--model", "vgg10", "--bits", "1"], "2..16"
    assert cost.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "Traceback" not in err


def test_write_cost_report_is_atomic_and_complete(tmp_path):
    report = scored(tiny_report(Tiny()))
    json_path, md_path = write_cost_report(report, tmp_path / "r")
    data = json.loads(json_path.read_text())
    assert data["total_bops"] == 13_272 and data["total_weights"] == 192
    assert data["dense"]["total_bops"] == data["discounted"]["total_bops"] == 13_272
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["cost.json", "cost.md"]
    assert "Quant" in md_path.read_text()
