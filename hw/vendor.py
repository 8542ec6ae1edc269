"""What the vendor-tool steps need, whether it is here, and what to tell the user when it is not.

The steps after code generation (`flows.vendor_steps`: ipgen, fifo_depths, stitch, synth_ooc,
bitfile) run AMD's tools through finn-plus. Each needs a known set of executables, environment
variables and libraries; `missing_tools` checks them the way finn-plus finds them, and
`plan_vendor_steps` decides what a build runs: without the tools a default build stops after
code generation (and `vendor_message` says how to finish it in the Docker image), while an
explicit `--from`/`--until` into a vendor step is an error before any work starts.

What finn-plus 1.6.1 is written for (read from its sources):
- Vivado, Vitis and Vitis HLS 2022.2 or 2024.2: "Prerequisites" in its README (the package's
  METADATA). The image documents 2024.2, the newer of the two.
- The HLS compiler depends on the version in XILINX_VIVADO (`finn/util/hls.py`, `CallHLS`):
  `vitis_hls` up to 2024.2, `vitis-run --mode hls` after it. finn parses the version out of the
  XILINX_VIVADO path (`finn.util.basic.get_vivado_version`) and refuses to run HLS without it.
- Tools are looked up on PATH, or in FINN_TOOL_DIR_OVERRIDE if set
  (`finn.util.basic.resolve_xilinx_tool`).
- HLS layers include finn-hlslib from `<FINN_DEPS>/finn-hlslib` (`HLSBackend`, via finn's
  settings: FINN_DEPS, default `<finn package>/finn_deps`); the pinned commits of it, of the
  board files and of nlohmann/json (FIFO-sizing simulation, `<FINN_DEPS>/nlohmann_json/json`)
  are in `finn/interface/external_dependencies.yaml`. Zynq block designs take board files from
  `<FINN_DEPS>/board_files` (`make_zynq_proj.py`).
- FIFO sizing builds C++ simulation backends with `python -m cmake` (the `cmake` package, a
  finn-plus dependency, >=4.0.3,<4.1) and a C++ compiler (`simulation_build.py`,
  `finn/xsi/setup.py`).
- Alveo links with `v++` against a platform found in PLATFORM_REPO_PATHS, with XRT sourced
  (XILINX_XRT); finn falls back to /opt/xilinx/platforms (`interface_utils.py`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, fields
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING

from flows.errors import ToolchainError

if TYPE_CHECKING:
    from flows.config import BuildConfig
    from hw.boards import Board

__all__ = [
    "BITFILE_NAMES",
    "DOCKER_IMAGE",
    "FINN_PLUS_XILINX_VERSIONS",
    "IMAGE_XILINX_VERSION",
    "STEP_PURPOSE",
    "VENDOR_STEPS",
    "MissingTool",
    "VendorPlan",
    "board_files_dir",
    "docker_command",
    "finn_dependency",
    "finn_deps_dir",
    "missing_tools",
    "plan_vendor_steps",
    "prepare_vendor_environment",
    "require_tools",
    "vendor_message",
    "vivado_version",
    "xilinx_version",
]

# The vendor steps in flow order; each depends on the one before.
VENDOR_STEPS = ("ipgen", "fifo_depths", "stitch", "synth_ooc", "bitfile")

STEP_PURPOSE = {
    "ipgen": "HLS IP generation",
    "fifo_depths": "FIFO sizing by simulation",
    "stitch": "stitched IP",
    "synth_ooc": "out-of-context synthesis",
    "bitfile": "bitfile",
}

FINN_PLUS_XILINX_VERSIONS = ("2022.2", "2024.2")  # finn-plus 1.6.1 README, "Prerequisites"
IMAGE_XILINX_VERSION = "2024.2"  # the version the Docker image's entrypoint looks for
DOCKER_IMAGE = "amc-fpga"
XILINX_MOUNT = "/tools/Xilinx"  # where the image expects the host's Xilinx installation
XRT_MOUNT = "/opt/xilinx"  # XRT (/opt/xilinx/xrt) and Alveo platforms (/opt/xilinx/platforms)
CONTAINER_ROOT = "/opt/amc-fpga"  # the project inside the image (its WORKDIR)

# Names finn's builder gives the bitfiles (`copy_and_rename_bitfiles`), kept for its drivers.
BITFILE_NAMES = {"zynq": ("finn-accel.bit", "finn-accel.hwh"), "alveo": ("finn-accel-0.xclbin",)}

# Zynq board -> (finn-plus dependency that provides its board files, directory under
# <FINN_DEPS>/board_files). None: Vivado ships the board files itself. Every Zynq board of
# hw.boards needs an entry (tests/flows/test_vendor_steps.py).
_BOARD_FILES = {
    "pynq-z2": ("pynq-z2", "pynq-z2"),
    "ultra96-v2": ("avnet-bdf", "ultra96v2"),
    "kv260": ("kv260-som-bdf", "kv260_som"),
    "zcu104": None,
}

_TOOL_DIR_OVERRIDE = "FINN_TOOL_DIR_OVERRIDE"  # finn.util.basic._XILINX_TOOL_DIR_ENV


@dataclass(frozen=True)
class MissingTool:
    """One requirement of the vendor steps that is not met here."""

    name: str  # executable, environment variable, library or Python package
    version: str  # what it is and the version finn-plus 1.6.1 is written for
    reason: str  # why it counts as missing
    steps: tuple[str, ...]  # the steps that need it

    def describe(self) -> str:
        return f"{self.name} ({self.version}): {self.reason}"


@dataclass(frozen=True)
class VendorPlan:
    """What a build runs of its flow, given the tools found here."""

    steps: tuple[str, ...]  # steps to run, in order
    skipped: tuple[str, ...]  # vendor steps left out for missing tools
    error: str | None  # set when an explicit --from/--until needs a skipped step
    message: str  # the paragraph to print when steps were skipped ("" otherwise)


# --- where finn-plus finds things ---------------------------------------------------------------

def xilinx_version() -> tuple[int, int] | None:
    """(year, minor) parsed from XILINX_VIVADO the way finn-plus does, or None."""
    match = re.search(r"\b(20\d{2})\.(1|2)\b", os.environ.get("XILINX_VIVADO", ""))
    return (int(match.group(1)), int(match.group(2))) if match else None


def _hls_tool() -> str:
    """The HLS executable finn-plus calls for the Vivado version in XILINX_VIVADO."""
    version = xilinx_version()
    return "vitis-run" if version is not None and version > (2024, 2) else "vitis_hls"


def _find_executable(name: str) -> str | None:
    """Path of a Xilinx tool as finn's `resolve_xilinx_tool` resolves it, or None."""
    override = os.environ.get(_TOOL_DIR_OVERRIDE)
    if override:
        path = Path(override) / name
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(name)


