"""Tests of the synthetic RadioML generator: layouts, determinism, physics and safe writing."""

from __future__ import annotations

import dataclasses
import math
import pickle

import h5py
import numpy as np
import pytest

from flows import synth
from flows.errors import ToolchainError
from flows.rml_formats import (
    RML2016_CLASSES,
    RML2016_FRAME_LEN,
    RML2016_SNRS_DB,
    RML2018_CLASSES,
    RML2018_DATASETS,
    RML2018_FRAME_LEN,
    RML2018_SNRS_DB,
    rml2018_row,
)


def _read(path):
    with h5py.File(path, "r") as f:
        return {name: f[name][...] for name in f}


# ---------------------------------------------------------------- layouts

def test_rml2018_layout_names_shapes_dtypes_and_row_order(tmp_path):
    fpc = 2
    data = _read(synth.write_rml2018(tmp_path / "s.hdf5", fpc, seed=3))
    n = len(RML2018_CLASSES) * len(RML2018_SNRS_DB) * fpc
    assert set(data) == set(RML2018_DATASETS)
    assert data["X"].shape == (n, RML2018_FRAME_LEN, 2) and data["X"].dtype == np.float32
    assert data["Y"].shape == (n, len(RML2018_CLASSES)) and data["Y"].dtype == np.int64
    assert data["Z"].shape == (n, 1) and data["Z"].dtype == np.int64
    assert np.all(data["Y"].sum(axis=1) == 1) and set(np.unique(data["Y"])) == {0, 1}
    # class-then-SNR ascending, frames_per_cell rows per cell, as in the real file
    assert np.array_equal(data["Y"].argmax(1), np.repeat(np.arange(24), 26 * fpc))
    assert np.array_equal(data["Z"][:, 0], np.tile(np.repeat(RML2018_SNRS_DB, fpc), 24))
    for ci, si, k in [(0, 0, 0), (3, 25, 1), (12, 7, 0), (23, 13, 1), (21, 0, 1)]:
        row = rml2018_row(ci, si, k, fpc)
        assert data["Y"][row].argmax() == ci
        assert data["Z"][row, 0] == RML2018_SNRS_DB[si]
    assert np.all(np.isfinite(data["X"]))


def test_rml2018_subset_is_written_in_real_order_with_24_columns(tmp_path):
    data = _read(synth.write_rml2018(tmp_path / "s.hdf5", 3, classes=["QPSK", "OOK"],
                                     snrs_db=[10, -20]))
    assert data["X"].shape == (2 * 2 * 3, 1024, 2)
    assert data["Y"].shape[1] == 24
    ook, qpsk = RML2018_CLASSES.index("OOK"), RML2018_CLASSES.index("QPSK")
    assert list(data["Y"].argmax(1)) == [ook] * 6 + [qpsk] * 6
    assert list(data["Z"][:, 0]) == [-20, -20, -20, 10, 10, 10] * 2
    row = rml2018_row(1, 1, 2, 3, n_snrs=2)  # QPSK, +10 dB, third frame
    assert data["Y"][row].argmax() == qpsk and data["Z"][row, 0] == 10


def test_rml2016_layout(tmp_path):
    path = synth.write_rml2016(tmp_path / "s.pkl", 3, seed=1)
    with open(path, "rb") as f:
        data = pickle.load(f, encoding="latin1")
    assert set(data) == {(c, s) for c in RML2016_CLASSES for s in RML2016_SNRS_DB}
    for key, value in data.items():
        assert isinstance(key[0], str) and isinstance(key[1], int)
        assert value.shape == (3, 2, RML2016_FRAME_LEN) and value.dtype == np.float32
    frames = data[("QAM16", 10)]
    # L1-normalised like the real 2016 generator: sum |x| = 1 per frame
    np.testing.assert_allclose(np.hypot(frames[:, 0], frames[:, 1]).sum(axis=1), 1, rtol=1e-5)


# ---------------------------------------------------------------- determinism

