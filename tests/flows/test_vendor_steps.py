"""The vendor-tool steps: what they need, the message and plan without the tools, and (marked
`vivado`) the real runs on a tiny 2-layer dataflow model.

Without Vivado (as here) the tests check the tool checks against a controlled environment:
nothing on PATH, then fake tools and libraries in tmp_path, which must satisfy every check.
The `vivado` tests call `require_vivado()`, which skips with the missing tools named.
"""

import os
import shlex
import stat
from pathlib import Path

import numpy as np
import pytest

import build
from flows.config import BuildConfig
from flows.errors import ToolchainError
from flows.presets import CODEGEN
from flows.steps import get_step
from flows.vendor_steps import VENDOR_STEPS, step_ipgen
from hw.vendor import (
    _REPEATED_OPTIONS,
    docker_command,
    finn_dependency,
    missing_tools,
    plan_vendor_steps,
    vendor_message,
)

FULL = CODEGEN + VENDOR_STEPS  # the preset the full flow will be (flows.presets)
U250_PLATFORM = "xilinx_u250_gen3x16_xdma_4_1_202210_1"
_TOOL_ENV = ("XILINX_VIVADO", "XILINX_HLS", "XILINX_VITIS", "XILINX_XRT", "PLATFORM_REPO_PATHS",
             "FINN_TOOL_DIR_OVERRIDE")


def _cfg(tmp_path, board="pynq-z2", **kw):
    return BuildConfig(model="bacalhaunet", board=board, out_dir=tmp_path / "out", **kw)


def _names(steps, board):
    return {m.name for m in missing_tools(steps, board)}


@pytest.fixture
def no_tools(monkeypatch, tmp_path):
    """An environment without any tool: empty PATH, no Xilinx variables, empty FINN_DEPS."""
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    for name in _TOOL_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FINN_DEPS", str(tmp_path / "no_deps"))
    return tmp_path


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fake_tools(no_tools, monkeypatch):
    """Stand-ins for everything the vendor steps need, where finn-plus looks for them."""
    root = no_tools / "fake"
    for tool in ("vivado", "vitis_hls", "v++", "g++"):
        _executable(root / "bin" / tool)
    monkeypatch.setenv("PATH", str(root / "bin"))
    vivado = root / "Xilinx" / "Vivado" / "2024.2"
    vivado.mkdir(parents=True)
    monkeypatch.setenv("XILINX_VIVADO", str(vivado))
    monkeypatch.setenv("XILINX_XRT", str(root / "xrt"))
    (root / "platforms" / U250_PLATFORM).mkdir(parents=True)
    monkeypatch.setenv("PLATFORM_REPO_PATHS", str(root / "platforms"))
    deps = root / "deps"
    (deps / "finn-hlslib").mkdir(parents=True)
    (deps / "finn-hlslib" / "bnn-library.h").write_text("")
    (deps / "nlohmann_json" / "json").mkdir(parents=True)
    (deps / "nlohmann_json" / "json" / "CMakeLists.txt").write_text("")
    for board_dir in ("pynq-z2", "ultra96v2", "kv260_som"):
        (deps / "board_files" / board_dir).mkdir(parents=True)
    monkeypatch.setenv("FINN_DEPS", str(deps))
    (root / "site" / "cmake").mkdir(parents=True)  # finn runs `python -m cmake`
    (root / "site" / "cmake" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(root / "site"))
    return root


# --- registry ---------------------------------------------------------------------------------

def test_every_vendor_step_is_registered_and_documented():
    for name in VENDOR_STEPS:
        step = get_step(name)
        assert step.checkpoint is not None and step.summary, name


# --- missing_tools ----------------------------------------------------------------------------

def test_ipgen_needs_vitis_hls_xilinx_vivado_and_hlslib(no_tools):
    assert _names(["ipgen"], "pynq-z2") == {"XILINX_VIVADO", "vitis_hls", "finn-hlslib"}


