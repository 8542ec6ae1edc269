"""Published checkpoint layouts (`models.published`) through `--weights`'s loader.

Tests that read ../shared/reference/ skip naming the absent path (the files are not part of the
repository, see ../shared/reference/README.md); the error and BacalhauNet tests make their own
state dicts of the exact published layouts in `tmp_path`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flows.errors import InputFileError
from flows.rml_formats import RML2018_CLASSES
from models.checkpoints import (
    full_state_dict,
    load_checkpoint,
    load_state,
    shipped_checkpoint,
)
from models.published import LAYOUTS, SCALE, detect_layout
from models.zoo import build_model

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"
VGG10_PTH = REFERENCE / "vgg10-challenge" / "pretrained_VGG10_w8a8_20.pth"
VGG10_ONNX = REFERENCE / "vgg10-challenge" / "pretrained_VGG10_w8a8_20_export.onnx"
BACALHAU_KEYS = REFERENCE / "bacalhaunet-challenge" / "state_dict_keys.txt"
REAL_FRAME = REFERENCE / "radioml-frame" / "real16qam.npy"


def need(*paths: Path) -> None:
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        pytest.skip(f"reference file absent: {', '.join(absent)}")


def synthetic_state(layout: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of exactly the published key layout and shapes (positive: scales)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for t in LAYOUTS[layout].tensors:
        state[t.source] = torch.rand(t.shape, generator=gen) + 0.5
        if t.source.endswith("num_batches_tracked"):
            state[t.source] = torch.tensor(1000)
    return state


def save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def read_keys_file(path: Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split(None, 1)
            shapes[key] = tuple(int(s) for s in shape.strip("() ").split(",") if s.strip())
    return shapes


# ---------------------------------------------------------------- the layouts themselves

@pytest.mark.parametrize("layout, model_name", [("vgg10-challenge", "vgg10"),
                                                ("bacalhaunet-challenge", "bacalhaunet-faithful"),
                                                ("bacalhaunet-challenge", "bacalhaunet")])
def test_mapping_sets_every_tensor_of_the_zoo_model(layout, model_name):
    model = build_model(model_name)
    with full_state_dict():
        own = model.state_dict()
    targets = {t.target: t for t in LAYOUTS[layout].tensors}
    assert set(targets) == set(own)
    for key, t in targets.items():
        assert tuple(t.convert(torch.zeros(t.shape)).shape) == tuple(own[key].shape), key


def test_vgg10_layout_is_the_published_file(tmp_path):
    need(VGG10_PTH)
    state = torch.load(VGG10_PTH, map_location="cpu", weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == \
        {t.source: t.shape for t in LAYOUTS["vgg10-challenge"].tensors}
    assert detect_layout(state) is LAYOUTS["vgg10-challenge"]


def test_bacalhaunet_layout_is_the_published_key_list():
    need(BACALHAU_KEYS)
    assert read_keys_file(BACALHAU_KEYS) == \
        {t.source: t.shape for t in LAYOUTS["bacalhaunet-challenge"].tensors}


def test_project_checkpoints_are_not_taken_for_published_ones():
    for name in ("vgg10", "bacalhaunet"):
        shipped = shipped_checkpoint(name)
        if shipped is None:
            continue
        ckpt = torch.load(shipped, map_location="cpu", weights_only=True)
        assert detect_layout(ckpt["state_dict"]) is None
        model = build_model(name, ckpt["weight_bits"])
        load_checkpoint(model, shipped, name, ckpt["weight_bits"], ckpt["act_bits"])


# ---------------------------------------------------------------- the published VGG10

def _vgg10_frames() -> np.ndarray:
    """The real 16QAM frame and 30 synthetic frames of ten classes, (N, 2, 1024) float32."""
    from flows.synth import generate_frames

    z = np.load(REAL_FRAME)
    frames = [np.stack([z.real, z.imag])]
    rng = np.random.default_rng(7)
    for name in ("BPSK", "QPSK", "16QAM", "FM", "GMSK", "AM-DSB-WC", "64APSK", "OOK", "8PSK",
                 "AM-SSB-SC"):
        for snr in (-4, 10, 30):
            f = generate_frames(name, snr, 1, rng)[0]
            frames.append(np.stack([f.real, f.imag]))
    return np.stack(frames).astype(np.float32)


def _published_vgg10():
    model = build_model("vgg10")
    load_checkpoint(model, VGG10_PTH, "vgg10", 8, 8)
    return model.eval()


def test_published_vgg10_loads_and_reads_the_real_frame():
    need(VGG10_PTH, REAL_FRAME)
    model = _published_vgg10()
    x = torch.from_numpy(_vgg10_frames()[:1])[:, :, None, :]
    with torch.no_grad():
        assert RML2018_CLASSES[int(model(x).argmax())] == "16QAM"
    # the learned activation scales are the published ones: ReLU scale = value / 255
    value = torch.load(VGG10_PTH, map_location="cpu", weights_only=True)[f"3.{SCALE}"]
    assert float(model[3].act_quant.scale().detach()) == pytest.approx(float(value) / 255, rel=1e-6)


def test_published_vgg10_matches_the_2021_onnx_export():
    """Brevitas (through the import) and the organisers' own ONNX export, same frames."""
    need(VGG10_PTH, VGG10_ONNX, REAL_FRAME)
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.util.cleanup import cleanup_model

    onnx_model = cleanup_model(ModelWrapper(str(VGG10_ONNX)))
    name_in, name_out = onnx_model.graph.input[0].name, onnx_model.graph.output[0].name
    assert onnx_model.get_tensor_shape(name_in) == [1, 2, 1024]  # the original (N, 2, 1024)
    frames = _vgg10_frames()
    expected = np.concatenate([execute_onnx(onnx_model, {name_in: f[None]})[name_out]
                               for f in frames])
    with torch.no_grad():
        got = _published_vgg10()(torch.from_numpy(frames)[:, :, None, :]).numpy()
    # Equal up to float summation order, except where an activation sits on a quantization
    # boundary and one side rounds it to the next step: that moves a few logits by a few
    # activation steps times a weight (0.03-0.4 measured), and can flip the class only where
    # the top two logits are that close.
    diff = np.abs(got - expected).max(axis=1)
    assert (diff < 1e-3).mean() >= 0.8, diff
    assert diff.max() < 0.5, diff
    top2 = np.sort(expected, axis=1)[:, -2:]
    flipped = got.argmax(1) != expected.argmax(1)
    assert np.all(top2[flipped, 1] - top2[flipped, 0] < 2 * diff[flipped]), (flipped, diff)
    assert got[0].argmax() == expected[0].argmax() == RML2018_CLASSES.index("16QAM")


