"""Tests of the training flow: reproducibility, resume, checkpoint metadata, distillation,
pruning down to the exported graph, the sweep, PTQ, and the errors on bad input.

Runs are tiny (a few dozen frames of a 6-cell file, one or two epochs of BacalhauNet, the
smallest zoo model): they check the mechanics, not the accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from flows import train as train_mod
from flows.prune import MagnitudePruner, prunable_weights
from flows.train import (
    TrainConfig,
    full_state_dict,
    kd_loss,
    model_from_checkpoint,
    train,
)
from models.zoo import build_model

CELLS = [(c, s) for c in (0, 3, 12) for s in (10, 20)]  # 3 classes x SNR 0 and +20 dB


@pytest.fixture
def data_file(rml2018_h5):
    return rml2018_h5(cells=CELLS, frames_per_cell=24)  # 3 test, 2 val, 19 train per cell


def tiny(data, out, **kw) -> TrainConfig:
    options = dict(model="bacalhaunet", data=str(data), out=out, epochs=1, batch_size=16,
                   max_frames=32, snr_min=-20)
    options.update(kw)
    return TrainConfig(**options)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _save_fresh(path, name, bits):
    """A toolchain checkpoint of an untrained zoo model."""
    with full_state_dict():
        state = build_model(name, bits).state_dict()
    torch.save({"model": name, "weight_bits": bits, "act_bits": bits, "state_dict": state}, path)
    return path


# ---------------------------------------------------------------- reproducibility and resume

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One 1-epoch run shared by the tests that only read it: (data file, TrainResult)."""
    from tests.conftest import write_rml2018

    root = tmp_path_factory.mktemp("base")
    data = write_rml2018(root / "rml2018.h5", cells=CELLS, frames_per_cell=24)
    return data, train(tiny(data, root / "run"))


def test_same_seed_gives_same_weights_and_another_seed_does_not(base, tmp_path):
    data, first = base
    again = train(tiny(data, tmp_path / "again"))
    other = train(tiny(data, tmp_path / "other", seed=1))
    sa, sb, sc = (_load(r.last)["state_dict"] for r in (first, again, other))
    assert _same_tensors(sa, sb)
    assert not _same_tensors(sa, sc)


def test_resume_continues_bit_exactly(base, tmp_path):
    data, first = base
    straight = _load(train(tiny(data, tmp_path / "straight", epochs=2)).last)
    resumed = _load(train(tiny(data, tmp_path / "second", epochs=2, resume=first.last)).last)
    assert resumed["epoch"] == straight["epoch"] == 2
    assert _same_tensors(straight["state_dict"], resumed["state_dict"])
    for key in ("exp_avg", "exp_avg_sq"):
        for i, s in straight["optimizer"]["state"].items():
            assert torch.equal(s[key], resumed["optimizer"]["state"][i][key])
    assert [h["train_loss"] for h in straight["history"]] == \
        [h["train_loss"] for h in resumed["history"]]
    assert (tmp_path / "second" / "best.pt").is_file()


def test_checkpoint_metadata_and_outputs(base):
    data, result = base
    ckpt = _load(result.best)
    assert (ckpt["model"], ckpt["weight_bits"], ckpt["act_bits"]) == ("bacalhaunet", 6, 6)
    assert ckpt["dataset"]["path"] == str(data.resolve())
    assert ckpt["dataset"]["synthetic"] is False
    assert ckpt["dataset"]["size_bytes"] == data.stat().st_size
    assert ckpt["split"]["train_frames"] == 32 and ckpt["split"]["val_frames"] == 2 * len(CELLS)
    assert "validation" in ckpt["split"]["rule"]
    assert ckpt["epoch"] == 1 and set(ckpt["metrics"]) >= {"train_loss", "val_accuracy"}
    assert ckpt["config"]["lr"] == 0.01 and ckpt["config"]["batch_size"] == 16
    assert ckpt["config"]["weight_decay"] == 1e-4  # BacalhauNet's recipe
    assert ckpt["versions"]["torch"] == str(torch.__version__)
    assert "brevitas" in ckpt["versions"]
    assert ckpt["command"][:3] == ["python", "-m", "flows.train"]
    assert {"optimizer", "scheduler", "rng", "quantizer_state"} <= set(ckpt)
    # the test evaluation of best.pt: in the checkpoint and on disk
    ev = json.loads((result.out_dir / "evaluation" / "evaluation.json").read_text())
    assert ev["frames"] == 3 * len(CELLS) and ckpt["evaluation"]["accuracy"] == ev["accuracy"]
    # loadable by the toolchain's loader (the hardware flow's --weights)
    from models.checkpoints import load_checkpoint

    model = build_model("bacalhaunet")
    load_checkpoint(model, result.best, "bacalhaunet", 6, 6)
    assert torch.equal(model.state_dict()["fc.weight"], ckpt["state_dict"]["fc.weight"])


