"""The deploy step: the package DIR/deploy/ written after codegen from the final graph."""

import json
import subprocess
import sys

import numpy as np
import pytest

from flows.presets import CODEGEN, DEPLOY, FULL
from flows.vendor_steps import VENDOR_STEPS


@pytest.fixture(scope="module")
def built(bacalhaunet_build):
    return bacalhaunet_build


def test_deploy_follows_codegen_and_precedes_the_vendor_steps():
    assert DEPLOY == CODEGEN + ("deploy",) and FULL == DEPLOY + VENDOR_STEPS


def test_io_description_comes_from_the_final_graph(built):
    io = json.loads((built / "deploy" / "io.json").read_text())
    assert io["model"] == "bacalhaunet" and io["board_kind"] == "zynq"
    assert io["software"] == [{"op": "Transpose", "perm": [0, 2, 3, 1]}]
    # the 8-bit input quantizer is the accelerator's first layer: FLOAT32 goes over the DMA
    assert io["input"]["datatype"] == "FLOAT32"
    assert io["input"]["normal_shape"] == [1, 1, 1024, 2]
    assert io["input"]["folded_shape"][-1] * 4 == io["input"]["packed_shape"][-1]
    q = io["input_quantizer"]
    assert q["where"] == "hardware" and q["datatype"] == "INT8" and q["range_int"] == [-128, 127]
    assert q["scale"] > 0 and q["max_threshold_error"] < 1e-3  # a uniform quantizer
    assert io["output"]["datatype"].startswith("UINT") and io["output"]["kind"] == "class_index"
    assert len(io["class_names"]) == 24 and io["frame_shape"] == [2, 1024]
    assert io["files"]["bitfile"] is None and set(io["sha256"]) == {"dataflow.onnx",
                                                                    "testset.npz"}


def test_package_is_self_contained_and_runs_outside_the_project(built, tmp_path):
    deploy = built / "deploy"
    testset = np.load(deploy / "testset.npz")
    assert testset["x"].shape == (12, 2, 1024) and len(testset["golden_class"]) == 12
    readme = (deploy / "README.md").read_text()
    assert "python3 -m hw.driver --deploy . --data testset.npz" in readme
    # the package's own copy of the driver, from inside the package, without the project
    result = subprocess.run([sys.executable, "-m", "hw.driver", "--deploy", ".", "--data",
                             "testset.npz", "--backend", "emulate", "--out", str(tmp_path / "r"),
                             "--no-progress"], cwd=deploy, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "classes equal to the golden model's: 12/12" in result.stdout
    assert (tmp_path / "r" / "driver_report.json").exists()


def test_bitfiles_join_the_package(built, tmp_path):
    import dataclasses
    import shutil

    from flows.config import BuildConfig
    from flows.deploy_steps import add_bitfiles_to_package
    from hw.driver import DeployPackage

    out = tmp_path / "out"
    shutil.copytree(built / "deploy", out / "deploy")
    cfg = dataclasses.replace(BuildConfig.load(built / "build_config.json"), out_dir=out)
    xclbin = tmp_path / "finn-accel-0.xclbin"
    xclbin.write_bytes(b"xclbin")
    add_bitfiles_to_package(cfg, [xclbin])
    package = DeployPackage(out / "deploy")
    assert package.files["xclbin"] == "finn-accel-0.xclbin"
    assert package.check_file("xclbin").read_bytes() == b"xclbin"
    assert "present" in (out / "deploy" / "README.md").read_text()
