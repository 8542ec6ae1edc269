"""The FINN steps of build.py on BacalhauNet: export to folded HW layers, estimates, code.

One build of the deployable BacalhauNet for PYNQ-Z2 (module fixture) runs every step with its
verification; the tests read what it wrote, and resume it to check folding files and the
failure path of the verification.
"""

import json
import shutil

import numpy as np
import pytest

import build
from flows.presets import DEPLOY

GRAPH_STEPS = ["export_qonnx", "to_finn", "streamline", "label_select", "convert_to_hw",
               "partition", "specialize", "fold"]


def _build(out, *extra):
    return build.main(["--model", "bacalhaunet", "--board", "pynq-z2", "--out", str(out),
                       "--verify-frames", "12", *extra])


@pytest.fixture(scope="module")
def built(bacalhaunet_build):
    return bacalhaunet_build


def _json(path):
    return json.loads(path.read_text())


def _checkpoint(out, step):
    """The checkpoint `step` left, as named in report/steps.json."""
    records = {r["step"]: r for r in _json(out / "report" / "steps.json")}
    return out / records[step]["checkpoint"]


def test_every_step_ran_in_order(built):
    # without Vivado/Vitis the default build stops after code generation and the deploy package
    assert [r["step"] for r in _json(built / "report" / "steps.json")] == list(DEPLOY)


def test_every_graph_step_matches_the_golden_model(built):
    records = {r["step"]: r for r in _json(built / "report" / "verification.json")}
    assert sorted(records) == sorted(GRAPH_STEPS)
    for step, r in records.items():
        assert r["passed"] and r["frames"] == 12, step
        assert r["classes_equal"] == 12, step
        assert r["frames_within_atol"] == 12 and r["max_abs_diff"] <= r["atol"] == 1e-4, step
        assert 0 < r["seconds"] < 60, step


def test_cost_report_of_the_exported_graph(built):
    cost = _json(built / "report" / "cost.json")
    assert cost["dense"]["total_macs"] == 2_044_032 and cost["total_weights"] == 9_318
    assert cost["unsupported_ops"] == []
    assert 0 < cost["score"]["score"] < 0.2  # BacalhauNet costs a fraction of VGG10
    assert "bops" in (built / "report" / "cost.md").read_text()


def test_whole_network_is_in_hardware(built):
    partition = _json(built / "report" / "partition.json")
    assert [n["op_type"] for n in partition["software_nodes"]] == ["Transpose"]
    for op in ("MVAU", "VVAU", "ConvolutionInputGenerator", "FMPadding", "Thresholding",
               "DuplicateStreams", "ElementwiseAdd", "Pool", "LabelSelect"):
        assert op in partition["hw_op_types"], op