def test_command_line_round_trip():
    cfg = TrainConfig(model="vgg10", data="synthetic", bits=4, classes=["OOK", "BPSK"],
                      prune_rounds=2, prune_fraction=0.3, init_any_bits=True)
    assert train_mod.config_from_args(cfg.to_argv()) == cfg


def test_rotate_augment_comes_from_the_recipe_and_round_trips():
    assert TrainConfig(model="ulcnn", data="synthetic").with_recipe().rotate_augment is True
    assert TrainConfig(model="vgg10", data="synthetic").with_recipe().rotate_augment is False
    off = TrainConfig(model="ulcnn", data="synthetic", rotate_augment=False)
    assert off.to_argv()[-1] == "--no-rotate-augment"
    assert train_mod.config_from_args(off.to_argv()) == off
    assert train_mod.config_from_args(off.to_argv()).with_recipe().rotate_augment is False
    on = TrainConfig(model="vgg10", data="synthetic", rotate_augment=True, kd_from_unpruned=True,
                     prune_rounds=1, prune_fraction=0.15)
    assert train_mod.config_from_args(on.to_argv()) == on


def test_rotate_iq_multiplies_by_powers_of_j():
    x = torch.tensor([[[1.0, 0.5], [0.0, -2.0]]]).repeat(4, 1, 1)  # z = 1, 0.5 - 2j
    out = train_mod.rotate_iq(x, torch.arange(4))
    powers_of_j = torch.tensor([1, 1j, -1, -1j], dtype=torch.complex64)[:, None]
    z = torch.complex(x[:, 0], x[:, 1]) * powers_of_j
    assert torch.equal(out[:, 0], z.real) and torch.equal(out[:, 1], z.imag)
    assert torch.equal(out[0], x[0]) and not torch.equal(out[1], x[1])


def test_rotation_augmentation_rotates_training_frames_only(data_file, tmp_path, monkeypatch):
    seen = []
    real = train_mod.rotate_iq
    monkeypatch.setattr(train_mod, "rotate_iq", lambda x, k: seen.append(k) or real(x, k))
    train(tiny(data_file, tmp_path / "plain"))
    assert seen == []  # bacalhaunet's recipe: no rotation
    result = train(tiny(data_file, tmp_path / "rot", rotate_augment=True, epochs=2))
    assert len(seen) == 2 * 2  # 32 frames in batches of 16, two epochs: every training batch
    k = torch.cat(seen)
    assert len(k) == 2 * 32 and set(k.tolist()) == {0, 1, 2, 3}
    assert _load(result.best)["config"]["rotate_augment"] is True


def test_kd_from_unpruned_distils_the_finetuning_from_the_model_before_pruning(
        data_file, tmp_path, monkeypatch):
    calls = []
    real = train_mod.kd_loss
    monkeypatch.setattr(train_mod, "kd_loss", lambda *a: calls.append(a) or real(*a))
    result = train(tiny(data_file, tmp_path / "kd", prune_rounds=1, prune_fraction=0.5,
                        finetune_epochs=1, kd_from_unpruned=True))
    assert len(calls) == 2  # the fine-tuning epoch only (2 batches of 16), not epoch 1
    teacher_path = result.out_dir / train_mod.UNPRUNED_TEACHER
    teacher = _load(teacher_path)["state_dict"]
    student = _load(result.last)
    assert student["sparsity"]["sparsity"] >= 0.5 - 1e-3
    # the teacher is unpruned, and it is what the loss received: same logits on a batch
    names = prunable_weights(build_model("bacalhaunet"))
    assert sum(int((teacher[n] == 0).sum()) for n in names) < 0.01 * sum(
        teacher[n].numel() for n in names)
    teacher_model, _ = model_from_checkpoint(teacher_path)
    assert calls[0][1].shape == calls[0][0].shape == (16, 24)
    assert teacher_model.training is False


