"""Tests of the evaluation report: exact numbers on a hand-built case, the files written, and the
command line on a checkpoint."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from flows import evaluate
from flows.evaluate import predict, summarize, write_evaluation
from flows.radioml import make_loader, open_radioml
from flows.rml_formats import RML2018_CLASSES, RML2018_SNRS_DB
from flows.train import full_state_dict
from models.zoo import build_model

# (class index, SNR index): OOK and BPSK at -10 dB and +10 dB
CELLS = [(0, 5), (0, 15), (3, 5), (3, 15)]


class RowOracle(nn.Module):
    """A fake model whose prediction for each frame is set by the test: the conftest files put
    the row number in every I sample, so the model looks its answer up by row."""

    def __init__(self, answer_by_row: np.ndarray):
        super().__init__()
        self.answer = torch.as_tensor(answer_by_row)

    def forward(self, x):
        rows = x[:, 0, 0, 0].round().long()
        return nn.functional.one_hot(self.answer[rows], len(RML2018_CLASSES)).float()


def test_per_snr_accuracy_and_confusion_on_a_hand_built_case(rml2018_h5, tmp_path):
    path = rml2018_h5(cells=CELLS, frames_per_cell=4)
    source = open_radioml(path)
    labels, snrs = source.labels.astype(int), source.snrs_db.astype(int)
    # +10 dB: all right. -10 dB: OOK frames 0, 1 right and 2, 3 called BPSK; BPSK all called 8PSK
    answer = labels.copy()
    k = np.arange(len(labels)) % 4
    answer[(snrs == -10) & (labels == 0) & (k >= 2)] = 3
    answer[(snrs == -10) & (labels == 3)] = 5
    pred, y, snr = predict(RowOracle(answer), make_loader(source, batch_size=5), (2, 1, 1024))
    ev = summarize(pred, y, snr, RML2018_CLASSES, model="oracle", weight_bits=8, act_bits=8,
                   checkpoint=None, data=str(path), split="all", snr_min_db=None,
                   snr_max_db=None)
    assert ev.frames == 16
    assert ev.accuracy == 10 / 16
    assert ev.accuracy_by_snr() == {-10: 2 / 8, 10: 1.0}
    assert [r["frames"] for r in ev.per_snr] == [8, 8]
    assert {r["class"]: r["accuracy"] for r in ev.per_class} == {"OOK": 6 / 8, "BPSK": 4 / 8}
    conf = np.array(ev.confusion)
    assert conf.shape == (24, 24) and conf.sum() == 16
    assert conf[0, 0] == 6 and conf[0, 3] == 2 and conf[3, 3] == 4 and conf[3, 5] == 4

    files = write_evaluation(ev, tmp_path / "report")
    assert [f.name for f in files] == [evaluate.EVAL_JSON, evaluate.ACCURACY_PNG,
                                       evaluate.CONFUSION_PNG]
    for png in files[1:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(files[0].read_text())
    assert saved["accuracy"] == 10 / 16
    assert saved["per_snr"] == [{"snr_db": -10, "frames": 8, "accuracy": 0.25},
                                {"snr_db": 10, "frames": 8, "accuracy": 1.0}]
    assert saved["confusion"] == ev.confusion


def _fresh_checkpoint(path, name="vgg10-w4a4-32", bits=4):
    with full_state_dict():
        state = build_model(name, bits).state_dict()
    torch.save({"model": name, "weight_bits": bits, "act_bits": bits, "state_dict": state}, path)
    return path


def test_command_line_evaluates_a_checkpoint_on_the_test_split(rml2018_h5, tmp_path, capsys):
    path = rml2018_h5(cells=CELLS, frames_per_cell=10)  # 1 test frame per cell
    ckpt = _fresh_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "eval"
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(path), "--out", str(out),
                          "--snr-min", "0"]) == 0
    ev = json.loads((out / evaluate.EVAL_JSON).read_text())
    assert ev["split"] == "test" and ev["frames"] == 2 and ev["snr_min_db"] == 0
    assert [r["snr_db"] for r in ev["per_snr"]] == [10]
    assert ev["model"] == "vgg10-w4a4-32" and ev["checkpoint"] == str(ckpt)
    assert (out / evaluate.CONFUSION_PNG).is_file() and (out / evaluate.ACCURACY_PNG).is_file()
    assert "accuracy" in capsys.readouterr().err


def test_command_line_reports_bad_input(rml2016_pkl, rml2018_h5, tmp_path, capsys):
    missing = tmp_path / "missing.pt"
    data = rml2018_h5(cells=CELLS, frames_per_cell=10)
    assert evaluate.main(["--checkpoint", str(missing), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err
    ckpt = _fresh_checkpoint(tmp_path / "m.pt")
    pkl = rml2016_pkl()
    assert evaluate.main(["--checkpoint", str(ckpt), "--data", str(pkl)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "rml2016 data" in err and "Traceback" not in err
    assert RML2018_SNRS_DB[5] == -10 and RML2018_SNRS_DB[15] == 10  # the cells above
