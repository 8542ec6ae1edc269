"""build.py: the argument contract, the step runner, checkpoints, resume and errors."""

import json
from pathlib import Path

import numpy as np
import pytest

import build
from flows.presets import DEFAULT_FLOW


def _run(tmp_path, *extra):
    return build.main(["--model", "bacalhaunet", "--board", "pynq-z2", "--out",
                       str(tmp_path / "out"), "--verify-frames", "12", "--until",
                       "build_model", *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A build up to the golden model (the FINN steps are tested in tests/flows/test_hw_steps)."""
    tmp_path = tmp_path_factory.mktemp("build")
    assert _run(tmp_path) == 0
    return tmp_path / "out"


def test_every_step_leaves_a_numbered_checkpoint_and_time(built):
    records = json.loads((built / "report" / "steps.json").read_text())
    assert [r["step"] for r in records] == list(DEFAULT_FLOW[:2])
    for i, r in enumerate(records):
        assert r["index"] == i and r["seconds"] >= 0
        assert (built / r["checkpoint"]).name.startswith(f"{i:02d}_{r['step']}")
        assert (built / r["checkpoint"]).stat().st_size > 0
    assert json.loads((built / "build_config.json").read_text())["model"] == "bacalhaunet"


def test_verification_frames_come_from_the_dataset_test_split(built):
    frames = np.load(built / "data" / "verify_frames.npz")
    assert frames["x"].shape == (12, 2, 1024) and frames["x"].dtype == np.float32
    assert len(np.unique(frames["y"])) >= 10  # spread over classes
    assert frames["snr"].min() < 0 < frames["snr"].max()  # and over SNRs
    summary = json.loads((built / "intermediate" / "00_prepare_data.json").read_text())
    assert summary["synthetic"] and summary["frames"] == 12
    # Frames are real dataset rows: re-read them from the synthetic file.
    from flows.radioml import open_radioml

    with open_radioml(summary["data_file"]) as src:
        x, y, _ = src.read(frames["rows"])
        assert np.array_equal(x, frames["x"]) and np.array_equal(y, frames["y"])
        assert set(frames["rows"]) <= set(src.split()[1])


def test_golden_outputs_are_the_model_logits(built):
    golden = np.load(built / "report" / "golden_outputs.npz")
    assert golden["logits"].shape == (12, 24)
    assert np.isfinite(golden["logits"]).all()
    # The checkpoint reproduces them: rebuild the model from it and run it again.
    from flows.config import BuildConfig
    from flows.steps import golden_logits
    from models.checkpoints import instantiate

    cfg = BuildConfig.load(built / "build_config.json")
    model = instantiate(cfg, built / "intermediate" / "01_build_model.pt")
    frames = np.load(built / "data" / "verify_frames.npz")
    assert np.array_equal(golden_logits(model, frames["x"], cfg), golden["logits"])


def test_model_report_names_the_weights(built):
    report = json.loads((built / "report" / "model.json").read_text())
    assert report["weight_bits"] == report["act_bits"] == 6
    assert report["weights_count"] == 9318 and report["macs"] == 2_044_032
    if not (Path("models/weights/bacalhaunet.pt")).exists():
        assert report["weights"].startswith("untrained")


def test_resume_from_a_step_reuses_the_earlier_checkpoint(built, tmp_path):
    before = (built / "intermediate" / "00_prepare_data.json").stat().st_mtime_ns
    assert build.main(["--model", "bacalhaunet", "--board", "pynq-z2", "--out", str(built),
                       "--verify-frames", "12", "--from", "build_model", "--until",
                       "build_model"]) == 0
    assert (built / "intermediate" / "00_prepare_data.json").stat().st_mtime_ns == before


def test_resume_with_other_options_is_refused(built, capsys):
    rc = build.main(["--model", "bacalhaunet", "--board", "pynq-z2", "--out", str(built),
                     "--verify-frames", "12", "--bits", "4", "--from", "build_model",
                     "--until", "build_model"])
    assert rc == 2
    assert "was built with bits=None" in capsys.readouterr().err


def test_resume_without_earlier_build_is_an_error(tmp_path, capsys):
    assert _run(tmp_path, "--from", "build_model") == 2
    assert "holds no earlier build" in capsys.readouterr().err


def test_until_bitfile_without_vivado_fails_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no vendor tool can be found
    monkeypatch.delenv("XILINX_VIVADO", raising=False)
    rc = build.main(["--model", "bacalhaunet", "--board", "pynq-z2", "--out",
                     str(tmp_path / "out"), "--until", "bitfile"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "vivado" in err and "docker run" in err and "bitfile" in err
    assert not (tmp_path / "out").exists()


def test_from_after_until_is_an_error(tmp_path, capsys):
    assert build.main(["--model", "bacalhaunet", "--board", "pynq-z2", "--out",
                       str(tmp_path / "out"), "--from", "fold", "--until", "streamline"]) == 2
    assert "--from fold comes after --until streamline" in capsys.readouterr().err


def test_until_stops_after_the_step(tmp_path):
    assert build.main(["--model", "bacalhaunet", "--board", "pynq-z2", "--out",
                       str(tmp_path / "out"), "--until", "prepare_data"]) == 0
    assert not (tmp_path / "out" / "report" / "golden_outputs.npz").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "nonet", "--board", "pynq-z2"], "invalid choice: 'nonet'"),
    (["--model", "bacalhaunet", "--board", "zedboard"], "invalid choice: 'zedboard'"),
    (["--model", "bacalhaunet", "--board", "pynq-z2", "--until", "bitstream"], "invalid choice"),
    (["--model", "bacalhaunet", "--board", "pynq-z2", "--bits", "1"], "--bits 1"),
    (["--model", "bacalhaunet", "--board", "pynq-z2", "--target-fps", "0"], "--target-fps 0"),
])
def test_bad_arguments_name_the_choices(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        build.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    if "invalid choice" in message:
        assert "pynq-z2" in err or "bacalhaunet" in err or "prepare_data" in err


def test_weights_of_another_model_are_refused(tmp_path, capsys):
    import torch

    torch.save({"model": "vgg10", "weight_bits": 6, "act_bits": 6, "state_dict": {}},
               tmp_path / "w.pt")
    assert _run(tmp_path, "--weights", str(tmp_path / "w.pt")) == 2
    err = capsys.readouterr().err
    assert "w.pt" in err and "model='vgg10'" in err


def test_missing_weights_file_is_a_clear_error(tmp_path, capsys):
    assert _run(tmp_path, "--weights", str(tmp_path / "nope.pt")) == 2
    assert "nope.pt: no such checkpoint file" in capsys.readouterr().err


def test_data_of_the_wrong_format_is_refused(tmp_path, capsys):
    from flows.synth import write_rml2016

    path = write_rml2016(tmp_path / "small2016.pkl", frames_per_cell=4, seed=1)
    assert _run(tmp_path, "--data", str(path)) == 2
    assert "expects rml2018 data" in capsys.readouterr().err
