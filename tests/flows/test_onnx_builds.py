"""`build.py --onnx FILE`: a user's own QONNX graph (here written with QuantConv1d, as users
write 1D models) through the cost report, the FINN flow and estimates, verified against the
graph itself; bad files are refused with a message naming them."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from brevitas import nn as qnn
from torch import nn

import build
from models.layers import RML2016_INPUT_RANGE, input_quantizer, quant_linear, quant_relu

REFERENCE_ONNX = (Path(__file__).resolve().parents[3] / "shared" / "reference" / "vgg10-challenge"
                  / "pretrained_VGG10_w8a8_20_export.onnx")
GRAPH_STEPS = ["to_finn", "streamline", "label_select", "convert_to_hw", "partition",
               "specialize", "fold"]


class TinyConv1d(nn.Module):
    """A small RadioML 2016 classifier as a user writes it: QuantConv1d, BatchNorm1d, MaxPool1d
    on (N, 2, 128)."""

    def __init__(self):
        super().__init__()
        self.inp = input_quantizer(8, *RML2016_INPUT_RANGE)
        self.conv1 = qnn.QuantConv1d(2, 8, 3, padding=1, bias=False, weight_bit_width=4)
        self.bn1 = nn.BatchNorm1d(8)
        self.act1 = quant_relu(4)
        self.pool1 = nn.MaxPool1d(4)
        self.conv2 = qnn.QuantConv1d(8, 8, 3, padding=1, bias=False, weight_bit_width=4)
        self.bn2 = nn.BatchNorm1d(8)
        self.act2 = quant_relu(4)
        self.pool2 = nn.MaxPool1d(4)
        self.fc = quant_linear(8 * 8, 11, weight_bits=4)

    def forward(self, x):
        x = self.pool1(self.act1(self.bn1(self.conv1(self.inp(x)))))
        x = self.pool2(self.act2(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from brevitas.export import export_qonnx

    torch.manual_seed(0)
    model = TinyConv1d()
    model.train()
    with torch.no_grad():  # calibrate the BatchNorm statistics and activation scales
        for _ in range(4):
            model(0.01 * torch.randn(64, 2, 128))
    model.eval()
    path = tmp_path_factory.mktemp("onnx") / "tiny_conv1d.onnx"
    export_qonnx(model, torch.zeros(1, 2, 128), str(path), dynamo=False)
    return path


def _records(out):
    return {r["step"]: r for r in json.loads((out / "report" / "verification.json").read_text())}


def test_quantconv1d_qonnx_builds_to_estimates(tiny_onnx, tmp_path):
    before = tiny_onnx.read_bytes()
    out = tmp_path / "out"
    assert build.main(["--onnx", str(tiny_onnx), "--board", "pynq-z2", "--out", str(out),
                       "--verify-frames", "11", "--until", "estimate"]) == 0
    assert tiny_onnx.read_bytes() == before  # the user's file is only read
    records = _records(out)
    assert sorted(records) == sorted(GRAPH_STEPS)
    for step in GRAPH_STEPS:
        assert records[step]["passed"] and records[step]["classes_equal"] == 11, step
    steps = [r["step"] for r in json.loads((out / "report" / "steps.json").read_text())]
    assert steps[:3] == ["prepare_data", "import_onnx", "cost"] and steps[-1] == "estimate"
    model = json.loads((out / "report" / "model.json").read_text())
    assert model["golden"] == "the QONNX graph" and model["dataset"] == "rml2016"
    assert model["input_shape"] == [2, 128]
    # the 1D graph was lifted to (1, k) form and mapped to HW layers whole
    partition = json.loads((out / "report" / "partition.json").read_text())
    assert {"ConvolutionInputGenerator", "MVAU"} <= set(partition["hw_op_types"])
    assert partition["software_nodes"] == [] or all(
        n["op_type"] in ("Transpose", "Reshape") for n in partition["software_nodes"])
    estimates = json.loads((out / "report" / "estimates.json").read_text())
    assert estimates["fits"] and estimates["throughput_fps"] > 0
    cost = json.loads((out / "report" / "cost.json").read_text())
    assert cost["dense"]["total_macs"] > 0


def test_the_golden_of_an_onnx_build_is_the_graph_itself(tiny_onnx, tmp_path):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    out = tmp_path / "out"
    assert build.main(["--onnx", str(tiny_onnx), "--board", "pynq-z2", "--out", str(out),
                       "--verify-frames", "4", "--until", "import_onnx"]) == 0
    golden = np.load(out / "report" / "golden_outputs.npz")["logits"]
    frames = np.load(out / "data" / "verify_frames.npz")["x"]
    graph = cleanup_model(ModelWrapper(str(tiny_onnx)))
    name = graph.graph.input[0].name
    expected = [execute_onnx(graph, {name: f[None].astype(np.float32)})[graph.graph.output[0].name]
                for f in frames]
    assert np.allclose(golden, np.concatenate(expected), atol=1e-6)


@pytest.mark.parametrize("case", ["missing", "not_onnx", "float", "shape"])
def test_bad_onnx_files_are_refused_by_name(case, tmp_path, capsys):
    path = tmp_path / f"{case}.onnx"
    if case == "not_onnx":
        path.write_bytes(b"this is no protobuf \x00\xff")
    elif case == "float":
        torch.onnx.export(nn.Sequential(nn.Flatten(), nn.Linear(256, 11)), torch.zeros(1, 2, 128),
                          str(path), dynamo=False)
    elif case == "shape":
        from brevitas.export import export_qonnx

        model = nn.Sequential(nn.Flatten(), quant_linear(2 * 100, 11, weight_bits=4)).eval()
        export_qonnx(model, torch.zeros(1, 2, 100), str(path), dynamo=False)
    code = build.main(["--onnx", str(path), "--board", "pynq-z2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert str(path) in err.replace("\n", "")
    expected = {"missing": "no such file", "not_onnx": "not an ONNX file",
                "float": "has no Quant nodes", "shape": "does not hold one 2 x L frame"}[case]
    assert expected in err.replace("\n", " ")
    assert not (tmp_path / "o" / "intermediate").exists()  # refused before any work


def test_onnx_excludes_weights_and_bits(tiny_onnx, capsys):
    with pytest.raises(SystemExit):
        build.parse_args(["--onnx", str(tiny_onnx), "--board", "pynq-z2", "--bits", "4"])
    assert "--bits cannot be combined with --onnx" in capsys.readouterr().err


@pytest.mark.slow
def test_the_challenges_2021_vgg10_export_builds_to_estimates(tmp_path):
    if not REFERENCE_ONNX.exists():
        pytest.skip(f"reference file absent: {REFERENCE_ONNX}")
    out = tmp_path / "out"
    assert build.main(["--onnx", str(REFERENCE_ONNX), "--board", "zcu104", "--out", str(out),
                       "--verify-frames", "8", "--until", "estimate"]) == 0
    records = _records(out)
    assert records["import_onnx"]["max_abs_diff"] == 0.0  # opset 9 -> 13 changes nothing
    assert all(records[s]["passed"] and records[s]["classes_equal"] == 8 for s in GRAPH_STEPS)
    cost = json.loads((out / "report" / "cost.json").read_text())
    assert cost["score"]["score"] == pytest.approx(1.0)  # it is the challenge's baseline
    assert json.loads((out / "report" / "estimates.json").read_text())["fits"]
