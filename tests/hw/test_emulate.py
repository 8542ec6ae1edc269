"""The fast emulator against FINN's own Python execution, tensor by tensor, on real frames."""

import os

import numpy as np
import pytest

from flows.errors import ToolchainError
from hw.emulate import DataflowEmulator


@pytest.fixture(scope="module")
def built(bacalhaunet_build):
    return bacalhaunet_build


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


def _count(thresholds, x, out_scale=1.0, out_bias=0.0):
    """The definition: the number of thresholds t[c] <= x per channel (channels last)."""
    t = np.asarray(thresholds, np.float64)
    xc = np.asarray(x, np.float64)[..., None]
    counts = (xc >= (t[None] if len(t) > 1 else t[0])).sum(-1) if len(t) > 1 \
        else (xc >= t[0]).sum(-1)
    return (counts * out_scale + out_bias).astype(np.float32)


def _thresholds(rng, channels, steps):
    """Rounded uniform quantizers per channel, and the awkward cases: repeated thresholds
    beside long steps, all thresholds equal, consecutive integers, infinities."""
    scale = rng.uniform(3, 40, (channels, 1))
    t = np.ceil(scale * (np.arange(steps) + 0.5) + rng.uniform(-900, 900, (channels, 1)))
    if channels >= 6:
        t[1, 2:5] = t[1, 2]  # repeats beside long steps: no line, a table
        t[2] = t[2, 0]  # one step of height `steps`
        t[3] = t[3, 0] + np.arange(steps)  # consecutive integers
        t[4, -1] = np.inf  # never reached
        t[5, 0] = -np.inf  # always reached
    return rng.permutation(t, axis=1)  # the order of thresholds does not matter


@pytest.mark.parametrize("channels,steps", [(1, 255), (1, 15), (8, 63), (48, 7)])
def test_thresholds_equal_their_definition_numpy_and_torch(channels, steps):
    from hw.emulate import _Threshold, _torch

    rng = np.random.default_rng(channels * 1000 + steps)
    t = _thresholds(rng, channels, steps)
    finite = t[np.isfinite(t)]
    lo, hi = int(finite.min()) - 3, int(finite.max()) + 3
    x = rng.integers(lo, hi, (64, 3, channels)).astype(np.float32)
    x[0, 0] = lo  # both ends
    x[0, 1] = hi
    everything = np.arange(lo, hi + 1, dtype=np.float32)  # every integer, every channel
    x_all = np.repeat(everything[:, None], channels, axis=1)
    for bias, scale in ((0.0, 1.0), (-128.0, 1.0), (-1.0, 2.0)):
        th = _Threshold(t, True, bias, scale)
        assert th.affine is not None or th.lut is not None
        if channels > 1:
            assert th.affine is not None and 0 < len(th.bad) < channels  # both kinds used
        for xs in (x, x_all):
            want = _count(t, xs, scale, bias)
            assert np.array_equal(th(xs), want)
            if _torch() is not None:
                assert np.array_equal(th.torch_call(xs), want)
        xf = rng.normal(0, 500, (64, 5, channels)).astype(np.float32)  # float input: search
        xf[0, :2] = t[:, 0] if channels > 1 else t[0, :2, None]  # on thresholds
        near = t + rng.uniform(-0.5, 0.5, t.shape)  # nearly uniform: one correction suffices
        scattered = rng.normal(0, 300, t.shape)  # the guess can be far off: corrected in steps
        for thresholds, one_step in ((near, True if channels == 1 else None), (scattered, False)):
            tf = _Threshold(thresholds, False, bias, scale)
            assert tf.lut is None and tf.affine is None
            assert one_step is None or tf.one_step[np.dtype(np.float32)] == one_step
            want = _count(tf.thresholds, xf, scale, bias)
            assert np.array_equal(tf(xf), want)
            if _torch() is not None:
                assert np.array_equal(tf.torch_call(xf), want)
