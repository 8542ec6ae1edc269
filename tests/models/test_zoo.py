"""The model zoo: registry, shapes, published sizes, bit widths in the QONNX export, and the
shared quantizer at BacalhauNet's residual adds.

Published figures come from ../shared/notes/models.md; each tolerance says what the published
description leaves open. Tests that read ../shared/reference/ skip with the path when it is absent.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from brevitas.export import export_qonnx
from brevitas.graph.calibrate import calibration_mode
from onnx import numpy_helper

from flows.errors import ToolchainError
from flows.rml_formats import RML2018_CLASSES
from models.imperial import STAT_FEATURES, statistics_features
from models.layers import from_conv1d_state_dict
from models.registry import get_model_spec, model_names
from models.stats import count_macs, count_params, count_weights
from models.zoo import build_model

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference"

# name: (dataset, input_shape, n_classes, default_bits)
SPECS = {
    "vgg10": ("rml2018", (2, 1, 1024), 24, 8),
    "vgg10-w4a4-32": ("rml2018", (2, 1, 1024), 24, 4),
    "bacalhaunet": ("rml2018", (2, 1, 1024), 24, 6),
    "bacalhaunet-faithful": ("rml2018", (2, 1, 1024), 24, 6),
    "imperial": ("rml2018", (2, 1, 1024), 24, 5),
    "ulcnn": ("rml2016", (2, 1, 128), 11, 8),
    "oshea": ("rml2016", (1, 2, 128), 11, 8),
    "hakimi7": ("rml2016", (1, 2, 128), 11, 8),
}
# Typical amplitudes: RML2018 frames have unit power, RML2016 frames are L1-normalised.
AMPLITUDE = {"rml2018": 1.0, "rml2016": 0.01}


def frames(name: str, n: int) -> torch.Tensor:
    spec = get_model_spec(name)
    torch.manual_seed(0)
    return AMPLITUDE[spec.dataset] * torch.randn(n, *spec.input_shape)


def export(model: torch.nn.Module, name: str, path: Path) -> onnx.GraphProto:
    model.eval()
    export_qonnx(model, input_t=frames(name, 1), export_path=str(path), dynamo=False)
    return onnx.load(str(path)).graph


def quant_bit_widths(graph: onnx.GraphProto) -> tuple[set[float], set[float]]:
    """Bit widths of the `Quant` nodes: (on parameters, i.e. initializers; on activations)."""
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    params, acts = set(), set()
    for node in graph.node:
        if node.op_type == "Quant":
            (params if node.input[0] in inits else acts).add(float(inits[node.input[3]]))
    return params, acts


# ---------------------------------------------------------------------------------- registry

def test_registry_lists_every_model_with_its_spec():
    assert model_names() == sorted(SPECS)
    for name, (dataset, shape, n_classes, bits) in SPECS.items():
        spec = get_model_spec(name)
        assert (spec.dataset, spec.input_shape, spec.n_classes, spec.default_bits) == \
            (dataset, shape, n_classes, bits)
        assert spec.description and "\n" not in spec.description
        # the builder's own defaults are the registry's default bits
        params = inspect.signature(spec.builder).parameters
        assert params["weight_bits"].default == params["act_bits"].default == bits


def test_imperial_description_says_statistics_run_on_host():
    assert "host" in get_model_spec("imperial").description


def test_unknown_model_raises_with_choices():
    with pytest.raises(ToolchainError) as err:
        get_model_spec("vgg11")
    for name in SPECS:
        assert name in str(err.value)
    with pytest.raises(ToolchainError, match="bacalhaunet"):
        build_model("resnet")


def test_invalid_bits_raise():
    with pytest.raises(ToolchainError, match="2..16"):
        build_model("vgg10", bits=1)


# ------------------------------------------------------------------------------ forward pass

@pytest.mark.parametrize("name", sorted(SPECS))
def test_forward_shape_and_finite(name):
    model = build_model(name)
    x = frames(name, 3)
    n_classes = get_model_spec(name).n_classes
    for training in (True, False):
        model.train(training)
        y = model(x)
        assert y.shape == (3, n_classes)
        assert torch.isfinite(y).all()


# ---------------------------------------------------------------------- sizes vs. published

def vgg10_expected(filters: int, dense: int = 128, n_classes: int = 24) -> tuple[int, int]:
    """(MACs, weights) of VGG10 by hand: 7 convs k3 on 1024, 512, ..., 16 samples, then dense."""
    macs = weights = 0
    cin, length = 2, 1024
    for _ in range(7):
        weights += filters * cin * 3
        macs += filters * cin * 3 * length
        cin, length = filters, length // 2
    for fin, fout in ((filters * 8, dense), (dense, dense), (dense, n_classes)):
        weights += fin * fout
        macs += fin * fout
    return macs, weights


@pytest.mark.parametrize("name,filters", [("vgg10", 64), ("vgg10-w4a4-32", 32)])
def test_vgg10_size_by_hand(name, filters):
    model = build_model(name)
    macs, weights = vgg10_expected(filters)
    assert count_macs(model, (2, 1, 1024)).total == macs  # 12,864,512 for 64 filters
    assert count_weights(model) == weights  # 159,104 for 64 filters
    # the FINN example's FC: flatten 256 -> 128 -> 128 -> 24
    if filters == 32:
        assert [m.in_features for m in model if isinstance(m, torch.nn.Linear)] == [256, 128, 128]


@pytest.mark.parametrize("name", ["bacalhaunet", "bacalhaunet-faithful"])
def test_bacalhaunet_size_matches_published(name):
    model = build_model(name)
    report = count_macs(model, (2, 1, 1024))
    # published: about 2.04 M MACs and 9.3 k weights (before pruning); exact by hand:
    # block 1 DW 2x27x512 + PW 24x2x512, ..., head 48x24
    assert report.total == 2_044_032
    assert math.isclose(report.total, 2.04e6, rel_tol=0.005)
    assert count_weights(model) == 9_318
    assert math.isclose(count_weights(model), 9.3e3, rel_tol=0.01)
    assert report.by_name()["conv.0.dw.conv"] == 2 * 27 * 512  # groups = 2: 2 -> 2 channels


def test_ulcnn_size_matches_published():
    model = build_model("ulcnn")
    # Published 9,751 counts like Keras (BN moving statistics included). Here the complex BN
    # (16 complex channels: 80 trainable + 80 moving) is a real BN over 32 channels (64 + 64):
    # exactly 32 fewer. Everything else (tied complex conv, separable convs, attention, head)
    # matches parameter for parameter.
    assert count_params(model, include_bn_stats=True) == 9_751 - 32
    assert count_params(model) == 9_271  # trainable; Keras: 9,287
    # "about 0.2 M MACs": 192,032 by hand (complex conv 40,960, units 150,720, head 352)
    assert count_macs(model, (2, 1, 128)).total == 192_032
    assert math.isclose(192_032, 0.2e6, rel_tol=0.05)


def test_oshea_size_matches_published():
    model = build_model("oshea")
    assert count_params(model) == 2_830_427  # published 2.83 M (zero padding (0, 2) twice)
    assert math.isclose(count_params(model), 2.83e6, rel_tol=0.001)


def test_hakimi7_size_matches_published():
    model = build_model("hakimi7")
    macs = count_macs(model, (1, 2, 128)).total
    # Published 2.49 M MACs for the compressed net (8.13 M before compression). The description
    # fixes filters and kernels but not padding or pooling; the chosen valid padding with pools
    # after convs 2, 4, 6 gives 2.447 M (-1.7 %); 'same' padding would give +10.6 %. Allow 5 %.
    assert macs == 2_447_360
    assert math.isclose(macs, 2.49e6, rel_tol=0.05)
    # parameter memory 0.052 MB: int8 weights + int32 biases
    n_weights = count_weights(model)
    n_biases = count_params(model) - n_weights
    assert (n_weights, n_biases) == (49_856, 419)
    assert math.isclose((n_weights + 4 * n_biases) / 1e6, 0.052, rel_tol=0.02)


def test_imperial_macs_by_hand_and_aux_heads_not_counted():
    model = build_model("imperial")
    report = count_macs(model, (2, 1, 1024))
    convs = 64 * 2 * 3 * 256 + sum(64 * 64 * 3 * n for n in (128, 64, 32, 16, 8, 4))
    assert report.total == convs + 256 * 128 + 32 * 64 + 192 * 24
    assert not any(name.startswith("aux_heads") for name in report.by_name())


# -------------------------------------------------------------------------------- QONNX export

@pytest.mark.parametrize("name", sorted(SPECS))
def test_bit_widths_reach_qonnx(name, tmp_path):
    """weight_bits=3, act_bits=5 (distinct from the 8-bit inputs and 32-bit biases) must be
    what the exported Quant nodes carry."""
    graph = export(build_model(name, weight_bits=3, act_bits=5), name, tmp_path / "m.onnx")
    params, acts = quant_bit_widths(graph)
    expected_params = {
        "imperial": {3.0, 2.0},  # last conv one bit narrower
        "oshea": {3.0},  # float biases
        "ulcnn": {3.0},
    }.get(name, {3.0, 32.0})  # int32 biases
    assert params == expected_params
    assert acts == {5.0, 8.0}  # act_bits, and the 8-bit input (and head input) quantizers


@pytest.mark.parametrize("name", ["vgg10", "bacalhaunet"])
def test_bits_override_changes_export(name, tmp_path):
    default = get_model_spec(name).default_bits
    params, acts = quant_bit_widths(export(build_model(name), name, tmp_path / "d.onnx"))
    assert params - {32.0} == {float(default)} and float(default) in acts
    params, acts = quant_bit_widths(export(build_model(name, bits=4), name, tmp_path / "4.onnx"))
    assert params - {32.0} == {4.0} and acts == {4.0, 8.0}


def calibrated(name: str) -> torch.nn.Module:
    model = build_model(name).eval()
    with torch.no_grad(), calibration_mode(model):
        model(frames(name, 4))
    return model


def test_deployable_bacalhaunet_residual_adds_share_one_quantizer(tmp_path):
    model = calibrated("bacalhaunet")
    pairs = model.residual_add_quantizers()
    assert len(pairs) == 2 and all(a is b for a, b in pairs)
    graph = export(model, "bacalhaunet", tmp_path / "b.onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    adds = [node for node in graph.node if node.op_type == "Add"]
    assert len(adds) == 2
    for add in adds:
        sources = [producer[i] for i in add.input]
        assert [s.op_type for s in sources] == ["Quant", "Quant"]
        for k in (1, 2, 3):  # scale, zero point, bit width
            a, b = (inits[s.input[k]] for s in sources)
            np.testing.assert_array_equal(a, b)


def test_faithful_bacalhaunet_residual_adds_mix_two_scales(tmp_path):
    """The published form: separate quantizers, so after calibration the add inputs' scales
    differ (what FINN cannot map)."""
    model = calibrated("bacalhaunet-faithful")
    pairs = model.residual_add_quantizers()
    assert len(pairs) == 2 and not any(a is b for a, b in pairs)
    for a, b in pairs:
        assert not torch.isclose(a.act_quant.scale(), b.act_quant.scale())


# ------------------------------------------------------------------ published checkpoints

def test_vgg10_loads_challenge_checkpoint_and_reads_real_frame():
    ckpt = REFERENCE / "vgg10-challenge" / "pretrained_VGG10_w8a8_20.pth"
    frame = REFERENCE / "radioml-frame" / "real16qam.npy"
    if not (ckpt.exists() and frame.exists()):
        pytest.skip(f"reference files absent: {ckpt}, {frame}")
    model = build_model("vgg10")
    state = from_conv1d_state_dict(torch.load(ckpt, map_location="cpu"))
    model.load_state_dict(state, strict=True)
    z = np.load(frame)
    x = torch.tensor(np.stack([z.real, z.imag]), dtype=torch.float32)[None, :, None, :]
    with torch.no_grad():
        assert RML2018_CLASSES[int(model.eval()(x).argmax())] == "16QAM"


def test_bacalhaunet_key_layout_matches_published_checkpoint():
    keys_file = REFERENCE / "bacalhaunet-challenge" / "state_dict_keys.txt"
    if not keys_file.exists():
        pytest.skip(f"reference file absent: {keys_file}")
    shapes = {}
    for line in keys_file.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split(None, 1)
            shapes[key] = tuple(int(s) for s in shape.strip("() ").split(",") if s.strip())
    torch.manual_seed(0)
    published = {key: torch.rand(shape) + 0.5 for key, shape in shapes.items()}
    model = build_model("bacalhaunet-faithful")
    model.load_state_dict(from_conv1d_state_dict(published), strict=True)
    own = model.state_dict()
    assert set(own) == set(shapes)
    assert torch.equal(own["conv.0.dw.conv.weight"], published["conv.0.dw.conv.weight"][:, :, None])


# ------------------------------------------------------------------------ model specifics

def test_imperial_aux_outputs_and_statistics():
    model = build_model("imperial").eval()
    x = frames("imperial", 3)
    main, aux_conv, aux_stats = model.forward_with_aux(x)
    assert main.shape == aux_conv.shape == aux_stats.shape == (3, 24)
    torch.testing.assert_close(model(x), main)
    # known fourth- and sixth-order cumulants of unit-power constellations; with n random
    # symbols the sample M20 is ~1/sqrt(n), not 0, hence the tolerances
    n = 2048
    bpsk = (torch.randint(0, 2, (n,)) * 2 - 1).float()
    qpsk = torch.exp(1j * (math.pi / 4 + math.pi / 2 * torch.randint(0, 4, (n,))))
    for symbols, c40, c42, c63 in ((bpsk + 0j, 2.0, -2.0, 16.0), (qpsk, 1.0, -1.0, 4.0)):
        x = torch.stack([symbols.real, symbols.imag]).float()[None, :, None, :]
        f = dict(zip(STAT_FEATURES, statistics_features(x)[0].tolist()))
        assert len(f) == 32
        assert f["abs_C40"] == pytest.approx(c40, abs=0.02)
        assert f["C42"] == pytest.approx(c42, abs=0.02)
        assert f["abs_C63"] == pytest.approx(c63, rel=0.02)
        assert f["phase_coherence_4"] == pytest.approx(1.0, abs=1e-3)


def test_ulcnn_complex_conv_has_tied_weights():
    conv = build_model("ulcnn").complex_conv
    w = conv.weight.detach()  # (32, 2, 1, 5) built from 16 real + 16 imaginary kernels
    assert w.shape == (32, 2, 1, 5)
    torch.testing.assert_close(w[:16, 0], w[16:, 1])  # Wr
    torch.testing.assert_close(w[:16, 1], -w[16:, 0])  # -Wi
    assert sum(p.numel() for p in conv.parameters()) == 16 * 5 * 2 + 32
