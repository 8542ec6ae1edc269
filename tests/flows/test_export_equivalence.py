"""Golden equivalence of the QONNX export for every zoo model: `build.py --until export_qonnx`
executes the exported graph with qonnx on dataset-layout frames and compares it with the
Brevitas model (report/verification.json)."""

import json

import pytest

import build
from models.registry import model_names

SLOW = {"imperial", "ulcnn"}  # hundreds of nodes, executed one frame at a time by qonnx
FRAMES = 6


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in model_names()])
def test_qonnx_export_matches_the_brevitas_model(name, tmp_path):
    out = tmp_path / "out"
    assert build.main(["--model", name, "--board", "pynq-z2", "--out", str(out),
                       "--verify-frames", str(FRAMES), "--until", "export_qonnx"]) == 0
    (record,) = json.loads((out / "report" / "verification.json").read_text())
    assert record["step"] == "export_qonnx" and record["passed"]
    assert record["frames"] == FRAMES and record["classes_equal"] == FRAMES
    assert record["frames_within_atol"] >= FRAMES - int(FRAMES * 0.5)
    assert (out / "intermediate" / "02_export_qonnx.onnx").stat().st_size > 0
