"""Run a test split through the accelerator and report accuracy, throughput and latency.

Data: the package's `testset.npz` (or any .npz with x (N, 2, L), y, snr, optionally
golden_class), or a RadioML file, whose published test split is read with `flows.radioml` (the
one place that defines it; that module needs the host's environment, so on the board use an
.npz). Outputs in `--out`: `evaluation.json` with `accuracy_vs_snr.png` and
`confusion_matrix.png` (the schema and plots of `flows.evaluate`), and `driver_report.json`
(the evaluation plus backend, stage times, throughput and latency, and the agreement with the
golden model when the data carries its classes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from flows.errors import InputFileError, ToolchainError
from hw.driver.accelerator import Accelerator

__all__ = ["FrameSource", "open_frames", "evaluate", "summarize"]

REPORT_JSON = "driver_report.json"


@dataclass
class FrameSource:
    """Frames to classify, read batch by batch."""

    description: str
    n: int
    batches: "callable"  # batch_size -> iterator of (x, y, snr, golden_class or None)
    split: str


def _check_frames(path, frame_shape, n_classes, x_shape, labels, n_file_classes=None):
    if len(x_shape) != 3 or tuple(x_shape[1:]) != tuple(frame_shape):
        raise InputFileError(path, f"holds frames of shape {tuple(x_shape[1:])}",
                             f"({frame_shape[0]}, {frame_shape[1]}) frames for this accelerator",
                             "Pass data of the dataset the model was built for")
    if n_file_classes is not None and n_file_classes != n_classes:
        raise InputFileError(path, f"has {n_file_classes} classes",
                             f"{n_classes} classes, as the accelerator outputs",
                             "Pass data of the dataset the model was built for")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise InputFileError(path, f"has class labels up to {int(labels.max())}",
                             f"labels 0..{n_classes - 1} for this {n_classes}-class accelerator",
                             "Pass data of the dataset the model was built for")


def open_frames(path, frame_shape, n_classes, snr_min=None, snr_max=None) -> FrameSource:
    path = Path(path)
    if not path.exists():
        raise InputFileError(path, "does not exist", "an .npz test set (x, y, snr) or a "
                             "RadioML file", "Check the path")
    if path.suffix == ".npz":
        return _npz_frames(path, frame_shape, n_classes, snr_min, snr_max)
    try:
        from flows.radioml import open_radioml
    except ImportError as exc:
        raise ToolchainError(
            f"{path}: reading a RadioML file needs the project's host environment "
            f"({exc}); on the board pass an .npz test set (x, y, snr), e.g. the package's "
            "testset.npz") from None
    source = open_radioml(path)
    _check_frames(path, frame_shape, n_classes, (1, 2, source.frame_len), np.zeros(0),
                  len(source.classes))
    test = np.sort(source.split()[-1])
    if snr_min is not None or snr_max is not None:
        test = source.select(test, snr_min=snr_min, snr_max=snr_max)

    def batches(batch_size: int):
        for start in range(0, len(test), batch_size):
            x, y, snr = source.read(test[start:start + batch_size])
            yield x, y, snr, None

    return FrameSource(f"{path} (published test split)", len(test), batches, "test")


def _npz_frames(path, frame_shape, n_classes, snr_min, snr_max) -> FrameSource:
    try:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # noqa: BLE001  (zip and pickle errors of a damaged file)
        raise InputFileError(path, f"is not a readable .npz ({exc})") from None
    missing = [k for k in ("x", "y", "snr") if k not in arrays]
    if missing:
        raise InputFileError(path, f"lacks {', '.join(missing)}",
                             "arrays x (N, 2, L) float32, y (N,) class, snr (N,) dB")
    x, y, snr = arrays["x"], arrays["y"].astype(np.int64), arrays["snr"].astype(np.int64)
    golden = arrays.get("golden_class")
    _check_frames(path, frame_shape, n_classes, x.shape, y)
    keep = np.ones(len(x), dtype=bool)
    if snr_min is not None:
        keep &= snr >= snr_min
    if snr_max is not None:
        keep &= snr <= snr_max
    if not keep.any():
        raise ToolchainError(f"{path}: no frame has an SNR in [{snr_min}, {snr_max}] dB "
                             f"(the file spans {int(snr.min())}..{int(snr.max())} dB)")
    x, y, snr = x[keep], y[keep], snr[keep]
    golden = None if golden is None else golden[keep].astype(np.int64)

    def batches(batch_size: int):
        for start in range(0, len(x), batch_size):
            sl = slice(start, start + batch_size)
            yield x[sl], y[sl], snr[sl], (None if golden is None else golden[sl])

    return FrameSource(str(path), int(len(x)), batches, str(arrays.get("split", "test")))


def summarize(pred, labels, snrs_db, class_names, **meta) -> dict:
    """The evaluation as `flows.evaluate.summarize` computes it (used when importable; on the
    board, which lacks torch, the same fields are computed here; a test keeps both equal)."""
    try:
        from flows.evaluate import summarize as project_summarize
    except ImportError:
        return _summarize(pred, labels, snrs_db, class_names, **meta)
    return project_summarize(pred, labels, snrs_db, class_names, **meta).to_dict()


def _summarize(pred, labels, snrs_db, class_names, **meta) -> dict:
    pred, labels, snrs_db = (np.asarray(a, dtype=np.int64) for a in (pred, labels, snrs_db))
    n = len(class_names)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    correct = pred == labels
    present = np.unique(labels)
    return {**meta, "class_names": list(class_names),
            "classes_scored": [class_names[c] for c in present], "frames": int(len(pred)),
            "accuracy": float(correct.mean()),
            "per_snr": [{"snr_db": int(s), "frames": int((snrs_db == s).sum()),
                         "accuracy": float(correct[snrs_db == s].mean())}
                        for s in np.unique(snrs_db)],
            "per_class": [{"class": class_names[c], "frames": int((labels == c).sum()),
                           "accuracy": float(correct[labels == c].mean())} for c in present],
            "confusion": confusion.tolist()}


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="frame", desc="frames", mininterval=0.5)


def evaluate(acc: Accelerator, source: FrameSource, out_dir, *, progress: bool = True) -> dict:
    """Classify every frame of `source`, write the JSON and PNG outputs, return the report."""
    preds, labels, snrs, goldens = [], [], [], []
    bar = _progress(source.n, progress)
    try:
        for x, y, snr, golden in source.batches(acc.batch_size):
            preds.append(acc.classify(x))
            labels.append(y)
            snrs.append(snr)
            goldens.append(golden)
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()
    pred, label, snr = (np.concatenate(a) for a in (preds, labels, snrs))
    io = acc.package.io
    evaluation = summarize(pred, label, snr, acc.package.class_names,
                           model=io.get("model", "?"), weight_bits=io.get("weight_bits", 0),
                           act_bits=io.get("act_bits", 0), checkpoint=io.get("weights"),
                           data=source.description, split=source.split,
                           snr_min_db=None, snr_max_db=None)
    snr_levels = [r["snr_db"] for r in evaluation["per_snr"]]
    evaluation["snr_min_db"], evaluation["snr_max_db"] = min(snr_levels), max(snr_levels)
    report = {"backend": acc.backend.name, "deploy_dir": str(acc.package.dir),
              "batch_size": acc.batch_size, "evaluation": evaluation,
              "performance": acc.timings.to_dict()}
    if all(g is not None for g in goldens):
        golden = np.concatenate(goldens)
        differ = np.flatnonzero(golden != pred)
        report["golden_agreement"] = {"frames": int(len(pred)),
                                      "classes_equal": int(len(pred) - len(differ)),
                                      "differing_frames": differ[:100].tolist()}
    _write(report, Path(out_dir))
    return report


def _write(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    ev = report["evaluation"]
    _write_text(out_dir / "evaluation.json", json.dumps(ev, indent=1) + "\n")
    _write_text(out_dir / REPORT_JSON, json.dumps(report, indent=1) + "\n")
    try:
        from flows.plots import plot_accuracy_vs_snr, plot_confusion
    except ImportError:  # no matplotlib: the JSON holds everything the plots show
        return
    label = f"{ev['model']} w{ev['weight_bits']}a{ev['act_bits']} on {report['backend']}"
    plot_accuracy_vs_snr([r["snr_db"] for r in ev["per_snr"]],
                         [r["accuracy"] for r in ev["per_snr"]], out_dir / "accuracy_vs_snr.png",
                         title=f"{label}: {ev['frames']} frames", overall=ev["accuracy"])
    plot_confusion(np.array(ev["confusion"]), ev["class_names"], out_dir / "confusion_matrix.png",
                   title=f"{label}, all SNRs")


def _write_text(path: Path, text: str) -> None:
    try:
        from flows.fileio import atomic_write_text
    except ImportError:
        path.write_text(text)
    else:
        atomic_write_text(path, text)
