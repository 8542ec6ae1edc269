"""The board driver: FINN packing, the deploy package through the emulate backend, its JSON/PNG
outputs and every bad-input case.

One build of BacalhauNet for PYNQ-Z2 up to the deploy step (module fixture) gives the package;
the tests copy it into tmp_path before breaking it.
"""

import json
import shutil

import numpy as np
import pytest

from flows.errors import ToolchainError
from hw.driver import Accelerator, DeployPackage, pack, unpack
from hw.driver.__main__ import main as driver_main
from hw.driver.packing import StreamType

# every datatype at the I/O of the zoo's accelerators (inputs INT8 / FLOAT32; outputs the class
# index UINT<k> of LabelSelect), and the narrow ones their streams could carry
DATATYPES = (["INT8", "UINT8", "BIPOLAR", "BINARY", "TERNARY", "FLOAT32", "INT16", "UINT16",
              "INT32"] + [f"INT{b}" for b in range(2, 8)] + [f"UINT{b}" for b in range(2, 8)])


def _values(name, shape, rng):
    t = StreamType.parse(name)
    if t.kind == "float":
        return rng.standard_normal(shape).astype(np.float32)
    if t.kind == "bipolar":
        return rng.choice([-1.0, 1.0], size=shape).astype(np.float32)
    return rng.integers(t.min, t.max + 1, size=shape).astype(np.float32)


@pytest.mark.parametrize("name", DATATYPES)
@pytest.mark.parametrize("fold", [1, 2, 3, 6, 24])
def test_packing_matches_finn_and_round_trips(name, fold):
    from qonnx.core.datatype import DataType

    from finn.util.data_packing import finnpy_to_packed_bytearray, packed_bytearray_to_finnpy

    rng = np.random.default_rng(fold)
    x = _values(name, (3, 1, 5, fold), rng)
    ours = pack(x, name)
    finn = finnpy_to_packed_bytearray(x, DataType[name], reverse_inner=True, reverse_endian=True)
    assert ours.dtype == np.uint8 and np.array_equal(ours, np.asarray(finn))
    back = unpack(ours, name, fold)
    assert np.array_equal(back, x)
    finn_back = packed_bytearray_to_finnpy(np.ascontiguousarray(finn), DataType[name], x.shape,
                                           reverse_inner=True, reverse_endian=True)
    assert np.array_equal(back, finn_back)


def test_packing_refuses_values_outside_the_datatype():
    with pytest.raises(ToolchainError, match="outside datatype UINT4"):
        pack(np.array([[0.0, 16.0]]), "UINT4")
    with pytest.raises(ToolchainError, match="not supported"):
        pack(np.zeros((1, 2)), "FIXED<8,4>")
    with pytest.raises(ToolchainError, match="take 2 bytes"):
        unpack(np.zeros((1, 3), np.uint8), "UINT6", 2)


# --- the deploy package ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(bacalhaunet_build):
    return bacalhaunet_build


@pytest.fixture
def package(built, tmp_path):
    """A private copy of the deploy package, free to break."""
    return shutil.copytree(built / "deploy", tmp_path / "deploy")


def test_emulate_accuracy_equals_the_golden_models_on_a_synthetic_split(built, tmp_path):
    from flows.radioml import open_radioml
    from flows.rml_formats import RML2018_CLASSES
    from flows.steps import golden_logits
    from flows.synth import write_rml2018
    from hw.driver.evaluate import summarize
    from models.checkpoints import instantiate

    cfg = _config(built)
    data = write_rml2018(tmp_path / "synth.hdf5", frames_per_cell=3, seed=5)
    with open_radioml(data) as source:
        test = np.sort(source.split()[-1])
        x, y, snr = source.read(test)
    model = instantiate(cfg, built / "intermediate" / "01_build_model.pt")
    golden = golden_logits(model, x, cfg).argmax(axis=1)
    acc = Accelerator(built / "deploy", backend="emulate", batch_size=100)
    hw = acc.classify(x)
    assert len(hw) == len(x) == 24 * 26
    assert np.array_equal(hw, golden)  # the exact hardware arithmetic, frame by frame
    meta = dict(model="bacalhaunet", weight_bits=6, act_bits=6, checkpoint=None, data="synth",
                split="test", snr_min_db=None, snr_max_db=None)
    ours = summarize(hw, y, snr, RML2018_CLASSES, **meta)["per_snr"]
    assert ours == summarize(golden, y, snr, RML2018_CLASSES, **meta)["per_snr"]
    perf = acc.timings.to_dict()
    assert perf["frames"] == len(x) and perf["batches"] == 7 and perf["throughput_fps"] > 0


