"""The fast emulator against FINN's own Python execution, tensor by tensor, on real frames."""

import os

import numpy as np
import pytest

import build
from flows.errors import ToolchainError
from hw.emulate import DataflowEmulator


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("emulate") / "out"
    assert build.main(["--model", "bacalhaunet", "--board", "pynq-z2", "--out", str(out),
                       "--verify-frames", "12", "--until", "codegen"]) == 0
    return out


def _frames(built, n):
    x = np.load(built / "data" / "verify_frames.npz")["x"][:n]
    return x.reshape(len(x), 2, 1, 1024).transpose(0, 2, 3, 1).astype(np.float32)  # NHWC


def test_every_tensor_equals_finns_execution(built, monkeypatch):
    monkeypatch.setenv("SANITIZE_QUANT_TENSORS", "0")  # compare raw values, as the build does
    from qonnx.core.modelwrapper import ModelWrapper

    from hw import finn_flow
    from hw.finn_env import configure_finn

    configure_finn(built / "finn")
    exe = finn_flow.executable_copy(ModelWrapper(str(built / "intermediate" / "12_codegen.onnx")))
    names = [t for node in exe.graph.node for t in node.output]
    x = _frames(built, 3)
    reference = finn_flow._run(exe, x, tensors=names)  # one frame at a time
    emulator = DataflowEmulator(exe.model)
    out, ours = emulator.run_with_tensors(x, names)
    assert len(ours) == len(names) > 40
    for name in names:
        assert np.array_equal(ours[name], reference[name].reshape(ours[name].shape)), name
    assert np.array_equal(out, reference["output"])


def test_batched_threaded_and_numpy_paths_agree(built, monkeypatch):
    import hw.emulate as emulate

    emulator = DataflowEmulator.from_file(built / "intermediate" / "12_codegen.onnx")
    x = _frames(built, 12)
    one_by_one = np.concatenate([emulator.run(f[None], threads=1) for f in x])
    assert np.array_equal(emulator.run(x, threads=2), one_by_one)
    monkeypatch.setattr(emulate, "_torch", lambda: None)  # the board's path: numpy only
    assert np.array_equal(emulator.run(x, threads=1), one_by_one)
    golden = np.load(built / "report" / "golden_outputs.npz")["logits"].argmax(axis=1)
    assert np.array_equal(one_by_one[:, 0], golden)


def test_unsupported_layer_and_bad_file_are_named(built, tmp_path):
    import onnx

    proto = onnx.load(str(built / "intermediate" / "12_codegen.onnx"))
    proto.graph.node[1].op_type = "Upsampler_hls"
    with pytest.raises(ToolchainError, match="Upsampler is not supported"):
        DataflowEmulator(proto)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ToolchainError, match="not a readable ONNX graph"):
        DataflowEmulator.from_file(bad)
    emulator = DataflowEmulator(onnx.load(str(built / "intermediate" / "12_codegen.onnx")))
    with pytest.raises(ToolchainError, match="input must have shape"):
        emulator.run(np.zeros((2, 1, 512, 2), np.float32))