def finn_deps_dir() -> Path:
    """FINN_DEPS as finn-plus resolves it: the environment variable, else `<finn>/finn_deps`."""
    if os.environ.get("FINN_DEPS"):
        return Path(os.environ["FINN_DEPS"]).expanduser()
    from finn.interface.settings import FINN_ROOT

    return FINN_ROOT / "finn_deps"


@lru_cache(maxsize=1)
def _dependency_definitions() -> dict:
    import finn.interface
    import yaml

    path = Path(finn.interface.__file__).parent / "external_dependencies.yaml"
    data = yaml.safe_load(path.read_text())
    return {name: spec for group in data.values() for name, spec in group.items()}


def finn_dependency(name: str) -> dict:
    """finn-plus's definition of an external dependency (url, commit, ...) by its name."""
    definitions = _dependency_definitions()
    if name not in definitions:
        raise KeyError(f"finn-plus defines no external dependency {name!r}; it defines: "
                       f"{', '.join(definitions)}")
    return definitions[name]


def board_files_dir(board) -> Path | None:
    """Where finn-plus expects the board files of `board` (None: they come with Vivado)."""
    entry = _BOARD_FILES.get(_board(board).name)
    return None if entry is None else finn_deps_dir() / "board_files" / entry[1]


def _board(board) -> Board:
    from hw.boards import Board, get_board

    return board if isinstance(board, Board) else get_board(board)


