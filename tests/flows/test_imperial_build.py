"""imperial (two branches: conv network + statistics of the raw frame) through FINN to estimates.

One build for ZCU104 up to the estimates (module fixture, 8 verification frames). The
statistics branch and the classifier that combines it with the conv features are the model's
host part: they must leave the graph as one HostPartition, listed by name in the partition
report, while the conv branch becomes HW layers and every step matches the Brevitas model.
"""

import json

import pytest

import build

GRAPH_STEPS = ["export_qonnx", "to_finn", "streamline", "label_select", "convert_to_hw",
               "partition", "specialize", "fold"]
FRAMES = 8


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("imperial_build") / "out"
    assert build.main(["--model", "imperial", "--board", "zcu104", "--out", str(out),
                       "--verify-frames", str(FRAMES), "--until", "estimate"]) == 0
    return out


def _json(path):
    return json.loads(path.read_text())


def test_every_graph_step_matches_the_golden_model(built):
    records = {r["step"]: r for r in _json(built / "report" / "verification.json")}
    assert sorted(records) == sorted(GRAPH_STEPS)
    for step, r in records.items():
        assert r["passed"] and r["classes_equal"] == FRAMES, step


def test_statistics_and_classifier_are_the_listed_host_part(built):
    software = _json(built / "report" / "partition.json")["software_nodes"]
    roles = {n["op_type"]: n["role"] for n in software}
    assert roles == {"AveragePool": "input preprocessing", "Transpose": "input layout change",
                     "HostPartition": "host part of the model",
                     "TopK": "top-1 class of the host part's logits"}
    host = next(n for n in software if n["op_type"] == "HostPartition")
    assert {"Atan", "Sqrt", "ReduceMean", "Where", "Concat", "Gemm"} <= set(host["host_op_types"])
    assert "Quant" not in host["host_op_types"]  # plain ONNX: one onnxruntime session
    assert len(host["host_nodes"]) > 400 and "Gemm_0" in host["host_nodes"]


def test_conv_branch_is_in_hw_layers(built):
    partition = _json(built / "report" / "partition.json")
    assert set(partition["hw_op_types"]) == {"ConvolutionInputGenerator", "FMPadding", "MVAU",
                                             "Thresholding"}
    mvaus = [layer for layer in _json(built / "report" / "estimates.json")["layers"]
             if layer["op_type"].startswith("MVAU")]
    assert len(mvaus) == 8  # seven convs and the 128-unit FC


def test_estimates(built):
    est = _json(built / "report" / "estimates.json")
    assert est["throughput_fps"] > 0 and est["total"]["lut"] > 0 and est["fits"]


def test_full_build_ends_with_code_and_says_why_there_is_no_deploy_package(built, tmp_path,
                                                                           capsys):
    """The default build goes on to codegen and deploy: the board driver cannot run the host
    part, so there is no package, the build says why and still ends with exit 0."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(built, out)
    assert build.main(["--model", "imperial", "--board", "zcu104", "--out", str(out),
                       "--verify-frames", str(FRAMES), "--from", "codegen",
                       "--until", "deploy"]) == 0
    reason = _json(out / "report" / "deploy_skipped.json")["reason"]
    assert "no deploy package for imperial" in reason and "in software" in reason
    printed = capsys.readouterr()
    assert "no deploy package" in printed.out + printed.err
    assert not (out / "deploy" / "io.json").exists()
    assert _json(out / "report" / "codegen.json")