def test_same_seed_identical_different_seed_differs(tmp_path):
    kwargs = dict(classes=["BPSK", "FM", "GMSK", "AM-SSB-WC", "64APSK"], snrs_db=[-20, 0, 30])
    a = _read(synth.write_rml2018(tmp_path / "a.hdf5", 4, seed=7, **kwargs))
    b = _read(synth.write_rml2018(tmp_path / "b.hdf5", 4, seed=7, **kwargs))
    c = _read(synth.write_rml2018(tmp_path / "c.hdf5", 4, seed=8, **kwargs))
    for name in RML2018_DATASETS:
        assert a[name].tobytes() == b[name].tobytes()
    assert not np.any(np.all(a["X"] == c["X"], axis=(1, 2)))  # every frame differs
    assert np.array_equal(a["Y"], c["Y"]) and np.array_equal(a["Z"], c["Z"])


def test_cell_regenerated_alone_equals_the_cell_in_a_file(tmp_path):
    fpc = synth.CELL_CHUNK_FRAMES + 5  # spans two RNG chunks
    full = _read(synth.write_rml2018(tmp_path / "f.hdf5", fpc, seed=2,
                                     classes=["OOK", "QPSK", "FM"], snrs_db=[-4, 6]))
    alone = synth.cell_frames("QPSK", 6, fpc, seed=2)
    rows = slice(rml2018_row(1, 1, 0, fpc, 2), rml2018_row(1, 1, fpc, fpc, 2))
    assert np.array_equal(full["X"][rows], alone.view(np.float32).reshape(fpc, 1024, 2))
    subset = _read(synth.write_rml2018(tmp_path / "s.hdf5", fpc, seed=2, classes=["QPSK"],
                                       snrs_db=[6]))
    assert np.array_equal(subset["X"], full["X"][rows])


def test_chunks_of_a_cell_differ():
    chunk = synth.CELL_CHUNK_FRAMES
    frames = synth.cell_frames("BPSK", 30, 2 * chunk, seed=0)
    assert not np.any(np.all(frames[:chunk] == frames[chunk:], axis=1))


def test_generate_frames_is_a_function_of_the_rng():
    a = synth.generate_frames("16QAM", 5, 8, np.random.default_rng(11))
    b = synth.generate_frames("16QAM", 5, 8, np.random.default_rng(11))
    c = synth.generate_frames("16QAM", 5, 8, np.random.default_rng(12))
    assert a.dtype == np.complex64 and a.shape == (8, 1024)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# ---------------------------------------------------------------- physics

def _measured_snr_db(name, label, layout="rml2018"):
    """Project each noisy frame on its noise-free twin (same RNG): the true per-sample SNR."""
    noisy = synth.generate_frames(name, label, 48, np.random.default_rng(5),
                                  layout=layout).astype(complex)
    clean = synth.generate_frames(name, math.inf, 48, np.random.default_rng(5),
                                  layout=layout).astype(complex)
    gain = np.sum(np.conj(clean) * noisy, axis=1) / np.sum(np.abs(clean) ** 2, axis=1)
    residual = noisy - gain[:, None] * clean
    signal = np.abs(gain) ** 2 * np.mean(np.abs(clean) ** 2, axis=1)
    return 10 * np.log10(signal.mean() / np.mean(np.abs(residual) ** 2))


@pytest.mark.parametrize("name", ["BPSK", "FM", "GMSK", "AM-DSB-WC", "32QAM"])
def test_measured_snr_is_the_radioml_label_convention(name):
    """Label L -> true SNR 2 L - 3.01 dB (GNU Radio noise amplitude 10^(-L/10) per I/Q rail)."""
    for label in (-6, 0, 10, 30):
        measured = _measured_snr_db(name, label)
        assert abs(measured - (2 * label - 3.0103)) < 1.0, (name, label, measured)
        assert synth.true_snr_db(label) == pytest.approx(2 * label - 3.0103, abs=1e-3)


def test_rml2016_frames_follow_the_same_label_convention():
    for label in (0, 10):
        measured = _measured_snr_db("QPSK", label, layout="rml2016")
        assert abs(measured - (2 * label - 3.0103)) < 1.0, (label, measured)
    assert synth.true_snr_db(10, "rml2016") == synth.true_snr_db(10, "rml2018")


def test_a_true_snr_label_is_available(monkeypatch):
    phys = dataclasses.replace(synth.RML2018_PHYSICS, snr_label="true")
    monkeypatch.setitem(synth.LAYOUTS, "rml2018",
                        dataclasses.replace(synth.LAYOUTS["rml2018"], physics=phys))
    assert synth.true_snr_db(10) == 10
    assert abs(_measured_snr_db("16QAM", 10) - 10) < 1.0
    bad = dataclasses.replace(phys, snr_label="es/n0")
    with pytest.raises(ValueError, match="snr_label 'es/n0'"):
        synth._true_snr_db(10, bad)