def test_kd_from_unpruned_resumes_bit_exactly_with_the_same_teacher(data_file, tmp_path,
                                                                    monkeypatch):
    opts = dict(prune_rounds=2, prune_fraction=0.3, finetune_epochs=1, kd_from_unpruned=True)
    real = train_mod.save_checkpoint

    def keep_epoch_2(path, ckpt):  # a copy of last.pt after the first fine-tuning epoch
        real(path, ckpt)
        if path.name == "last.pt" and ckpt["epoch"] == 2:
            real(path.with_name("epoch2.pt"), ckpt)

    monkeypatch.setattr(train_mod, "save_checkpoint", keep_epoch_2)
    straight = train(tiny(data_file, tmp_path / "straight", **opts))
    monkeypatch.setattr(train_mod, "save_checkpoint", real)
    resumed = train(tiny(data_file, tmp_path / "resumed", resume=tmp_path / "straight" /
                         "epoch2.pt", **opts))
    a, b = _load(straight.last), _load(resumed.last)
    assert a["epoch"] == b["epoch"] == 3
    assert _same_tensors(a["state_dict"], b["state_dict"])
    assert _same_tensors(
        _load(tmp_path / "resumed" / train_mod.UNPRUNED_TEACHER)["state_dict"],
        _load(tmp_path / "straight" / train_mod.UNPRUNED_TEACHER)["state_dict"])
    # without the teacher file next to the checkpoint, the resume is refused
    (tmp_path / "straight" / train_mod.UNPRUNED_TEACHER).unlink()
    from flows.errors import InputFileError

    with pytest.raises(InputFileError, match="unpruned"):
        train(tiny(data_file, tmp_path / "again", resume=tmp_path / "straight" / "epoch2.pt",
                   **opts))


def test_kd_from_unpruned_needs_pruning_and_no_other_teacher(data_file, tmp_path):
    from flows.errors import ToolchainError

    with pytest.raises(ToolchainError, match="--kd-from-unpruned"):
        train(tiny(data_file, tmp_path / "x", kd_from_unpruned=True))


def test_synthetic_data_is_generated_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "SYNTHETIC_DIR", tmp_path / "synthetic")
    first = train_mod.resolve_data("synthetic", "rml2018", 1, 5)
    path = tmp_path / "synthetic" / first["path"].rsplit("/", 1)[1]
    assert path.is_file() and first["synthetic"] and first["seed"] == 5
    stamp = path.stat().st_mtime_ns
    again = train_mod.resolve_data("synthetic", "rml2018", 1, 5)
    assert again == first and path.stat().st_mtime_ns == stamp


def test_rml2018_validation_rows_come_from_train_rows_per_cell(data_file):
    from flows.radioml import open_radioml

    source = open_radioml(data_file)
    train_rows, test_rows = source.split()
    splits = train_mod.make_splits(source)
    assert set(splits.val) | set(splits.train) == set(train_rows)
    assert not set(splits.val) & set(splits.train)
    assert np.array_equal(splits.test, test_rows)
    assert len(splits.val) == 2 * len(CELLS)  # 21 train rows per cell: ceil(0.05 * 21) = 2


# ---------------------------------------------------------------- knowledge distillation

def test_kd_loss_on_a_known_case():
    t = 2.0
    student = torch.tensor([[0.0, 0.0]])  # soft: (1/2, 1/2)
    teacher = torch.tensor([[t * math.log(3.0), 0.0]])  # soft: (3/4, 1/4)
    labels = torch.tensor([0])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    ce = math.log(2.0)
    for a in (0.0, 0.3, 1.0):
        want = a * t * t * kl + (1 - a) * ce
        assert kd_loss(student, teacher, labels, t, a).item() == pytest.approx(want, rel=1e-6)
    # a student equal to its teacher only pays the hard-label part
    assert kd_loss(teacher, teacher, labels, t, 0.5).item() == pytest.approx(
        0.5 * torch.nn.functional.cross_entropy(teacher, labels).item(), rel=1e-6)


def test_distillation_from_another_model_uses_the_teacher(data_file, tmp_path, monkeypatch):
    teacher = _save_fresh(tmp_path / "teacher.pt", "vgg10-w4a4-32", 4)
    calls = []
    real = train_mod.kd_loss
    monkeypatch.setattr(train_mod, "kd_loss", lambda *a: calls.append(a[3:]) or real(*a))
    result = train(tiny(data_file, tmp_path / "kd", teacher=teacher, kd_temperature=3.0,
                        kd_weight=0.7))
    assert calls and set(calls) == {(3.0, 0.7)}
    assert _load(result.best)["config"]["teacher"] == str(teacher)