@pytest.mark.parametrize("step", ["stitch", "synth_ooc"])
def test_stitch_and_synthesis_need_vivado(no_tools, step):
    assert _names([step], "pynq-z2") == {"XILINX_VIVADO", "vivado"}


def test_fifo_sizing_needs_vivado_hls_and_the_simulation_build(no_tools):
    assert _names(["fifo_depths"], "pynq-z2") >= {"XILINX_VIVADO", "vivado", "vitis_hls",
                                                  "finn-hlslib", "g++", "nlohmann-json"}


@pytest.mark.parametrize("board, board_files", [("pynq-z2", {"pynq-z2"}),
                                                ("ultra96-v2", {"avnet-bdf"}),
                                                ("kv260", {"kv260-som-bdf"}),
                                                ("zcu104", set())])
def test_zynq_bitfile_needs_vivado_and_the_board_files(no_tools, board, board_files):
    common = {"XILINX_VIVADO", "vivado", "vitis_hls", "finn-hlslib"}
    assert _names(["bitfile"], board) == common | board_files


def test_alveo_bitfile_needs_vitis_xrt_and_the_platform(no_tools):
    assert _names(["bitfile"], "u250") == {"XILINX_VIVADO", "vivado", "vitis_hls", "finn-hlslib",
                                           "v++", "XILINX_XRT", U250_PLATFORM}


def test_every_zynq_board_says_where_its_board_files_come_from():
    from hw.boards import BOARDS
    from hw.vendor import _BOARD_FILES

    for board in BOARDS.values():
        if board.kind == "zynq":
            entry = _BOARD_FILES[board.name]  # KeyError: a new board needs an entry
            assert entry is None or finn_dependency(entry[0]), board.name


def test_each_missing_tool_is_listed_once_with_the_steps_that_need_it(no_tools):
    missing = {m.name: m for m in missing_tools(VENDOR_STEPS, "pynq-z2")}
    assert missing["vivado"].steps == ("fifo_depths", "stitch", "synth_ooc", "bitfile")
    assert missing["XILINX_VIVADO"].steps == VENDOR_STEPS
    assert "2024.2" in missing["vivado"].version


def test_steps_before_the_vendor_steps_need_nothing(no_tools):
    assert missing_tools(CODEGEN, "pynq-z2") == []


def test_hls_tool_follows_the_vivado_version(no_tools, monkeypatch):
    monkeypatch.setenv("XILINX_VIVADO", "/tools/Xilinx/2025.1/Vivado")
    assert "vitis-run" in _names(["ipgen"], "pynq-z2")
    monkeypatch.setenv("XILINX_VIVADO", "/tools/Xilinx/Vivado/2022.2")
    assert "vitis_hls" in _names(["ipgen"], "pynq-z2")


def test_xilinx_vivado_without_a_version_counts_as_missing(no_tools, monkeypatch):
    monkeypatch.setenv("XILINX_VIVADO", "/opt/vivado")
    (missing,) = [m for m in missing_tools(["stitch"], "pynq-z2") if m.name == "XILINX_VIVADO"]
    assert "version" in missing.reason


@pytest.mark.parametrize("board", ["pynq-z2", "ultra96-v2", "kv260", "zcu104", "u250"])
def test_fake_tools_satisfy_every_check(fake_tools, board):
    assert missing_tools(VENDOR_STEPS, board) == []


def test_a_file_that_is_not_executable_is_no_tool(fake_tools):
    (fake_tools / "bin" / "vivado").chmod(0o644)
    assert _names(["stitch"], "pynq-z2") == {"vivado"}


def test_tool_dir_override_replaces_path_as_in_finn(fake_tools, monkeypatch, tmp_path):
    override = tmp_path / "override"
    _executable(override / "vivado")
    monkeypatch.setenv("FINN_TOOL_DIR_OVERRIDE", str(override))
    assert _names(["stitch"], "pynq-z2") == set()
    assert _names(["ipgen"], "pynq-z2") == {"vitis_hls"}  # on PATH, but not in the override