# --- requirements -------------------------------------------------------------------------------

def _version_text(tool: str) -> str:
    return f"{tool} {'/'.join(FINN_PLUS_XILINX_VERSIONS)}"


def _check_xilinx_env() -> MissingTool | None:
    value = os.environ.get("XILINX_VIVADO")
    what = _version_text("Vivado")
    if not value:
        return MissingTool("XILINX_VIVADO", what, "not set (source Vivado's settings64.sh)", ())
    if xilinx_version() is None:
        return MissingTool("XILINX_VIVADO", what, f"{value} names no version such as 2024.2, "
                           "which finn-plus reads from this path", ())
    return None


def _check_executable(name: str, what: str) -> MissingTool | None:
    if _find_executable(name) is not None:
        return None
    where = os.environ.get(_TOOL_DIR_OVERRIDE)
    reason = f"not in {_TOOL_DIR_OVERRIDE}={where}" if where else "not on PATH"
    return MissingTool(name, what, reason, ())


def _check_hls_tool() -> MissingTool | None:
    tool = _hls_tool()
    what = ("Vitis 2025.1 or later (replaces vitis_hls)" if tool == "vitis-run"
            else _version_text("Vitis HLS"))
    return _check_executable(tool, what)


def _check_dependency_dir(name: str, path: Path, marker: str) -> MissingTool | None:
    spec = finn_dependency(name)
    pin = f"commit {spec['commit'][:12]}" if "commit" in spec else str(spec["url"])
    if (path / marker).exists():
        return None
    return MissingTool(name, f"finn-plus dependency, {pin}", f"not found at {path}", ())


def _check_hlslib() -> MissingTool | None:
    return _check_dependency_dir("finn-hlslib", finn_deps_dir() / "finn-hlslib", "bnn-library.h")


def _check_nlohmann_json() -> MissingTool | None:
    return _check_dependency_dir("nlohmann-json", finn_deps_dir() / "nlohmann_json" / "json",
                                 "CMakeLists.txt")


def _check_cmake_package() -> MissingTool | None:
    if importlib.util.find_spec("cmake") is not None:
        return None
    return MissingTool("cmake", "Python package, finn-plus dependency >=4.0.3,<4.1",
                       "not installed in this Python environment (finn runs python -m cmake)", ())


def _check_board_files(board: Board) -> MissingTool | None:
    entry = _BOARD_FILES.get(board.name)
    if entry is None:
        return None
    return _check_dependency_dir(entry[0], finn_deps_dir() / "board_files" / entry[1], ".")


def _check_xrt() -> MissingTool | None:
    if os.environ.get("XILINX_XRT"):
        return None
    return MissingTool("XILINX_XRT", "Xilinx Runtime (XRT) for Vitis 2024.2",
                       "not set (source /opt/xilinx/xrt/setup.sh)", ())


def _check_platform(board: Board) -> MissingTool | None:
    roots = [Path(p) for p in os.environ.get("PLATFORM_REPO_PATHS", "").split(os.pathsep) if p]
    if not roots and Path(XRT_MOUNT, "platforms").is_dir():
        roots = [Path(XRT_MOUNT, "platforms")]  # finn-plus's fallback
    if any((root / board.vitis_platform).is_dir() for root in roots):
        return None
    where = os.pathsep.join(map(str, roots)) if roots else "PLATFORM_REPO_PATHS not set"
    return MissingTool(board.vitis_platform, "Vitis platform of the Alveo card",
                       f"not found in {where}", ())


