"""Build configuration: JSON round trip, unknown keys rejected, derived values."""

import json
from pathlib import Path

import pytest

from flows.config import BuildConfig
from flows.errors import ToolchainError


def test_round_trip(tmp_path):
    cfg = BuildConfig(model="vgg10", board="zcu104", out_dir=tmp_path / "o", bits=4,
                      weights=Path("w.pt"), seed=3, until_step="build_model")
    cfg.save(tmp_path / "c.json")
    assert BuildConfig.load(tmp_path / "c.json") == cfg


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "vgg10", "board": "zcu104", "out_dir": "o",
                                "bitz": 4}))
    with pytest.raises(ToolchainError, match="bitz"):
        BuildConfig.load(path)


def test_not_json_is_an_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("model = vgg10")
    with pytest.raises(ToolchainError, match="c.json.*JSON"):
        BuildConfig.load(path)


def test_derived_values_come_from_the_records(tmp_path):
    cfg = BuildConfig(model="vgg10", board="pynq-z2", out_dir=tmp_path)
    assert cfg.fpga_part == "xc7z020clg400-1"
    assert cfg.intermediate_dir == tmp_path / "intermediate"