def _config(built):
    from flows.config import BuildConfig

    return BuildConfig.load(built / "build_config.json")


def test_frames_take_the_graphs_declared_input_shape(package):
    """A QuantConv1d model is lifted to (1, k) convolutions before FINN: its graph takes
    (1, C, 1, L) while the model (and the frames) are (C, L). The driver reshapes frames to
    the graph's declared input; packages written before `graph_input_shape` use the model's."""
    testset = np.load(package / "testset.npz")
    x = testset["x"][:6]
    io = json.loads((package / "io.json").read_text())
    assert io["graph_input_shape"] == [1, 2, 1, 1024]  # BacalhauNet's own (2, 1, L) input
    reference = DeployPackage(package).quantize(x)
    io["model_input_shape"] = [2, 1024]  # as a lifted 1D model records it
    (package / "io.json").write_text(json.dumps(io))
    assert np.array_equal(DeployPackage(package).quantize(x), reference)
    acc = Accelerator(package, backend="emulate", batch_size=4)
    assert np.array_equal(acc.classify(x), testset["golden_class"][:6])
    io["model_input_shape"] = [2, 1, 1024]
    del io["graph_input_shape"]  # an older package
    (package / "io.json").write_text(json.dumps(io))
    assert np.array_equal(DeployPackage(package).quantize(x), reference)
    io["graph_input_shape"] = [1, 2, 1, 1000]
    (package / "io.json").write_text(json.dumps(io))
    with pytest.raises(ToolchainError, match="does not hold a frame"):
        DeployPackage(package).quantize(x)