def test_published_vgg10_through_build_model_step(tmp_path):
    """`--weights` in a build: `instantiate` reads the published file."""
    need(VGG10_PTH)
    from flows.config import BuildConfig
    from models.checkpoints import instantiate

    cfg = BuildConfig(model="vgg10", board="zcu104", out_dir=tmp_path, weights=VGG10_PTH)
    model = instantiate(cfg, cfg.weights)
    assert not model.training


# ---------------------------------------------------------------- errors name the key

def test_renamed_key_is_refused_naming_both_keys(tmp_path):
    state = synthetic_state("vgg10-challenge")
    state = {("5.wieght" if k == "5.weight" else k): v for k, v in state.items()}
    path = save(state, tmp_path / "renamed.pth")
    with pytest.raises(InputFileError) as err:
        load_checkpoint(build_model("vgg10"), path, "vgg10", 8, 8)
    msg = str(err.value)
    assert "renamed.pth" in msg and "'5.wieght'" in msg
    assert "'5.weight' (64, 64, 3) is missing" in msg


def test_reshaped_key_is_refused_with_expected_and_found_shape(tmp_path):
    state = synthetic_state("vgg10-challenge")
    state["9.weight"] = torch.rand(64, 64, 5)
    state["30.weight"] = torch.rand(128, 256)  # a later offence: not the one reported
    path = save(state, tmp_path / "reshaped.pth")
    with pytest.raises(InputFileError) as err:
        load_checkpoint(build_model("vgg10"), path, "vgg10", 8, 8)
    msg = str(err.value)
    assert "reshaped.pth" in msg and "'9.weight': found shape (64, 64, 5)" in msg
    assert "expected shape (64, 64, 3)" in msg and "30.weight" not in msg


def test_real_vgg10_with_a_reshaped_key_is_refused(tmp_path):
    need(VGG10_PTH)
    state = torch.load(VGG10_PTH, map_location="cpu", weights_only=True)
    state["36.bias"] = state["36.bias"][:11]
    with pytest.raises(InputFileError, match=r"'36.bias': found shape \(11,\).*expected shape "
                                             r"\(24,\)"):
        load_state(build_model("vgg10"), state, "vgg10", VGG10_PTH)


