"""A user's own QONNX file as the model of a build (`build.py --onnx FILE`).

The file must be a QONNX graph (Brevitas `export_qonnx`, or the older export with `Quant` nodes
in the default domain) taking one frame of RadioML samples and giving class scores:
- input (1, 2, 1024) / (1, 2, 1, 1024) / ... : RadioML 2018.01A frames, 24 classes;
- input with 2 x 128 samples: RadioML 2016.10a frames, 11 classes.
The frames are the dataset's channels-first (2, L) samples reshaped to the graph's input shape,
as for the zoo models. The graph itself is then the golden model every later stage is compared
with.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from flows.errors import InputFileError

__all__ = ["onnx_model_spec", "read_user_onnx", "read_user_onnx_unconverted", "sha256_of"]

# frame length -> (dataset, number of classes)
_DATASETS = {1024: ("rml2018", 24), 128: ("rml2016", 11)}
_EXPECTED = ("a QONNX graph with one input holding one frame of 2 x 1024 (RadioML 2018.01A, "
             "24 classes) or 2 x 128 samples (RadioML 2016.10a, 11 classes), batch 1, and one "
             "output of class scores")
_QUANT_OPS = ("Quant", "BipolarQuant", "Trunc", "QuantizeLinear")
QONNX_DOMAIN = "qonnx.custom_op.general"
TARGET_OPSET = 13
CONVERTED_FROM_KEY = "converted_from_opset"  # metadata on a graph whose opset was converted


def read_user_onnx(path: str | Path):
    """The cleaned-up QONNX graph in `path` (qonnx `cleanup_model`), checked against what a
    build needs; an `InputFileError` naming the file and the problem otherwise."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    import hw.finn_flow  # noqa: F401  (installs the project's qonnx fixes)

    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such file" if not path.exists() else "not a file",
                             expected=_EXPECTED, fix="Pass --onnx with the path of a .onnx file")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001  (protobuf raises assorted errors on bad bytes)
        raise InputFileError(path, f"not an ONNX file ({type(exc).__name__})",
                             expected=_EXPECTED) from None
    graph = proto.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise InputFileError(path, f"has {len(inputs)} inputs and {len(graph.output)} outputs",
                             expected=_EXPECTED)
    if not any(node.op_type in _QUANT_OPS for node in graph.node):
        raise InputFileError(path, "has no Quant nodes: a float model, not a quantized one",
                             expected=_EXPECTED,
                             fix="Export the Brevitas model with brevitas.export.export_qonnx")
    original = proto
    proto = _with_current_opset(path, proto)
    try:
        model = cleanup_model(ModelWrapper(proto))
    except Exception as exc:  # noqa: BLE001  (qonnx raises anything on a malformed graph)
        raise InputFileError(path, f"qonnx cannot clean the graph up: {type(exc).__name__}: "
                             f"{exc}", expected=_EXPECTED) from None
    _frame_format(path, model)  # checks the shapes
    if proto is not original:
        model.set_metadata_prop(CONVERTED_FROM_KEY, str(_default_opset(original)))
    return model


def read_user_onnx_unconverted(path: str | Path):
    """The file's graph cleaned up but in its own opset: what `read_user_onnx` is checked
    against when it had to convert an old opset."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    return cleanup_model(ModelWrapper(str(path)))


def _default_opset(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _with_current_opset(path: Path, proto):
    """Graphs older than opset 11 (e.g. the 2021 challenge's exports, opset 9) converted to
    opset 13: FINN inserts ops (TopK with k as an input) that the old opsets define otherwise.
    QONNX ops in the default domain (the old exporters' habit) move to qonnx's domain first."""
    import copy

    import onnx
    from onnx import version_converter

    if _default_opset(proto) >= 11:
        return proto
    proto = copy.deepcopy(proto)
    for node in proto.graph.node:
        if node.op_type in ("Quant", "BipolarQuant", "Trunc") and node.domain == "":
            node.domain = QONNX_DOMAIN
    if not any(o.domain == QONNX_DOMAIN for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid(QONNX_DOMAIN, 1))
    try:
        return version_converter.convert_version(proto, TARGET_OPSET)
    except Exception as exc:  # noqa: BLE001  (the converter raises assorted errors)
        raise InputFileError(path, f"its opset {_default_opset(proto)} could not be converted to "
                             f"{TARGET_OPSET} ({type(exc).__name__}: {exc})",
                             expected=_EXPECTED, fix="Export it again with opset 13 or newer")


def _frame_format(path: Path, model) -> tuple[tuple[int, ...], str, int]:
    """(per-frame input shape, dataset, classes) of a graph, checked."""
    in_shape = model.get_tensor_shape(model.graph.input[0].name)
    out_shape = model.get_tensor_shape(model.graph.output[0].name)
    if not in_shape or any(not isinstance(d, int) or d < 1 for d in in_shape) or \
            in_shape[0] != 1:
        raise InputFileError(path, f"input shape {in_shape} is not a fixed shape of batch 1",
                             expected=_EXPECTED)
    frame_shape = tuple(in_shape[1:])
    samples = int(np.prod(frame_shape))
    length = samples // 2
    if samples % 2 or length not in _DATASETS or 2 not in frame_shape:
        raise InputFileError(path, f"input shape {in_shape} does not hold one 2 x L frame with "
                             f"L in {sorted(_DATASETS)}", expected=_EXPECTED)
    dataset, classes = _DATASETS[length]
    if not out_shape or int(np.prod(out_shape)) != classes:
        raise InputFileError(path, f"output shape {out_shape} does not hold {classes} class "
                             f"scores, which {dataset} frames of {length} samples need",
                             expected=_EXPECTED)
    return frame_shape, dataset, classes


@lru_cache(maxsize=8)
def _spec_cached(path: str, mtime_ns: int):
    from models.registry import ModelSpec

    model = read_user_onnx(path)
    frame_shape, dataset, classes = _frame_format(Path(path), model)
    weight_bits = [int(model.get_initializer(n.input[3])) for n in model.graph.node
                   if n.op_type == "Quant" and model.get_initializer(n.input[0]) is not None
                   and model.get_initializer(n.input[3]) is not None]
    return ModelSpec(name=Path(path).stem, dataset=dataset, input_shape=frame_shape,
                     n_classes=classes, default_bits=max(weight_bits, default=8),
                     description=f"user QONNX file {path}", builder=None)


def onnx_model_spec(path: str | Path):
    """A `ModelSpec` (models.registry) describing the graph in `path`, as the zoo's describe
    theirs: input shape, dataset, classes, and the widest weight quantizer as its bits."""
    path = Path(path)
    mtime = path.stat().st_mtime_ns if path.exists() else 0
    return _spec_cached(str(path), mtime)


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