def test_driver_writes_json_and_png(package, tmp_path):
    out = tmp_path / "results"
    assert driver_main(["--deploy", str(package), "--data", str(package / "testset.npz"),
                        "--backend", "emulate", "--batch", "5", "--out", str(out),
                        "--no-progress"]) == 0
    report = json.loads((out / "driver_report.json").read_text())
    ev = json.loads((out / "evaluation.json").read_text())
    assert report["evaluation"] == ev and ev["frames"] == 12
    assert report["golden_agreement"]["classes_equal"] == 12
    assert len(ev["confusion"]) == 24 and sum(map(sum, ev["confusion"])) == 12
    assert sum(r["frames"] for r in ev["per_snr"]) == 12
    perf = report["performance"]
    assert perf["batches"] == 3 and perf["latency_us_per_frame"] > 0
    assert set(perf["stage_seconds"]) == {"quantize", "pack", "copy_in", "run", "copy_out",
                                          "unpack"}
    for png in ("accuracy_vs_snr.png", "confusion_matrix.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_snr_filter(package, tmp_path):
    out = tmp_path / "r"
    assert driver_main(["--deploy", str(package), "--data", str(package / "testset.npz"),
                        "--backend", "emulate", "--snr-min", "0", "--snr-max", "10",
                        "--out", str(out), "--no-progress"]) == 0
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["frames"] > 0 and all(0 <= r["snr_db"] <= 10 for r in ev["per_snr"])


def test_board_side_summary_equals_the_projects():
    from flows.evaluate import summarize
    from hw.driver.evaluate import _summarize

    rng = np.random.default_rng(0)
    pred, y, snr = rng.integers(0, 5, 50), rng.integers(0, 5, 50), rng.choice([-4, 0, 8], 50)
    names = ["a", "b", "c", "d", "e"]
    meta = dict(model="m", weight_bits=6, act_bits=6, checkpoint=None, data="d", split="test",
                snr_min_db=None, snr_max_db=None)
    assert _summarize(pred, y, snr, names, **meta) == summarize(pred, y, snr, names,
                                                                **meta).to_dict()


def _fails(capsys, argv, *fragments):
    assert driver_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_bad_package_missing_file(package, tmp_path, capsys):
    (package / "dataflow.onnx").unlink()
    _fails(capsys, ["--deploy", str(package), "--data", str(package / "testset.npz"),
                    "--backend", "emulate"], "dataflow.onnx", "missing")


def test_bad_package_mismatched_file(package, built, capsys):
    data = np.load(package / "testset.npz")
    np.savez(package / "testset.npz", **{k: data[k] for k in data.files if k != "rows"})
    _fails(capsys, ["--deploy", str(package), "--data", str(package / "testset.npz"),
                    "--backend", "emulate"], "testset.npz", "SHA-256 differs")


def test_bad_package_without_io_json(package, capsys):
    (package / "io.json").unlink()
    _fails(capsys, ["--deploy", str(package), "--data", "x.npz", "--backend", "emulate"],
           "io.json", "does not exist")


def test_bad_package_graph_of_another_build(package, built, capsys):
    io = json.loads((package / "io.json").read_text())
    io["input"]["normal_shape"] = [1, 1, 512, 2]
    io["input"]["folded_shape"] = [1, 1, 512, 2, 1]
    io["input"]["packed_shape"] = [1, 1, 512, 2, 4]
    (package / "io.json").write_text(json.dumps(io))
    _fails(capsys, ["--deploy", str(package), "--data", str(package / "testset.npz"),
                    "--backend", "emulate"], "mixes two builds")


@pytest.mark.parametrize("case", ["frame_length", "classes", "keys", "rml2016"])
def test_bad_data(package, tmp_path, capsys, case, rml2016_pkl):
    path = tmp_path / "bad.npz"
    n = 4
    if case == "frame_length":
        np.savez(path, x=np.zeros((n, 2, 128), np.float32), y=np.zeros(n), snr=np.zeros(n))
        expect = ["(2, 128)", "(2, 1024)"]
    elif case == "classes":
        np.savez(path, x=np.zeros((n, 2, 1024), np.float32), y=np.full(n, 30), snr=np.zeros(n))
        expect = ["labels up to 30", "24-class"]
    elif case == "keys":
        np.savez(path, x=np.zeros((n, 2, 1024), np.float32))
        expect = ["lacks y, snr"]
    else:
        path = rml2016_pkl()
        expect = ["128", "1024"]
    _fails(capsys, ["--deploy", str(package), "--data", str(path), "--backend", "emulate"],
           *expect)


def test_pynq_without_a_board_is_a_clear_error(package, tmp_path, capsys):
    from hw.deploy import add_bitfiles

    for name in ("finn-accel.bit", "finn-accel.hwh"):
        (tmp_path / name).write_bytes(b"not a real bitfile")
    add_bitfiles(package, [tmp_path / "finn-accel.bit", tmp_path / "finn-accel.hwh"])
    assert DeployPackage(package).files["bitfile"] == "finn-accel.bit"
    _fails(capsys, ["--deploy", str(package), "--data", str(package / "testset.npz")],
           "no board", "--backend emulate")


def test_pynq_package_without_bitfile_says_how_to_get_one(package, capsys):
    _fails(capsys, ["--deploy", str(package), "--data", str(package / "testset.npz"),
                    "--backend", "pynq"], "no bitfile", "--from ipgen")


@pytest.mark.board
def test_on_the_board(built, tmp_path):
    pytest.importorskip("pynq", reason="needs a PYNQ board (pynq is only on board images)")
    out = tmp_path / "board"
    assert driver_main(["--deploy", str(built / "deploy"), "--data",
                        str(built / "deploy" / "testset.npz"), "--backend", "pynq",
                        "--out", str(out)]) == 0
    report = json.loads((out / "driver_report.json").read_text())
    assert report["golden_agreement"]["classes_equal"] == report["evaluation"]["frames"]