def test_frame_level_is_the_class_level_at_high_snr_and_one_in_noise():
    """rms r (the class's level, SSB louder like the real SSB frames) at +30 dB; where noise
    dominates every class tends to rms 1, so the level does not give the class away."""
    for name in RML2018_CLASSES:
        lo, hi = synth.RML2018_MODULATIONS[name].frame_rms
        y = synth.generate_frames(name, 30, 3, np.random.default_rng(1))
        rms = np.sqrt(np.mean(np.abs(y) ** 2, axis=1))
        assert np.all((rms >= lo * (1 - 1e-3)) & (rms <= hi * (1 + 1e-3))), (name, rms)
        y = synth.generate_frames(name, -20, 64, np.random.default_rng(1))
        rms = np.sqrt(np.mean(np.abs(y) ** 2))
        assert abs(rms - 1) < 0.01, (name, rms)


def test_the_noise_is_common_to_all_classes_at_a_label():
    """Noise set by the label against a unit-power signal: a class of level r has its true SNR
    20 log10 r higher (OOK: levels {0, 2} at mean amplitude 1, rms sqrt 2, +3 dB)."""
    r = synth.RML2018_MODULATIONS["OOK"].frame_rms[0]
    assert r == pytest.approx(math.sqrt(2), rel=1e-6)
    assert abs(_measured_snr_db("OOK", 0) - (synth.true_snr_db(0) + 20 * math.log10(r))) < 1.0


def test_ssb_frames_exceed_the_input_range_like_the_real_ones():
    assert synth.RML2018_MODULATIONS["AM-SSB-WC"].frame_rms[0] >= 2.0
    for name in ("AM-SSB-WC", "AM-SSB-SC"):
        y = synth.generate_frames(name, 30, 32, np.random.default_rng(2))
        parts = np.concatenate([y.real.ravel(), y.imag.ravel()])
        assert np.mean(np.abs(parts) > 2) > 0.05, name
    y = synth.generate_frames("16QAM", 30, 32, np.random.default_rng(2))
    assert np.mean(np.abs(np.concatenate([y.real.ravel(), y.imag.ravel()])) > 2) < 0.02


def _envelope_cv(name):
    y = synth.generate_frames(name, 30, 64, np.random.default_rng(9))
    return np.median(np.abs(y).std(axis=1) / np.abs(y).mean(axis=1))


def test_fm_and_gmsk_have_a_constant_envelope_at_high_snr():
    assert _envelope_cv("FM") < 0.1
    assert _envelope_cv("GMSK") < 0.1
    assert _envelope_cv("16QAM") > 0.25  # a non-constant-envelope class for contrast


def test_ask_and_bpsk_are_real_before_the_channel():
    for name in ("OOK", "4ASK", "8ASK", "BPSK"):
        x = synth.baseband(name, 4, np.random.default_rng(0))
        assert np.abs(x.imag).max() < 1e-5 * np.abs(x.real).max(), name
    x = synth.baseband("PAM4", 4, np.random.default_rng(0), length=128, layout="rml2016")
    assert np.abs(x.imag).max() < 1e-5 * np.abs(x.real).max()
    qpsk = synth.baseband("QPSK", 4, np.random.default_rng(0))
    assert np.abs(qpsk.imag).max() > 0.3 * np.abs(qpsk.real).max()
    assert np.all(synth.RML2018_MODULATIONS["OOK"].points.real >= 0)  # OOK is unipolar


@pytest.mark.parametrize("m, side, corner", [(32, 6, 1), (128, 12, 2)])
def test_cross_qam(m, side, corner):
    points = synth.qam_points(m)
    assert len(points) == m == len(np.unique(np.round(points, 9)))
    assert np.mean(np.abs(points) ** 2) == pytest.approx(1.0)
    step = np.min(np.abs(np.diff(np.unique(np.round(points.real, 9)))))
    levels = np.round(points / step * 2)  # odd integers on the grid
    assert len(np.unique(levels.real)) == side and len(np.unique(levels.imag)) == side
    top = side - 1
    edge = {top - 2 * k for k in range(corner)}
    assert not any(abs(p.real) in edge and abs(p.imag) in edge for p in levels)
    assert np.array_equal(synth.RML2018_MODULATIONS[f"{m}QAM"].points, points)