# --- vendor_message and docker_command --------------------------------------------------------

def test_message_names_steps_tools_versions_and_the_docker_command(no_tools, tmp_path):
    cfg = _cfg(tmp_path)
    message = vendor_message(VENDOR_STEPS, "pynq-z2", cfg)
    assert "\n" not in message  # one paragraph
    for word in (*VENDOR_STEPS, "vivado", "vitis_hls", "XILINX_VIVADO", "finn-hlslib", "2024.2",
                 finn_dependency("finn-hlslib")["commit"][:12], "docker build -t amc-fpga ."):
        assert word in message, word
    command = message.split("`")[-2]
    args = shlex.split(command)
    assert args[:3] == ["docker", "run", "--rm"]
    assert "/tools/Xilinx:/tools/Xilinx" in args
    out = str((tmp_path / "out").resolve())
    assert f"{out}:{out}" in args
    tail = args[args.index("amc-fpga") + 1:]
    assert tail == ["python", "build.py", "--model", "bacalhaunet", "--board", "pynq-z2",
                    "--out", out, "--from", "ipgen"]


def test_message_for_alveo_mounts_xrt_and_names_vitis(no_tools, tmp_path):
    message = vendor_message(["bitfile"], "u250", _cfg(tmp_path, board="u250"))
    assert "v++" in message and "XILINX_XRT" in message and U250_PLATFORM in message
    assert "/opt/xilinx:/opt/xilinx:ro" in message and "--from bitfile" in message


def test_message_is_empty_when_nothing_was_skipped(no_tools, tmp_path):
    assert vendor_message([], "pynq-z2", _cfg(tmp_path)) == ""


def test_docker_command_repeats_the_options_a_resumed_build_checks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tmp_path, bits=6, verify_frames=12, seed=3, clock_mhz=125.0,
               data=Path("data/rml.h5"), weights=tmp_path / "w.pt")
    args = shlex.split(docker_command(cfg, "fold", "codegen"))
    assert f"{tmp_path / 'data/rml.h5'}:/opt/amc-fpga/data/rml.h5:ro" in args
    assert f"{tmp_path / 'w.pt'}:{tmp_path / 'w.pt'}:ro" in args
    parsed = build.parse_args(args[args.index("build.py") + 1:])  # every option exists
    assert (parsed.bits, parsed.verify_frames, parsed.seed, parsed.clock_mhz) == (6, 12, 3, 125.0)
    assert parsed.data == Path("data/rml.h5") and parsed.weights == tmp_path / "w.pt"
    assert (parsed.from_step, parsed.until_step) == ("fold", "codegen")


def test_repeated_options_cover_the_resume_check():
    from flows.runner import _RESUME_FIELDS

    repeated = {name for name, _ in _REPEATED_OPTIONS}
    assert set(_RESUME_FIELDS) - {"model", "board"} <= repeated


# --- plan_vendor_steps ------------------------------------------------------------------------

def test_default_build_stops_after_codegen_with_the_message(no_tools, tmp_path):
    plan = plan_vendor_steps(FULL, _cfg(tmp_path))
    assert plan.steps == CODEGEN and plan.skipped == VENDOR_STEPS and plan.error is None
    assert "--from ipgen" in plan.message


def test_until_a_vendor_step_is_an_error_before_any_work(no_tools, tmp_path):
    plan = plan_vendor_steps(FULL, _cfg(tmp_path, until_step="bitfile"))
    assert plan.steps == () and plan.skipped == VENDOR_STEPS
    assert plan.error.startswith("--until bitfile cannot run here.")
    assert "--from ipgen --until bitfile" in plan.error


def test_from_a_vendor_step_is_an_error(no_tools, tmp_path):
    plan = plan_vendor_steps(FULL, _cfg(tmp_path, from_step="ipgen"))
    assert plan.steps == () and plan.error.startswith("--from ipgen cannot run here.")