def _requirements(step: str, board: Board) -> list:
    """The checks for one step on one board, in the order they are reported."""
    vivado = partial(_check_executable, "vivado", _version_text("Vivado"))
    if step == "ipgen":
        return [_check_xilinx_env, _check_hls_tool, _check_hlslib]
    if step == "fifo_depths":
        return [_check_xilinx_env, vivado, _check_hls_tool, _check_hlslib,
                partial(_check_executable, "g++", "C++ compiler for the simulation backends"),
                _check_cmake_package, _check_nlohmann_json]
    if step in ("stitch", "synth_ooc"):
        return [_check_xilinx_env, vivado]
    if step == "bitfile":
        common = [_check_xilinx_env, vivado, _check_hls_tool, _check_hlslib]  # IODMAs are HLS
        if board.kind == "alveo":
            return common + [partial(_check_executable, "v++", _version_text("Vitis")),
                             _check_xrt, partial(_check_platform, board)]
        return common + [partial(_check_board_files, board)]
    raise ValueError(f"{step!r} is not a vendor step; they are: {', '.join(VENDOR_STEPS)}")


def missing_tools(step_names: Iterable[str], board) -> list[MissingTool]:
    """What the vendor steps among `step_names` need on `board` (name or record) and is not
    here, each listed once with every step that needs it. Other steps need nothing."""
    board = _board(board)
    found: dict[str, MissingTool] = {}
    for step in step_names:
        if step not in VENDOR_STEPS:
            continue
        for check in _requirements(step, board):
            missing = check()
            if missing is None:
                continue
            known = found.get(missing.name, missing)
            found[missing.name] = MissingTool(known.name, known.version, known.reason,
                                              known.steps + (step,))
    return list(found.values())


# --- messages -----------------------------------------------------------------------------------

# build.py options that a resumed build must repeat (BuildConfig field, option). The fields
# checked on resume (flows.runner._RESUME_FIELDS) are among them.
_REPEATED_OPTIONS = (("bits", "--bits"), ("weights", "--weights"), ("data", "--data"),
                     ("verify_frames", "--verify-frames"), ("seed", "--seed"),
                     ("target_fps", "--target-fps"), ("clock_mhz", "--clock-mhz"),
                     ("folding", "--folding"))


def _container_path(path: Path) -> tuple[str, str]:
    """(host path, path inside the image) for a file the container must see under the same
    name the build recorded: relative paths are relative to the project root there."""
    if path.is_absolute():
        return str(path), str(path)
    return str(Path.cwd() / path), f"{CONTAINER_ROOT}/{path.as_posix()}"


def docker_command(cfg: BuildConfig, from_step: str, until_step: str | None = None) -> str:
    """The `docker run` command that resumes this build at `from_step` in the project's image
    with the host's Xilinx tools mounted.

    The output directory is mounted at its own absolute path: finn records absolute paths of
    generated code and projects in the checkpoints. Input files keep the name the build
    recorded, so the resumed run passes the resume check.
    """
    out = str(Path(cfg.out_dir).resolve())
    mounts = [f"{XILINX_MOUNT}:{XILINX_MOUNT}", f"{out}:{out}"]
    if _board(cfg.board).kind == "alveo":
        mounts.append(f"{XRT_MOUNT}:{XRT_MOUNT}:ro")
    args = ["python", "build.py", "--model", cfg.model, "--board", cfg.board, "--out", out]
    defaults = {f.name: f.default for f in fields(cfg)}
    for name, option in _REPEATED_OPTIONS:
        value = getattr(cfg, name)
        if value is None or value == defaults[name]:
            continue
        if isinstance(value, Path):
            host, inside = _container_path(value)
            mounts.append(f"{host}:{inside}:ro")
        args += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    args += ["--from", from_step]
    if until_step is not None:
        args += ["--until", until_step]
    volumes = [part for mount in mounts for part in ("-v", mount)]
    return shlex.join(["docker", "run", "--rm", *volumes, DOCKER_IMAGE, *args])