def test_missing_and_extra_keys_are_refused(tmp_path):
    state = synthetic_state("bacalhaunet-challenge")
    del state["fc.bias"]
    with pytest.raises(InputFileError, match=r"lacks key 'fc.bias' \(24,\)"):
        load_state(build_model("bacalhaunet-faithful"), state, "bacalhaunet-faithful", "f.pth")
    state = synthetic_state("bacalhaunet-challenge")
    state["conv.5.dw.conv.weight"] = torch.rand(48, 1, 9)
    with pytest.raises(InputFileError, match=r"'conv.5.dw.conv.weight' \(48, 1, 9\) is not part"):
        load_state(build_model("bacalhaunet-faithful"), state, "bacalhaunet-faithful", "f.pth")


def test_wrong_model_or_bits_are_refused(tmp_path):
    path = save(synthetic_state("vgg10-challenge"), tmp_path / "vgg.pth")
    with pytest.raises(InputFileError, match="organisers' VGG10.*expected --model vgg10"):
        load_checkpoint(build_model("bacalhaunet"), path, "bacalhaunet", 6, 6)
    with pytest.raises(InputFileError, match="published at 8-bit weights.*Pass --bits 8"):
        load_checkpoint(build_model("vgg10", 4), path, "vgg10", 4, 4)


# ---------------------------------------------------------------- BacalhauNet

def test_bacalhaunet_layout_loads_into_the_faithful_model_exactly(tmp_path):
    state = synthetic_state("bacalhaunet-challenge")
    path = save(state, tmp_path / "bacalhaunet_gold_weights.pth")
    model = build_model("bacalhaunet-faithful")
    load_checkpoint(model, path, "bacalhaunet-faithful", 6, 6)
    with full_state_dict():
        own = model.state_dict()
    for t in LAYOUTS["bacalhaunet-challenge"].tensors:  # every key used, unchanged but reshaped
        assert torch.equal(own[t.target], t.convert(state[t.source])), t.source
    assert torch.equal(own["conv.0.dw.conv.weight"], state["conv.0.dw.conv.weight"][:, :, None])
    model.eval()
    # the published scales drive the arithmetic: 6-bit unsigned ReLUs, 8-bit signed inputs
    relu = model.conv[2].pw.relu
    assert float(relu.act_quant.scale().detach()) == pytest.approx(
        float(state[f"conv.2.pw.relu.{SCALE}"]) / 63, rel=1e-6)
    assert float(model.hardtan.act_quant.scale().detach()) == pytest.approx(
        float(state[f"hardtan.{SCALE}"]) / 128, rel=1e-6)
    fc_scale = model.fc.input_quant.scale()
    assert float(fc_scale.detach()) == pytest.approx(
        float(state["fc.input_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl."
                    "value"]) / 128, rel=1e-6)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 2, 1, 1024))).all()


def test_bacalhaunet_layout_loads_into_the_deployable_model_with_merged_scales():
    state = synthetic_state("bacalhaunet-challenge", seed=3)
    model = build_model("bacalhaunet")
    load_state(model, state, "bacalhaunet", "f.pth")
    model.eval()
    for skip_block, res_block in ((0, 1), (2, 3)):
        skip = float(state[f"conv.{skip_block}.pw.relu.{SCALE}"])
        res = float(state[f"conv.{res_block}.pw.relu.{SCALE}"])
        shared = model.conv[res_block].pw.relu
        assert shared is model.conv[skip_block].pw.relu
        scale = float(shared.act_quant.scale().detach())
        assert scale == pytest.approx(max(skip, res) / 63, rel=1e-6)
    assert torch.equal(model.conv[4].dw.conv.weight, state["conv.4.dw.conv.weight"][:, :, None])


def test_bacalhaunet_reshaped_key_is_refused(tmp_path):
    state = synthetic_state("bacalhaunet-challenge")
    state["conv.1.dw.conv.weight"] = torch.rand(24, 1, 19)
    path = save(state, tmp_path / "gold.pth")
    with pytest.raises(InputFileError) as err:
        load_checkpoint(build_model("bacalhaunet-faithful"), path, "bacalhaunet-faithful", 6, 6)
    msg = str(err.value)
    assert "gold.pth" in msg and "'conv.1.dw.conv.weight': found shape (24, 1, 19)" in msg
    assert "expected shape (24, 1, 21)" in msg