def test_until_codegen_needs_no_tools(no_tools, tmp_path):
    plan = plan_vendor_steps(FULL, _cfg(tmp_path, until_step="codegen"))
    assert plan.steps == CODEGEN and plan.skipped == () and plan.message == ""


def test_resuming_before_codegen_runs_to_codegen(no_tools, tmp_path):
    plan = plan_vendor_steps(FULL, _cfg(tmp_path, from_step="fold"))
    assert plan.steps == ("fold", "estimate", "codegen") and plan.error is None


def test_with_the_tools_everything_runs(fake_tools, tmp_path):
    plan = plan_vendor_steps(FULL, _cfg(tmp_path))
    assert plan.steps == FULL and plan.skipped == () and plan.error is None


def test_a_missing_hls_tool_skips_every_later_vendor_step(fake_tools, tmp_path):
    (fake_tools / "bin" / "vitis_hls").unlink()
    plan = plan_vendor_steps(FULL, _cfg(tmp_path))
    assert plan.steps == CODEGEN and plan.skipped == VENDOR_STEPS
    assert "vitis_hls (" in plan.message and "vivado (" not in plan.message


def test_a_step_outside_the_flow_is_an_error(tmp_path):
    with pytest.raises(ToolchainError, match="--until bitfile: not a step of this flow"):
        plan_vendor_steps(CODEGEN, _cfg(tmp_path, until_step="bitfile"))


def test_a_step_checks_its_tools_before_any_work(no_tools, tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(ToolchainError, match="ipgen cannot run here.*docker run"):
        step_ipgen(None, cfg)
    assert not cfg.out_dir.exists()


# --- a tiny dataflow model --------------------------------------------------------------------

PART = "xc7z020clg400-1"


def tiny_dataflow_model():
    """Two HW layers on 8 INT4 inputs: MVAU (HLS, INT2 weights, 8x8) -> Thresholding (RTL,
    UINT2 out), specialized for PYNQ-Z2; and the (weights, thresholds) it was made from."""
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import (
        InferThresholdingLayer,
    )
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from onnx import TensorProto, helper
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.basic import qonnx_make_model

    from hw.finn_flow import minimize_bit_widths

    rng = np.random.default_rng(0)
    weights = rng.integers(-2, 2, (8, 8)).astype(np.float32)
    thresholds = np.sort(rng.integers(-20, 20, (8, 3)), axis=1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["inp", "w"], ["acc"]),
         helper.make_node("MultiThreshold", ["acc", "t"], ["out"],
                          domain="qonnx.custom_op.general", out_dtype="UINT2")],
        "tiny", [helper.make_tensor_value_info("inp", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8])])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_tensor_datatype("inp", DataType["INT4"])
    model.set_initializer("w", weights)
    model.set_tensor_datatype("w", DataType["INT2"])
    model.set_initializer("t", thresholds)
    for transformation in (InferShapes(), InferDataTypes(), InferThresholdingLayer(),
                           InferQuantizedMatrixVectorActivation()):
        model = model.transform(transformation)
    model = minimize_bit_widths(model)
    model = model.transform(SpecializeLayers(PART)).transform(GiveUniqueNodeNames())
    return model, weights, thresholds


@pytest.fixture
def tiny_codegen(tmp_path):
    """The tiny model after code generation, in a build directory of its own."""
    from flows.hw_steps import _finn

    cfg = _cfg(tmp_path)
    model, weights, thresholds = tiny_dataflow_model()
    model = _finn(cfg).generate_code(model, cfg.fpga_part, cfg.effective_clock_mhz)
    return cfg, model, weights, thresholds


def test_tiny_model_is_an_hls_and_an_rtl_layer_with_generated_code(tiny_codegen):
    from qonnx.custom_op.registry import getCustomOp

    from hw.finn_flow import execute

    cfg, model, weights, thresholds = tiny_codegen
    assert [n.op_type for n in model.graph.node] == ["MVAU_hls", "Thresholding_rtl"]
    for node in model.graph.node:
        code_dir = Path(getCustomOp(node).get_nodeattr("code_gen_dir_ipgen"))
        assert code_dir.is_dir() and any(code_dir.iterdir()), node.name
        assert cfg.out_dir in code_dir.parents  # below this build's FINN_BUILD_DIR
    frames = np.random.default_rng(1).integers(-8, 8, (4, 8)).astype(np.float32)
    expected = (frames @ weights)[..., None] >= thresholds  # one step per threshold passed
    assert np.array_equal(execute(model, frames), expected.sum(-1))


