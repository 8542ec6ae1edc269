"""hw.finn_flow: export errors name the layer."""

import pytest
import torch
from torch import nn

from flows.errors import ToolchainError
from hw.finn_flow import export_qonnx


class NotExportable(nn.Module):
    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            raise RuntimeError("no ONNX symbol for this op")
        return x


def test_export_failure_names_the_layer(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 4, (1, 3)), nn.Sequential(nn.ReLU(), NotExportable()))
    with pytest.raises(ToolchainError, match=r"layer '1\.1' \(NotExportable\) failed with "
                                             r"RuntimeError: no ONNX symbol"):
        export_qonnx(model, (2, 1, 16), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    assert model[0].weight.requires_grad  # the model is left usable


def _identity_model(n_classes=5):
    from onnx import TensorProto, helper
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.basic import qonnx_make_model

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_classes])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_classes])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return ModelWrapper(qonnx_make_model(graph))


def test_verify_admits_rare_boundary_flips_but_never_a_class_change(tmp_path):
    import numpy as np

    from hw.finn_flow import verify

    rng = np.random.default_rng(0)
    frames = rng.normal(size=(12, 5)).astype(np.float32)
    model = _identity_model()
    reference = frames.copy()
    reference[3] += 0.01 * np.sign(reference[3])  # one frame off by more than atol, same class
    check = verify("s", model, frames, reference, max_off_fraction=0.1)
    assert check.frames_within(1e-4) == 11 and check.exact_classes
    with pytest.raises(ToolchainError, match="11/12 frames with logits within 0.0001"):
        verify("s", model, frames, reference, max_off_fraction=0.0)
    reference[5] = frames[5]
    reference[5, frames[5].argmin()] = 10.0  # another class wins
    with pytest.raises(ToolchainError, match="11/12 top-1 classes equal"):
        verify("s", model, frames, reference, max_off_fraction=0.5, evidence_dir=tmp_path)
    assert np.array_equal(np.load(tmp_path / "s_logits.npy"), frames)


def test_verify_bounds_every_frame_relative_to_its_logits():
    import numpy as np

    from hw.finn_flow import verify

    rng = np.random.default_rng(1)
    frames = rng.normal(size=(12, 5)).astype(np.float32)
    reference = frames.copy()
    scale = np.abs(reference[3]).max()
    reference[3] += 0.005 * scale * np.sign(reference[3])  # a boundary flip: 0.5 % of the logits
    check = verify("s", _identity_model(), frames, reference, max_off_fraction=0.1, rtol=0.01)
    assert check.frames_within_relative(1e-4, 0.01) == 12
    reference[3] = frames[3] + 0.05 * scale * np.sign(frames[3])  # 5 %: a wrong scale, not a flip
    with pytest.raises(ToolchainError, match=r"11/12 within 0.0001 \+ 0.01 x max"):
        verify("s", _identity_model(), frames, reference, max_off_fraction=0.1, rtol=0.01)


def test_a_frame_with_small_logits_gets_the_models_typical_bound():
    """A rounding flip moves logits by an absolute amount: on a frame whose logits are all
    small (the published VGG10 unsure of a frame: largest 0.5 against a median of 40), 0.026
    is 5 % of the frame's own scale but 0.07 % of the model's."""
    import numpy as np

    from hw.finn_flow import verify

    rng = np.random.default_rng(2)
    frames = (40 * rng.normal(size=(8, 24))).astype(np.float32)
    frames[5] *= 0.3 / np.abs(frames[5]).max()  # an unsure frame: largest |logit| 0.5,
    frames[5, frames[5].argmax()] = 0.5  # its top-1 class
    reference = frames.copy()
    reference[5, frames[5].argmin()] += 0.026  # a flip, away from the top-1 class
    check = verify("s", _identity_model(24), frames, reference, max_off_fraction=0.5,
                   rtol=0.05)
    assert check.frames_within_relative(1e-4, 0.05) == 8
    reference[2] = frames[2] * 1.2  # a wrong scale on a confident frame still fails
    with pytest.raises(ToolchainError, match=r"7/8 within 0.0001 \+ 0.05 x max"):
        verify("s", _identity_model(24), frames, reference, max_off_fraction=0.5, rtol=0.05)


def test_a_tie_between_two_classes_is_not_a_class_change():
    import numpy as np

    from hw.finn_flow import verify

    frames = np.array([[0.5, 2.0, 2.0, -1.0], [3.0, 0.0, 1.0, 2.0]], dtype=np.float32)
    reference = frames.copy()
    reference[0, 1] -= 2e-6  # quantized logits tie; float noise decides between classes 1 and 2
    check = verify("s", _identity_model(4), frames, reference)
    assert check.exact_classes and check.classes[0] == 1
    reference[0, 1] -= 1e-2  # no longer a tie: class 2 is the reference's
    with pytest.raises(ToolchainError, match="1/2 top-1 classes equal"):
        verify("s", _identity_model(4), frames, reference, max_off_fraction=1.0)