def test_imperial_trains_with_its_auxiliary_losses(data_file, tmp_path, monkeypatch):
    from models.imperial import Imperial

    calls = []
    real = Imperial.forward_with_aux
    monkeypatch.setattr(Imperial, "forward_with_aux", lambda self, x: calls.append(1)
                        or real(self, x))
    train(tiny(data_file, tmp_path / "imperial", model="imperial", max_frames=16))
    assert len(calls) == 1  # one batch of 16 frames, through the auxiliary heads


# ---------------------------------------------------------------- pruning

def test_pruning_round_removes_the_smallest_live_weights():
    model = build_model("bacalhaunet")
    pruner = MagnitudePruner(model)
    n = sum(p.numel() for p in pruner.params.values())
    assert pruner.prune_round(fraction=0.5) == round(0.5 * n)
    assert pruner.prune_round(fraction=0.5) == round(0.5 * (n - round(0.5 * n)))
    kept = torch.cat([p.detach().abs().ravel() for p in pruner.params.values()])
    assert int((kept == 0).sum()) >= n - round(0.25 * n) - 1
    assert not any("aux" in name for name in prunable_weights(build_model("imperial")))


def test_pruned_sparsity_survives_finetuning_and_reaches_the_qonnx_export(data_file, tmp_path):
    from brevitas.export import export_qonnx

    fraction, rounds = 0.5, 2
    result = train(tiny(data_file, tmp_path / "pruned", prune_rounds=rounds,
                        prune_fraction=fraction, finetune_epochs=1))
    ckpt = _load(result.best)
    assert ckpt["epoch"] == 3 and ckpt["history"][-1]["phase"] == rounds  # fine-tuned last
    target = 1 - (1 - fraction) ** rounds
    assert ckpt["sparsity"]["sparsity"] >= target - 1e-3
    assert {layer["name"] for layer in ckpt["sparsity"]["layers"]} == \
        set(prunable_weights(build_model("bacalhaunet")))
    model, _ = model_from_checkpoint(result.best)
    path = tmp_path / "pruned.onnx"
    export_qonnx(model, input_t=torch.randn(1, 2, 1, 1024), export_path=str(path), dynamo=False)
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    weights = [inits[n.input[0]] for n in graph.node
               if n.op_type == "Quant" and n.input[0] in inits and inits[n.input[0]].ndim >= 2]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.size for w in weights)
    assert total == sum(p.numel() for p in prunable_weights(model).values())
    assert zeros / total >= target - 1e-3


# ---------------------------------------------------------------- sweep and PTQ

def test_sweep_writes_table_and_plot(data_file, tmp_path):
    from flows.sweep import NO_COST_NOTE, run_sweep

    sweep = run_sweep(tiny(data_file, None, max_frames=16), [6, 4], tmp_path / "sweep")
    assert [r.bits for r in sweep.rows] == [4, 6]
    table = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert table["note"] == NO_COST_NOTE and table["rows"][0]["bits"] == 4
    assert _load(tmp_path / "sweep" / "w4a4" / "best.pt")["weight_bits"] == 4
    assert "accuracy only" in (tmp_path / "sweep" / "sweep.md").read_text()
    assert (tmp_path / "sweep" / "accuracy_vs_bits.png").read_bytes()[:4] == b"\x89PNG"


def test_sweep_cost_axis_comes_from_the_cost_report(data_file, tmp_path):
    from flows.cost import sweep_cost
    from flows.sweep import run_sweep

    sweep = run_sweep(tiny(data_file, None, max_frames=16), [3, 6], tmp_path / "sweep",
                      cost_fn=sweep_cost)
    low, high = sweep.rows
    # BacalhauNet: 2,044,032 MACs and 9,318 weights; fewer bits cost fewer bops and weight bits
    assert high.cost["total_mem_w_bits"] <= 9_318 * 6
    assert low.cost["total_bops"] < high.cost["total_bops"]
    assert 0 < low.cost["challenge_score"] < high.cost["challenge_score"] < 1
    table = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert table["note"] == "accuracy and cost"
    assert "challenge_score" in (tmp_path / "sweep" / "sweep.md").read_text()


