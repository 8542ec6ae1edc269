"""hw/frame_exec.py: qonnx/FINN's node execution prepared once, against execute_onnx itself."""

import numpy as np
import pytest

STAGES = ("02_export_qonnx", "04_to_finn", "05_streamline", "06_label_select",
          "07_convert_to_hw", "08_partition", "09_specialize", "10_fold")


def _frames(build_dir):
    """The build's verification frames (dataset frames, not noise)."""
    return np.load(build_dir / "data" / "verify_frames.npz")["x"].astype(np.float32)


@pytest.mark.parametrize("stage", STAGES)
def test_every_tensor_equals_execute_onnx(bacalhaunet_build, stage):
    """On each stage of the BacalhauNet build and two frames of its data: every tensor of the
    prepared execution equals execute_onnx's. Integer-annotated tensors exactly; float
    tensors (before streamlining) within 1e-5 of their range: onnxruntime runs one thread here,
    which sums in another order."""
    from finn.core.onnx_exec import execute_onnx
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.finn_flow import _as_input, executable_copy
    from hw.frame_exec import FrameExecutor

    path = bacalhaunet_build / "intermediate" / f"{stage}.onnx"
    exe = executable_copy(ModelWrapper(str(path)))
    frames = _frames(bacalhaunet_build)[:2]
    executor = FrameExecutor(exe)
    name = exe.graph.input[0].name
    compared = 0
    for frame in frames:
        x = _as_input(exe, frame)
        ours = executor.run({name: x}, keep_all=True)
        theirs = execute_onnx(exe, {name: x}, return_full_exec_context=True)
        for tensor, value in theirs.items():
            if value is None or exe.get_initializer(tensor) is not None:
                continue
            if exe.get_tensor_datatype(tensor).is_integer():
                assert np.array_equal(ours[tensor], value), tensor
            else:
                scale = max(1.0, float(np.abs(value).max()))
                assert np.abs(ours[tensor] - value).max() <= 1e-5 * scale, tensor
            compared += 1
    assert compared >= 2 * 10  # the graphs have tens of tensors; a stage is never empty


def test_outputs_only_unless_asked(bacalhaunet_build):
    from qonnx.core.modelwrapper import ModelWrapper

    from hw.finn_flow import _as_input, executable_copy
    from hw.frame_exec import FrameExecutor

    exe = executable_copy(ModelWrapper(str(bacalhaunet_build / "intermediate" / "10_fold.onnx")))
    frame = _frames(bacalhaunet_build)[0]
    name = exe.graph.input[0].name
    out = FrameExecutor(exe).run({name: _as_input(exe, frame)})
    assert set(out) == {t.name for t in exe.graph.output}
    with pytest.raises(ValueError, match="shape"):
        FrameExecutor(exe).run({name: np.zeros((1, 3), dtype=np.float32)})