def vendor_message(skipped_steps: Iterable[str], board, cfg: BuildConfig,
                   missing: list[MissingTool] | None = None) -> str:
    """One paragraph: which steps were skipped, which tools (and versions) they need and are
    missing here, and the command that finishes the build in the Docker image."""
    skipped = [s for s in skipped_steps if s in VENDOR_STEPS]
    if not skipped:
        return ""
    if missing is None:
        missing = missing_tools(skipped, board)
    board = _board(board)
    steps = ", ".join(f"{s} ({STEP_PURPOSE[s]})" for s in skipped)
    versions = " or ".join(FINN_PLUS_XILINX_VERSIONS)
    tools = "Vivado, Vitis HLS" + (", Vitis (v++) and XRT" if board.kind == "alveo" else "")
    needs = "; ".join(m.describe() for m in missing) or "nothing"
    until = cfg.until_step if cfg.until_step in skipped else None
    return (
        f"Skipped {steps}: these steps need AMD {tools} {versions} (finn-plus 1.6.1 is written "
        f"for these versions; the Docker image expects {IMAGE_XILINX_VERSION}), and here "
        f"{'this is' if len(missing) == 1 else 'these are'} missing: {needs}. The Docker image "
        f"has everything else (finn-hlslib, board files and the Python environment at "
        f"finn-plus's pinned versions); build it once with `docker build -t {DOCKER_IMAGE} .` "
        f"and finish this build there, with Vivado/Vitis {IMAGE_XILINX_VERSION} mounted from "
        f"the host: `{docker_command(cfg, skipped[0], until)}`.")


def plan_vendor_steps(flow: Iterable[str], cfg: BuildConfig) -> VendorPlan:
    """Split the steps of `flow` between cfg.from_step and cfg.until_step into what runs and
    what is skipped for missing vendor tools.

    From the first vendor step whose tools are missing on, every step is skipped (each vendor
    step builds on the one before). A build that asked for a skipped step explicitly
    (`--from` or `--until` naming it) gets `error` instead, and runs nothing.
    """
    from flows.steps import step_range

    names = list(flow)
    start, stop = step_range(names, cfg)
    in_range = names[start:stop + 1]
    blocked = next((s for s in in_range if s in VENDOR_STEPS and missing_tools([s], cfg.board)),
                   None)
    if blocked is None:
        return VendorPlan(tuple(in_range), (), None, "")
    cut = in_range.index(blocked)
    skipped = tuple(in_range[cut:])
    message = vendor_message(skipped, cfg.board, cfg)
    asked = [f"{option} {step}" for option, step in (("--from", cfg.from_step),
                                                     ("--until", cfg.until_step))
             if step in skipped]
    if asked:
        return VendorPlan((), skipped, f"{' and '.join(asked)} cannot run here. {message}",
                          message)
    return VendorPlan(tuple(in_range[:cut]), skipped, None, message)


def require_tools(step: str, cfg: BuildConfig) -> None:
    """Raise ToolchainError (with `vendor_message`) unless everything `step` needs is here."""
    missing = missing_tools([step], cfg.board)
    if missing:
        rest = VENDOR_STEPS[VENDOR_STEPS.index(step):]
        raise ToolchainError(f"{step} cannot run here. "
                             + vendor_message(rest, cfg.board, cfg, missing))


# --- running the tools --------------------------------------------------------------------------

def prepare_vendor_environment() -> None:
    """Set what finn-plus's own command line sets before it runs the tools
    (`finn.interface.run_finn.prepare_finn`): the Xilinx library paths in LD_LIBRARY_PATH for
    the simulators it launches, and XILINX_LOCAL_USER_DATA=no (avoids permission problems with
    the Xilinx Tcl store)."""
    from finn.interface.run_finn import prepend_ld_library_paths, xilinx_ld_library_paths

    prepend_ld_library_paths(xilinx_ld_library_paths())
    os.environ.setdefault("XILINX_LOCAL_USER_DATA", "no")


def vivado_version(log_path: Path) -> str:
    """The first line of `vivado -version` (e.g. "vivado v2024.2 (64-bit)"); the whole output
    goes to `log_path`."""
    vivado = _find_executable("vivado")
    if vivado is None:
        raise ToolchainError("vivado is not on PATH; source Vivado's settings64.sh")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        subprocess.run([vivado, "-version"], check=True, stdout=log, stderr=subprocess.STDOUT,
                       cwd=log_path.parent)
    lines = [line.strip() for line in log_path.read_text().splitlines() if line.strip()]
    return lines[0] if lines else ""