def test_estimates_fit_the_board_and_add_up(built):
    est = _json(built / "report" / "estimates.json")
    assert est["fits"] and est["board"] == "pynq-z2" and est["clock_mhz"] == 100.0
    layers = est["layers"]
    assert len(layers) == _json(built / "report" / "partition.json")["hw_nodes"]
    assert est["total"]["lut"] == pytest.approx(sum(r["lut"] for r in layers))
    assert est["total"]["dsp"] == sum(r["dsp"] for r in layers) <= 220 * est["max_utilisation"]
    assert est["bottleneck_cycles"] == max(r["cycles"] for r in layers)
    assert est["throughput_fps"] == pytest.approx(100e6 / est["bottleneck_cycles"])
    assert est["latency_us"] == pytest.approx(est["latency_cycles"] / 100.0)
    # default target: the board's maximum, one input sample per cycle: 100 MHz / 1024
    search = _json(built / "report" / "folding_search.json")
    assert search[0]["target_fps"] == pytest.approx(100e6 / 1024, abs=0.1)
    chosen = [s for s in search if s.get("chosen")]
    assert len(chosen) == 1 and chosen[0]["fits"]
    assert chosen[0]["estimated_fps"] == pytest.approx(est["throughput_fps"], abs=0.1)
    # nothing that fits was faster than the chosen design
    assert all(s["estimated_fps"] <= chosen[0]["estimated_fps"] for s in search if s["fits"])
    png = (built / "report" / "estimates.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| total |" in (built / "report" / "estimates.md").read_text()


def test_code_is_generated_for_every_layer(built):
    layers = _json(built / "report" / "codegen.json")
    assert len(layers) == _json(built / "report" / "partition.json")["hw_nodes"]
    for layer in layers:
        assert layer["files"], layer["name"]
        if layer["op_type"].endswith("_rtl"):
            assert any(f.endswith((".v", ".sv")) for f in layer["files"]), layer["name"]
        else:
            assert any(f.endswith(".cpp") for f in layer["files"]), layer["name"]


def test_folding_file_round_trip(built, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built, out)
    folding = built / "report" / "folding_config.json"
    before = _json(built / "report" / "estimates.json")
    assert _build(out, "--from", "fold", "--until", "estimate", "--folding", str(folding)) == 0
    after = _json(out / "report" / "estimates.json")
    assert after["layers"] == before["layers"]


def test_folding_file_naming_unknown_layers_is_refused(built, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(built, out)
    bad = tmp_path / "fold.json"
    bad.write_text(json.dumps({"Defaults": {}, "MVAU_nope": {"PE": 2}}))
    assert _build(out, "--from", "fold", "--until", "fold", "--folding", str(bad)) == 2
    err = capsys.readouterr().err
    assert "fold.json" in err and "MVAU_nope" in err


def test_fold_lowers_the_target_until_it_fits(built):
    from flows.config import BuildConfig
    from flows.steps import get_step
    from hw.folding import fold_to_fit, shortfall, shortfall_message

    cfg = BuildConfig.load(built / "build_config.json")
    cfg.max_utilisation = 0.3
    model = get_step("specialize").checkpoint.load(_checkpoint(built, "specialize"), cfg)
    folded, search = fold_to_fit(model, cfg)
    chosen = [s for s in search if s.get("chosen")]
    assert len(chosen) == 1 and chosen[0]["fits"]
    assert not search[0]["fits"] and chosen[0]["target_fps"] < search[0]["target_fps"]
    assert max(chosen[0]["utilisation"].values()) <= 0.3
    # the build says the target was missed, what was reached, and which boards hold the design
    note = shortfall(search, cfg)
    assert note["reached_fps"] == chosen[0]["estimated_fps"] < note["target_fps"]
    assert note["boards_that_hold_it"] and "pynq-z2" not in note["boards_that_hold_it"]
    assert "best folding that fits gives" in shortfall_message(note, cfg)


def test_a_broken_step_fails_naming_the_step_and_node(built, tmp_path, capsys, monkeypatch):
    """A step whose transformation breaks one threshold must stop the build, name itself and
    the first diverging node, and leave the evidence on disk."""
    from hw import finn_flow

    out = tmp_path / "out"
    shutil.copytree(built, out)
    broken = {}
    original = finn_flow.insert_topk

    def insert_topk_with_a_bug(model, k=1):
        model = original(model, k)
        node = model.get_nodes_by_op_type("MultiThreshold")[2]
        model.set_initializer(node.input[1], model.get_initializer(node.input[1]) + 3.0)
        broken["node"] = node.name
        return model

    monkeypatch.setattr(finn_flow, "insert_topk", insert_topk_with_a_bug)
    assert _build(out, "--from", "label_select") == 2
    err = capsys.readouterr().err
    assert "verification failed after label_select" in err
    assert f"first divergence from the previous stage: node {broken['node']} " in err
    record = _json(out / "report" / "verification.json")[-1]
    assert record["step"] == "label_select" and not record["passed"]
    evidence = out / "report" / "mismatch" / "label_select"
    assert np.load(evidence / "label_select_frames.npy").shape[0] == 12
    stage, golden = (np.load(evidence / f"label_select_{k}.npy")
                     for k in ("logits", "reference_logits"))
    assert stage.shape == golden.shape == (12, 24) and np.abs(stage - golden).max() > 1e-4
    assert (evidence / "label_select.onnx").exists()
    # the failed step left no new checkpoint: its graph is set aside, the verified one stays
    assert _checkpoint(out, "label_select").stat().st_mtime_ns == \
        _checkpoint(built, "label_select").stat().st_mtime_ns
    set_aside = _checkpoint(out, "label_select").with_name(
        "06_label_select.failed-verification.onnx")
    assert set_aside.exists() and set_aside.stat().st_mtime_ns > \
        _checkpoint(built, "label_select").stat().st_mtime_ns
    assert not list((out / "intermediate").glob("*.unverified.*"))


def test_an_edited_checkpoint_is_caught_at_the_next_step(built, tmp_path, capsys):
    from qonnx.core.modelwrapper import ModelWrapper

    out = tmp_path / "out"
    shutil.copytree(built, out)
    path = _checkpoint(out, "streamline")
    model = ModelWrapper(str(path))
    node = model.get_nodes_by_op_type("MultiThreshold")[2]
    model.set_initializer(node.input[1], model.get_initializer(node.input[1]) + 3.0)
    model.save(str(path))
    assert _build(out, "--from", "label_select") == 2
    err = capsys.readouterr().err
    assert "verification failed after label_select" in err and "edited checkpoint" in err


def test_lut_multipliers_compute_the_same_without_dsps(built):
    """Every MVAU/VVAU moved to LUT multipliers: no DSP layer left, the estimate needs no DSP
    for them, and the graph computes exactly what the DSP one computes."""
    from flows.config import BuildConfig
    from flows.steps import get_step
    from hw import finn_flow as ff

    cfg = BuildConfig.load(built / "build_config.json")
    model = get_step("specialize").checkpoint.load(_checkpoint(built, "specialize"), cfg)
    assert ff.dsp_layers(model), "the BacalhauNet build has DSP layers to move"
    lut = ff.lut_multipliers(model, cfg.fpga_part)
    assert not ff.dsp_layers(lut)
    layers = ff.estimates(ff.set_folding(lut, 20000, cfg.effective_clock_mhz), cfg.fpga_part,
                          cfg.effective_clock_mhz)["layers"]
    assert all(l["dsp"] == 0 for l in layers if l["op_type"].startswith(("MVAU", "VVAU")))
    frames = np.load(built / "data" / "verify_frames.npz")["x"][:3].astype(np.float32)
    frames = frames.reshape(len(frames), *cfg.model_spec.input_shape)
    parent = ff.ModelWrapper(str(built / "intermediate" / "partition_parent.onnx"))
    whole = [ff.with_dataflow_model(parent, m) for m in (model, lut)]
    assert np.array_equal(ff.execute(whole[0], frames), ff.execute(whole[1], frames))


def test_fold_moves_multipliers_to_luts_when_dsps_run_out(built, tmp_path, monkeypatch):
    """On a board short of DSPs (PYNQ-Z2 with 60 of its 220), the search goes on with LUT
    multipliers, and the chosen folding file is taken back by --folding."""
    import dataclasses

    from flows.config import BuildConfig
    from flows.steps import get_step
    from hw import boards, finn_flow as ff
    from hw.folding import apply_folding_file, fold_to_fit, write_folding_config

    real = boards.get_board("pynq-z2")
    few_dsps = dataclasses.replace(real, resources=dataclasses.replace(real.resources, dsp=60))
    monkeypatch.setattr(boards, "get_board", lambda name: few_dsps)
    cfg = BuildConfig.load(built / "build_config.json")
    model = get_step("specialize").checkpoint.load(_checkpoint(built, "specialize"), cfg)
    folded, search = fold_to_fit(model, cfg)
    chosen = next(s for s in search if s.get("chosen"))
    assert any(s["multipliers"] == "dsp" and not s["fits"] for s in search)
    assert chosen["multipliers"] == "lut" and chosen["fits"] and chosen["dsp"] <= 0.9 * 60
    assert not ff.dsp_layers(folded)
    path = tmp_path / "folding.json"
    write_folding_config(folded, path)
    cfg.folding = str(path)
    again = apply_folding_file(model, cfg)  # names the HLS layers the RTL ones become
    assert [n.name for n in again.graph.node] == [n.name for n in folded.graph.node]


def test_fold_moves_weights_to_uram_when_block_ram_runs_out(built, tmp_path, monkeypatch):
    """On a board whose block RAM holds no design but with UltraRAM to spare, the search moves
    the largest weight memories to URAM (runtime-writeable, as FINN requires), the design
    fits, the folding file carries it, and the deploy step declines the package, saying why.
    Where a slower design fits in block RAM, that one is chosen (it can be deployed)."""
    import dataclasses

    from flows.config import BuildConfig
    from flows.steps import get_step
    from hw import boards, finn_flow as ff
    from flows.errors import InputFileError
    from hw.deploy import DeployUnsupported, _check_no_runtime_weights
    from hw.folding import apply_folding_file, fold_to_fit, write_folding_config

    real = boards.get_board("pynq-z2")
    board = {"bram18": 40}
    monkeypatch.setattr(boards, "get_board", lambda name: dataclasses.replace(
        real, resources=dataclasses.replace(real.resources, bram18=board["bram18"], uram=64)))
    cfg = BuildConfig.load(built / "build_config.json")
    model = get_step("specialize").checkpoint.load(_checkpoint(built, "specialize"), cfg)
    _, search = fold_to_fit(model, cfg)  # a slower design fits 40 BRAM18: no URAM
    chosen = next(s for s in search if s.get("chosen"))
    assert chosen["fits"] and not chosen["weights_in_uram"] and chosen["bram18"] <= 36
    assert not any(s["weights_in_uram"] for s in search)
    board["bram18"] = 10  # no design fits: the search is run again with URAM
    folded, search = fold_to_fit(model, cfg)
    chosen = next(s for s in search if s.get("chosen"))
    assert any(not s["weights_in_uram"] and not s["fits"] for s in search)
    assert chosen["fits"] and chosen["weights_in_uram"] and chosen["bram18"] <= 0.9 * 10
    assert 0 < chosen["uram"] <= 0.9 * 64
    assert ff.uram_weight_layers(folded) == chosen["weights_in_uram"]
    for node in folded.graph.node:
        if node.name in chosen["weights_in_uram"]:
            inst = ff.getCustomOp(node)
            assert inst.get_nodeattr("runtime_writeable_weights") == 1
    path = tmp_path / "folding.json"
    write_folding_config(folded, path)
    cfg.folding = str(path)
    again = apply_folding_file(model, cfg)
    assert ff.uram_weight_layers(again) == chosen["weights_in_uram"]
    edited = json.loads(path.read_text())
    edited[chosen["weights_in_uram"][0]]["runtime_writeable_weights"] = 0
    path.write_text(json.dumps(edited))
    with pytest.raises(InputFileError, match="without runtime_writeable_weights"):
        apply_folding_file(model, cfg)
    _check_no_runtime_weights(model)  # block RAM weights: nothing to decline
    with pytest.raises(DeployUnsupported, match="UltraRAM, which the bitstream cannot"):
        _check_no_runtime_weights(folded)