@pytest.mark.parametrize("step", ["ipgen", "bitfile"])
def test_with_fake_tools_a_step_runs_finn_up_to_the_tool(fake_tools, tiny_codegen, monkeypatch,
                                                         step):
    """The real code path up to the first tool call: finn's transformations run, call the
    (fake) Vitis HLS, find no IP and the step reports that with its log."""
    monkeypatch.setenv("PATH", os.pathsep.join([str(fake_tools / "bin"), "/usr/bin", "/bin"]))
    cfg, model, _, _ = tiny_codegen
    with pytest.raises(ToolchainError, match=f"{step} failed: FINNUserError: Generated IP "
                                             f"couldn't be found.*logs/{step}.log"):
        get_step(step).func(model, cfg)
    assert (cfg.out_dir / "logs" / f"{step}.log").exists()
    assert (cfg.report_dir / "toolchain.json").exists()


# --- with the vendor tools --------------------------------------------------------------------

def require_vivado(steps, board="pynq-z2"):
    """Skip, naming what is missing, unless everything `steps` need on `board` is here."""
    missing = missing_tools(steps, board)
    if missing:
        pytest.skip(reason="needs Vivado 2024.x on PATH (absent): "
                    + "; ".join(m.describe() for m in missing))


@pytest.mark.vivado
def test_ipgen_stitch_and_synth_ooc_on_the_tiny_model(tiny_codegen):
    require_vivado(["ipgen", "stitch", "synth_ooc"])
    import json

    cfg, model, _, _ = tiny_codegen
    model = get_step("ipgen").func(model, cfg)
    ipgen = json.loads((cfg.report_dir / "ipgen.json").read_text())
    mvau = next(layer for layer in ipgen["layers"] if layer["op_type"] == "MVAU_hls")
    assert mvau["ipgen_path"] and Path(mvau["ipgen_path"]).is_dir()
    model = get_step("stitch").func(model, cfg)
    assert list((cfg.out_dir / "stitched_ip").glob("*.xpr"))
    model = get_step("synth_ooc").func(model, cfg)
    ooc = json.loads((cfg.report_dir / "synth_ooc.json").read_text())
    assert ooc["LUT"] > 0 and ooc["fmax_mhz"] > 0 and ooc["throughput_fps_at_fmax"] > 0
    assert (cfg.out_dir / "logs" / "ipgen.log").stat().st_size > 0
    assert "vivado" in json.loads((cfg.report_dir / "toolchain.json").read_text())["stitch"]


@pytest.mark.vivado
@pytest.mark.slow
def test_bitfile_for_pynq_z2_on_the_tiny_model(tiny_codegen):
    require_vivado(["ipgen", "fifo_depths", "stitch", "bitfile"])
    import json

    cfg, model, _, _ = tiny_codegen
    for step in ("ipgen", "fifo_depths", "stitch", "bitfile"):
        model = get_step(step).func(model, cfg)
    fifos = json.loads((cfg.report_dir / "fifo_depths.json").read_text())["fifos"]
    assert fifos and all(f["depth"] >= 2 for f in fifos)
    for name in ("finn-accel.bit", "finn-accel.hwh"):
        assert (cfg.out_dir / "bitfile" / name).stat().st_size > 0, name
    report = json.loads((cfg.report_dir / "bitfile.json").read_text())
    assert report["board"] == "pynq-z2" and len(report["files"]) == 2
    assert (cfg.report_dir / "post_route_timing.rpt").exists()
    assert os.path.getsize(cfg.report_dir / "post_synth_report.xml") > 0