def test_square_qam_and_apsk_rings():
    assert len(np.unique(np.round(synth.qam_points(64).real, 9))) == 8
    radii = np.unique(np.round(np.abs(synth.RML2018_MODULATIONS["16APSK"].points), 9))
    assert len(radii) == 2 and radii[1] / radii[0] == pytest.approx(2.75)


def test_every_class_generates_in_both_layouts():
    for name in RML2018_CLASSES:
        assert np.all(np.isfinite(synth.generate_frames(name, 0, 2, np.random.default_rng(0))))
    for name in RML2016_CLASSES:
        y = synth.generate_frames(name, 0, 2, np.random.default_rng(0), 128, layout="rml2016")
        assert y.shape == (2, 128) and np.all(np.isfinite(y))


# ---------------------------------------------------------------- safe writing

@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("writer", [synth.write_rml2018, synth.write_rml2016])
def test_failure_mid_write_leaves_nothing(tmp_path, monkeypatch, error, writer):
    real = synth._generate_cell
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise error("simulated failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(synth, "_generate_cell", failing)
    out = tmp_path / "out.data"
    with pytest.raises(error):
        writer(out, 2)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "s.hdf5"
    out.write_bytes(b"precious")
    with pytest.raises(ToolchainError, match="already exists.*--force"):
        synth.write_rml2018(out, 1, classes=["BPSK"])
    assert out.read_bytes() == b"precious"
    synth.write_rml2018(out, 1, classes=["BPSK"], force=True)
    assert _read(out)["X"].shape == (26, 1024, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.hdf5"]


def test_bad_arguments_raise_toolchain_errors(tmp_path):
    with pytest.raises(ToolchainError, match="unknown class 'qpsk'.*QPSK"):
        synth.write_rml2018(tmp_path / "a.hdf5", 1, classes=["qpsk"])
    with pytest.raises(ToolchainError, match="SNR 5 dB is not on the rml2018 grid"):
        synth.write_rml2018(tmp_path / "a.hdf5", 1, snrs_db=[5])
    with pytest.raises(ToolchainError, match="frames-per-cell 0"):
        synth.write_rml2016(tmp_path / "a.pkl", 0)
    with pytest.raises(ToolchainError, match="does not exist"):
        synth.write_rml2018(tmp_path / "missing" / "a.hdf5", 1)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- command line

def test_cli_writes_and_reports(tmp_path, capsys):
    out = tmp_path / "s.hdf5"
    code = synth.main(["--out", str(out), "--frames-per-cell", "2", "--classes", "GMSK",
                       "FM", "--snr-min", "0", "--snr-max", "4", "--seed", "1"])
    assert code == 0
    assert str(out) in capsys.readouterr().out
    data = _read(out)
    assert data["X"].shape == (2 * 3 * 2, 1024, 2)
    assert list(data["Z"][:6, 0]) == [0, 0, 2, 2, 4, 4]
    out16 = tmp_path / "s.pkl"
    assert synth.main(["--out", str(out16), "--frames-per-cell", "1", "--format", "rml2016",
                       "--classes", "WBFM"]) == 0
    with open(out16, "rb") as f:
        assert len(pickle.load(f, encoding="latin1")) == len(RML2016_SNRS_DB)


@pytest.mark.parametrize("argv, message", [
    (["--frames-per-cell", "0"], "error: frames-per-cell 0"),
    (["--frames-per-cell", "1", "--classes", "QAM16"], "error: unknown class 'QAM16'"),
    (["--frames-per-cell", "1", "--snr-min", "31"], "error: --snr-min 31"),
    (["--frames-per-cell", "x"], "invalid int value"),
    (["--frames-per-cell", "1", "--format", "rml2017"], "invalid choice"),
])
def test_cli_user_errors_exit_2_without_traceback(tmp_path, capsys, argv, message):
    out = tmp_path / "s.hdf5"
    assert synth.main(["--out", str(out)] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_cli_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "s.hdf5"
    out.write_bytes(b"x")
    assert synth.main(["--out", str(out), "--frames-per-cell", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"x"


def test_link_pulse_is_the_rc_fitted_to_the_real_frame():
    """rml2018: amplitude response 1/2 at 0.915 x 1/16 cycles/sample, zero beyond
    (1 + 0.417) x that; rml2016 keeps a Nyquist RRC (response 1/sqrt(2) at 1/16)."""
    for layout, half_freq, at_half in (("rml2018", 0.915 / 16, 0.5),
                                       ("rml2016", 1 / 16, math.sqrt(0.5))):
        phys = synth.LAYOUTS[layout].physics
        lg = 4096
        tab = synth._tables(lg, phys)
        freq = np.abs(np.fft.fftfreq(lg)[tab.band])
        response = tab.pulses[len(tab.pulses) // 2] / phys.sps
        k = np.argmin(np.abs(freq - half_freq))
        assert abs(freq[k] - half_freq) < 2 / lg
        assert response[k] == pytest.approx(at_half, abs=0.03), layout
        assert freq.max() < (1 + phys.rolloff_range[1]) * half_freq + 1e-9
    assert synth.RML2018_PHYSICS.echo_delays_samples == ()  # constant envelope of real FM/GMSK


def test_real_frame_pulse_fit_when_the_reference_is_present():
    """The fitted parameters reproduce the pulse measured on the real frame (rms < 0.03)."""
    from pathlib import Path

    ref = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / \
        "radioml-frame" / "pulse_real.npy"
    if not ref.exists():
        pytest.skip(f"reference file absent: {ref}")
    taps = np.load(ref)
    measured = np.abs(np.fft.fft(taps, 4096))
    measured /= measured[0]
    phys = synth.RML2018_PHYSICS
    tab = synth._tables(4096, phys)
    model = np.zeros(4096)
    model[tab.band] = tab.pulses[0] / phys.sps
    freq = np.abs(np.fft.fftfreq(4096))
    keep = freq <= 0.12
    assert np.sqrt(np.mean((model[keep] - measured[keep]) ** 2)) < 0.03


def _baseband_response(name, n=64, length=4096):
    """Mean |DFT| of a class's baseband, averaged over frames, against |frequency|."""
    x = synth.baseband(name, n, np.random.default_rng(1), length=length)
    x = x - x.mean(axis=1, keepdims=True)  # drop the unipolar DC line
    mag = np.sqrt(np.mean(np.abs(np.fft.fft(x, axis=1)) ** 2, axis=0))
    return np.abs(np.fft.fftfreq(length)), mag


def test_amplitude_keyed_classes_use_a_transmit_rrc():
    """OOK/4ASK/8ASK: Nyquist RRC roll-off 0.35 (response 1/sqrt(2) at 1/16 cycles/sample, zero
    beyond 1.35/16); the other linear classes keep the fitted link pulse (1/2 at 0.915/16)."""
    for name in ("OOK", "4ASK", "8ASK"):
        assert synth.RML2018_MODULATIONS[name].pulse == ("rrc", 0.35, 1.0)
        freq, mag = _baseband_response(name)
        ref = mag[(freq > 0.002) & (freq < 0.02)].mean()
        at = mag[np.abs(freq - 1 / 16) < 2e-3].mean() / ref
        assert at == pytest.approx(math.sqrt(0.5), abs=0.1), name
        assert mag[freq > 1.35 / 16 + 1e-3].max() < 1e-3 * ref
    freq, mag = _baseband_response("16QAM")
    ref = mag[(freq > 0.002) & (freq < 0.02)].mean()
    assert mag[np.abs(freq - 0.915 / 16) < 2e-3].mean() / ref == pytest.approx(0.5, abs=0.1)
    assert synth.RML2018_MODULATIONS["16QAM"].pulse is None


def _without_speech_levels(monkeypatch):
    """Every frame at the recording's peak (the speech level model off)."""
    lay = synth.LAYOUTS["rml2018"]
    phys = dataclasses.replace(lay.physics, speech_activity=1.0,
                               speech_level_db_range=(0.0, 0.0))
    monkeypatch.setitem(synth.LAYOUTS, "rml2018", dataclasses.replace(lay, physics=phys))


def test_ssb_carrier_levels(monkeypatch):
    """Real 2018 SSB-SC frames look carrier-dominated: the leaked SC carrier exceeds the
    sideband's envelope peak, so the envelope never reaches zero (noise-free baseband). SSB-WC is
    full-carrier SSB (ITU-R H3E): carrier amplitude = the sideband's peak over the recording, so
    a frame's sideband peaks at most at the carrier, and at it when the frame is at the peak."""
    lo, hi = synth.RML2018_PHYSICS.ssb_residual_carrier_range
    assert 1 < lo < hi
    x = synth.baseband("AM-SSB-SC", 16, np.random.default_rng(4))
    env = np.abs(x)
    assert np.all(env.min(axis=1) > 0.05 * env.max(axis=1))
    assert synth.RML2018_PHYSICS.ssb_sideband_range == (1.0, 1.0)

    def sideband_peak_over_carrier():
        x = synth.baseband("AM-SSB-WC", 16, np.random.default_rng(4), length=4096)
        carrier = np.abs(x.mean(axis=1))  # the message has no DC
        return np.abs(x - x.mean(axis=1, keepdims=True)).max(axis=1) / carrier

    assert np.all(sideband_peak_over_carrier() < 1.02)
    _without_speech_levels(monkeypatch)
    np.testing.assert_allclose(sideband_peak_over_carrier(), 1.0, rtol=0.02)
    assert synth.RML2016_PHYSICS.ssb_residual_carrier_range == (0.0, 0.0)  # 2016: a true SC


def test_oqpsk_uses_axis_points_and_alternating_rails():
    """OQPSK from GNU Radio's generic 4-PSK points {1, j, -1, -j}: at the I symbol centres the
    quadrature rail (delayed half a symbol) is between its symbols, and each symbol puts its
    energy on one rail only."""
    points = synth.RML2018_MODULATIONS["OQPSK"].points
    np.testing.assert_allclose(np.sort_complex(np.round(points, 12)),
                               np.sort_complex(np.array([-1, -1j, 1j, 1])), atol=1e-12)
    phys = synth.RML2018_PHYSICS
    x = synth.baseband("OQPSK", 8, np.random.default_rng(5), length=1024)
    centres = x[:, 64:-64:phys.sps]  # away from the circular wrap
    i_on = np.abs(centres.real) > 0.5 * np.abs(centres.real).max()
    # the I rail is zero at the centres of the symbols that carry +-j
    assert 0.3 < i_on.mean() < 0.7
    assert synth.RML2018_MODULATIONS["QPSK"].points[0] == pytest.approx(np.exp(1j * np.pi / 4))


def test_linear_frame_level_follows_unit_mean_amplitude():
    """Linear classes: frame rms sqrt(E|s|^2) / E|s| (constellation at mean |s| = 1), except the
    table-defined constellations (cross QAMs, APSKs) at unit power."""
    expected = {"OOK": math.sqrt(2), "4ASK": math.sqrt(3.5) / 1.5, "8ASK": math.sqrt(17.5) / 3.5,
                "BPSK": 1.0, "QPSK": 1.0, "32PSK": 1.0}
    for name, rms in expected.items():
        assert synth.RML2018_MODULATIONS[name].frame_rms == pytest.approx((rms, rms)), name
    for name in ("16QAM", "64QAM", "256QAM"):
        lo, hi = synth.RML2018_MODULATIONS[name].frame_rms
        assert lo == hi and 1.04 < lo < 1.09, name
    y = synth.generate_frames("4ASK", 30, 8, np.random.default_rng(3))
    np.testing.assert_allclose(np.sqrt(np.mean(np.abs(y) ** 2, axis=1)), math.sqrt(3.5) / 1.5,
                               rtol=1e-3)  # +30 dB: the noise is 57 dB down
    assert synth.RML2018_MODULATIONS["OQPSK"].frame_rms == (1.0, 1.0)
    assert synth.RML2018_MODULATIONS["GMSK"].frame_rms == (1.0, 1.0)
    # the table-defined constellations (cross QAMs, APSKs) stay at unit power
    for name in ("32QAM", "128QAM", "16APSK", "32APSK", "64APSK", "128APSK"):
        assert synth.RML2018_MODULATIONS[name].frame_rms == (1.0, 1.0)
        y = synth.generate_frames(name, 30, 8, np.random.default_rng(3))
        np.testing.assert_allclose(np.mean(np.abs(y) ** 2, axis=1), 1.0, rtol=1e-3)


def test_clock_offset_is_small_like_the_real_frame():
    """The real 16QAM frame's symbol clock is within ~0.05 % of 8 samples/symbol."""
    assert synth.RML2018_PHYSICS.sample_rate_offset_max == pytest.approx(2.5e-4)
    assert synth.RML2016_PHYSICS.sample_rate_offset_max == pytest.approx(2.5e-4)


def test_am_dsb_sits_on_a_real_if_carrier():
    """rml2018 DSB: a real signal with twin spectral peaks at +-f_IF (none at DC for SC);
    rml2016 keeps baseband AM (f_IF 0)."""
    f_if = synth.RML2018_PHYSICS.am_if_cycles_per_sample
    assert f_if == pytest.approx(0.026)
    assert synth.RML2016_PHYSICS.am_if_cycles_per_sample == 0.0
    for name in ("AM-DSB-SC", "AM-DSB-WC"):
        x = synth.baseband(name, 32, np.random.default_rng(6), length=4096)
        assert np.abs(x.imag).max() < 1e-5 * np.abs(x.real).max(), name
        psd = np.mean(np.abs(np.fft.fft(x, axis=1)) ** 2, axis=0)
        freq = np.fft.fftfreq(4096)
        near_if = psd[np.abs(np.abs(freq) - f_if) < 0.004].mean()
        assert near_if > 10 * psd[np.abs(freq) < 0.001].mean() or name == "AM-DSB-WC"
        assert psd[np.abs(freq) > 0.07].sum() < 1e-3 * psd.sum(), name
        # the WC carrier is a pair of lines at +-f_IF
    x = synth.baseband("AM-DSB-WC", 8, np.random.default_rng(6), length=4096)
    spectrum = np.abs(np.fft.fft(x, axis=1)).mean(axis=0)
    peak = np.abs(np.fft.fftfreq(4096)[np.argmax(spectrum)])
    assert peak == pytest.approx(f_if, abs=1.5 / 4096)


def _rings(points):
    """{radius relative to the inner ring: sorted angles in [0, 2 pi)} of an APSK constellation."""
    radius = np.round(np.abs(points) / np.abs(points).min(), 6)
    return {r: np.sort(np.mod(np.angle(points[radius == r]), 2 * np.pi)) for r in np.unique(radius)}


@pytest.mark.parametrize("name, sizes, ratios, first_angles", [
    # DVB-S2 (EN 302 307-1, 16APSK 4/5 and 32APSK 3/4): rings 4+12 at pi/4 and pi/12,
    # 32APSK's outer 16-ring on the I axis
    ("16APSK", (4, 12), (1.0, 2.75), (np.pi / 4, np.pi / 12)),
    ("32APSK", (4, 12, 16), (1.0, 2.84, 5.27), (np.pi / 4, np.pi / 12, 0.0)),
    # liquid-dsp's APSK64: rings 4+14+20+26, every first point on the I axis
    ("64APSK", (4, 14, 20, 26), (1.0, 0.52466476 / 0.18916586, 0.88613129 / 0.18916586,
                                 1.30529201 / 0.18916586), (0.0, 0.0, 0.0, 0.0)),
])
def test_apsk_rings_follow_the_published_tables(name, sizes, ratios, first_angles):
    rings = _rings(synth.RML2018_MODULATIONS[name].points)
    assert tuple(rings) == pytest.approx(ratios, rel=1e-4)
    for (radius, angles), n, first in zip(rings.items(), sizes, first_angles):
        assert len(angles) == n, (name, radius)
        np.testing.assert_allclose(angles, first + 2 * np.pi * np.arange(n) / n, atol=1e-9)


def test_ssb_sideband_is_one_sided():
    """Upper sideband: apart from the carrier at DC, no power at negative frequencies."""
    for name in ("AM-SSB-WC", "AM-SSB-SC"):
        x = synth.baseband(name, 16, np.random.default_rng(8), length=4096)
        psd = np.mean(np.abs(np.fft.fft(x - x.mean(axis=1, keepdims=True), axis=1)) ** 2, axis=0)
        freq = np.fft.fftfreq(4096)
        assert psd[freq < 0].sum() < 1e-4 * psd[freq > 0].sum(), name


def test_dsb_sc_has_a_leaked_carrier_line():
    """rml2018 DSB-SC: the leaked carrier (above the message peak) is a line at +-f_IF, like
    the real DSB spectra; the envelope c + m never reaches zero."""
    lo, hi = synth.RML2018_PHYSICS.dsb_residual_carrier_range
    assert 1 < lo < hi
    f_if = synth.RML2018_PHYSICS.am_if_cycles_per_sample
    x = synth.baseband("AM-DSB-SC", 8, np.random.default_rng(7), length=4096)
    spectrum = np.abs(np.fft.fft(x, axis=1))
    freq = np.abs(np.fft.fftfreq(4096))
    peaks = freq[np.argmax(spectrum, axis=1)]
    np.testing.assert_allclose(peaks, f_if, atol=1.5 / 4096)
    line = spectrum[:, np.abs(freq - f_if) < 1.5 / 4096].max(axis=1)
    assert np.all(line > 10 * np.median(spectrum, axis=1))
    assert synth.RML2016_PHYSICS.dsb_residual_carrier_range == (0.0, 0.0)


def test_128apsk_is_the_dvbs2x_constellation():
    """DVB-S2X 128APSK (rate 135/180): rings 16 x 5 + 48 at the standard's radius ratios, 128
    distinct points symmetric about both axes, and no two points nearly on top of each other
    (the evenly spaced approximation put rings 4 and 5 at the same angles, 0.07 apart)."""
    points = synth.RML2018_MODULATIONS["128APSK"].points
    assert np.mean(np.abs(points) ** 2) == pytest.approx(1.0)
    ratio = np.abs(points) / np.abs(points).min()
    radii, counts = np.unique(np.round(ratio, 6), return_counts=True)
    np.testing.assert_allclose(radii, (1.0, 1.715, 2.118, 2.681, 2.75, 3.819), rtol=1e-6)
    assert tuple(counts) == (16, 16, 16, 16, 16, 48)
    def key(z):
        return np.sort_complex(np.round(z, 9))

    np.testing.assert_array_equal(key(points), key(points.conj()))
    np.testing.assert_array_equal(key(points), key(-points))
    gaps = np.abs(points[:, None] - points[None, :]) / np.abs(points).min()
    gaps[np.eye(len(points), dtype=bool)] = np.inf
    assert gaps.min() > 0.3


def test_speech_level_per_frame_has_pauses_and_a_level_spread():
    """A frame is a 10 ms window of a recording: 40 % in pauses at -40 dB, the rest at
    U(-20, 0) dB of the recording's peak; the same for both layouts."""
    phys = synth.RML2018_PHYSICS
    assert (phys.speech_activity, phys.speech_level_db_range, phys.speech_pause_db) == \
        (0.6, (-20.0, 0.0), -40.0)
    assert synth.RML2016_PHYSICS.speech_activity == phys.speech_activity
    level_db = 20 * np.log10(synth._speech_level(20000, np.random.default_rng(3), phys))
    pauses = np.isclose(level_db, -40.0, atol=1e-3)
    assert abs(pauses.mean() - 0.4) < 0.02
    active = level_db[~pauses]
    assert active.min() >= -20.0 - 1e-3 and active.max() <= 1e-3
    assert abs(np.median(active) + 10) < 0.5


def test_am_frames_in_pauses_are_a_nearly_bare_carrier(monkeypatch):
    """AM-DSB-WC, noise-free: about 40 % of frames carry the message at -40 dB, so all but
    1e-4 of their power is the carrier line cos(2 pi f_IF n + phase); with the level model off
    every frame is modulated to its index (>= 0.3)."""
    def off_carrier_share():
        x = synth.baseband("AM-DSB-WC", 400, np.random.default_rng(6), length=1024).real
        n = np.arange(1024)
        f_if = synth.RML2018_PHYSICS.am_if_cycles_per_sample
        carrier = np.stack([np.cos(2 * np.pi * f_if * n), np.sin(2 * np.pi * f_if * n)], 1)
        fit, *_ = np.linalg.lstsq(carrier, x.T, rcond=None)
        return np.mean((x.T - carrier @ fit) ** 2, axis=0) / np.mean(x ** 2, axis=1)

    assert 0.3 < np.mean(off_carrier_share() < 1e-4) < 0.5
    _without_speech_levels(monkeypatch)
    assert np.mean(off_carrier_share() < 1e-4) == 0