def test_ptq_calibrates_activation_scales_and_keeps_batchnorm(base, tmp_path):
    from flows.ptq import run_ptq

    data, run = base
    source = run.best
    result = run_ptq("bacalhaunet", source, str(data), 24, out_dir=tmp_path / "ptq")
    before, after = _load(source)["state_dict"], _load(tmp_path / "ptq" / "ptq_w8a8.pt")
    assert (after["weight_bits"], after["act_bits"]) == (8, 8)
    assert after["ptq"]["calib_frames"] == 24
    scales = [k for k in before if k.endswith("scaling_impl.value") and "relu" in k]
    assert scales and all(not torch.equal(before[k], after["state_dict"][k]) for k in scales)
    bn = [k for k in before if k.endswith("running_mean")]
    assert all(torch.equal(before[k], after["state_dict"][k]) for k in bn)
    assert result["evaluation"]["frames"] == 3 * len(CELLS)


# ---------------------------------------------------------------- bad input

def _fails(argv, capsys, *needles):
    assert train_mod.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert str(needle) in err, err
    return err


def test_missing_data_file_is_reported(tmp_path, capsys):
    missing = tmp_path / "nope.h5"
    _fails(["--model", "bacalhaunet", "--data", str(missing), "--out", str(tmp_path / "o")],
           capsys, missing, "does not exist")
    assert not (tmp_path / "o").exists()


def test_dataset_of_the_other_format_is_reported(rml2016_pkl, data_file, tmp_path, capsys):
    pkl = rml2016_pkl()
    _fails(["--model", "bacalhaunet", "--data", str(pkl), "--out", str(tmp_path / "o")],
           capsys, pkl, "11 classes", "frames of 128 samples", "rml2018 data")
    _fails(["--model", "ulcnn", "--data", str(data_file), "--out", str(tmp_path / "o")],
           capsys, data_file, "24 classes", "rml2016 data")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("option,name,bits,needle", [
    ("--resume", "vgg10", 8, "model='vgg10'"),
    ("--resume", "bacalhaunet", 8, "weight_bits=8"),
    ("--init", "vgg10-w4a4-32", 4, "model='vgg10-w4a4-32'"),
    ("--init", "bacalhaunet", 4, "weight_bits=4"),
])
def test_checkpoint_of_another_model_or_width_is_reported(option, name, bits, needle, data_file,
                                                          tmp_path, capsys):
    ckpt = _save_fresh(tmp_path / "other.pt", name, bits)
    _fails(["--model", "bacalhaunet", "--data", str(data_file), option, str(ckpt), "--out",
            str(tmp_path / "o")], capsys, ckpt, needle)
    assert not (tmp_path / "o").exists()


def test_init_from_another_width_on_a_class_subset(data_file, tmp_path):
    ckpt = _save_fresh(tmp_path / "w8.pt", "bacalhaunet", 8)
    result = train(tiny(data_file, tmp_path / "o", init=ckpt, init_any_bits=True,
                        classes=["OOK", "BPSK"]))
    best = _load(result.best)
    assert best["weight_bits"] == 6 and best["config"]["init"] == str(ckpt)
    assert best["classes"] == ["OOK", "BPSK"] and best["split"]["val_frames"] == 2 * 2 * 2
    ev = json.loads((tmp_path / "o" / "evaluation" / "evaluation.json").read_text())
    assert ev["frames"] == 2 * 2 * 3 and ev["classes_scored"] == ["OOK", "BPSK"]


def test_teacher_of_another_format_and_missing_checkpoints_are_reported(data_file, tmp_path,
                                                                        capsys):
    teacher = _save_fresh(tmp_path / "ulcnn.pt", "ulcnn", 8)
    base = ["--model", "bacalhaunet", "--data", str(data_file), "--out", str(tmp_path / "o")]
    _fails(base + ["--teacher", str(teacher)], capsys, teacher, "rml2016")
    for option in ("--resume", "--init", "--teacher"):
        _fails(base + [option, str(tmp_path / "missing.pt")], capsys, "missing.pt",
               "no such checkpoint")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(pickle.dumps({"a": 1})[:5])
    _fails(base + ["--init", str(junk)], capsys, junk, "not a readable")
    assert not (tmp_path / "o").exists()


def test_resume_with_changed_options_is_reported(base, data_file, tmp_path, capsys):
    data, first = base
    cfg = dataclasses.replace(tiny(data, tmp_path / "o", epochs=2, lr=0.001), resume=first.last)
    with pytest.raises(train_mod.ToolchainError, match="lr=0.01"):
        train(cfg)
    capsys.readouterr()
    _fails(["--model", "bacalhaunet", "--data", str(data_file), "--prune-fraction", "0.5"],
           capsys, "--prune-rounds")
