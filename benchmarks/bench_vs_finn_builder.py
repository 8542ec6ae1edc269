"""Wall time to estimates: this toolchain's `build.py` against finn-plus's own estimate-only
builder (`finn.builder`, `estimate_only_dataflow_steps`), side by side, on the same models,
boards and frame-rate targets, each in a fresh process as a user runs it.

    ./run python benchmarks/bench_vs_finn_builder.py [--json benchmarks/results/vs_finn_builder.json]

finn-plus's builder starts from a QONNX file: it gets the one `build.py` exported, so its time
excludes the Brevitas export and the cost report that `build.py` also does (both times are in
the results). `build.py --onnx` on that same file is timed too: the same input as the builder
(the QONNX graph is then the golden model; the cost report is still made). What each side
produces also differs: `build.py` verifies every step against the golden model (24 frames; in a
second process while the next step runs, `flows/background.py`, like the cost report), and
reaches the target frame rate where the builder's folding does not; the builder runs no
verification here (its verification needs frames and expected outputs it is given, and
rtlsim/cppsim steps need Vivado). Both run on this machine's two cores: build.py uses both,
the builder one.

finn-plus's builder module imports `finn.xsi` (Vivado's simulator bindings) at import time and
reads `XILINX_VIVADO` before any step, both of which fail without Vivado although the
estimate-only steps never use it: the child process binds a placeholder for that one name and
points `XILINX_VIVADO` at a directory that does not exist, and the results say so.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CASES = (("bacalhaunet", "pynq-z2"), ("vgg10-w4a4-32", "zcu104"), ("vgg10", "zcu104"))


def run_ours(model: str, board: str, workdir: Path, onnx: str | None = None) -> dict:
    """`build.py --model` (or, with `onnx`, `build.py --onnx` on that QONNX file: the
    builder's input) to estimates."""
    out = workdir / (f"{model}_{board}" if onnx is None else f"onnx_{board}")
    source = ["--model", model] if onnx is None else ["--onnx", onnx]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "build.py"), *source, "--board",
                           board, "--until", "estimate", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"wall_s": round(wall, 1), "error": proc.stderr.strip().splitlines()[-1]}
    steps = {s["step"]: s["seconds"] for s in
             json.loads((out / "report" / "steps.json").read_text())}
    est = json.loads((out / "report" / "estimates.json").read_text())
    verified = json.loads((out / "report" / "verification.json").read_text())
    return {"wall_s": round(wall, 1),
            "export_s": round(steps.get("export_qonnx", steps.get("import_onnx", 0)), 1),
            "qonnx": str(out / "intermediate" / "02_export_qonnx.onnx"),
            "target_fps": est["target_fps"] or json.loads(
                (out / "report" / "folding_search.json").read_text())[0]["target_fps"],
            "clock_mhz": est["clock_mhz"], "fpga_part": est["fpga_part"],
            "throughput_fps": round(est["throughput_fps"]), "lut": est["total"]["lut"],
            "fits": est["fits"], "steps_verified": len(verified)}


def run_finn_builder(qonnx: str, fpga_part: str, clock_mhz: float, target_fps: float,
                     workdir: Path) -> dict:
    out = workdir / "finn_builder"
    # a Vivado path that does not exist: the builder reads the variable (and a version from it)
    # before any step; the estimate-only steps never run a Vivado tool
    env = dict(os.environ, FINN_BUILD_DIR=str(workdir / "finn_tmp"), NUM_DEFAULT_WORKERS="1",
               XILINX_VIVADO=str(workdir / "no-vivado" / "Vivado" / "2024.2"))
    (workdir / "finn_tmp").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", qonnx, str(out), fpga_part,
                           str(clock_mhz), str(target_fps)],
                          cwd=workdir, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    result_file = out.with_name("finn_builder_result.json")
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    if proc.returncode != 0 or result is None or "error" in result:
        error = (result or {}).get("error") or (lines[-1] if lines else f"exit {proc.returncode}")
        return {"wall_s": round(wall, 1), "error": error[:300]}
    return {"wall_s": round(wall, 1), **result}


def child(qonnx: str, out: str, fpga_part: str, clock_mhz: str, target_fps: str) -> int:
    """Run finn-plus's estimate-only builder on `qonnx`; write the result next to `out` (the
    builder redirects stdout into its log)."""
    result_file = Path(out).with_name("finn_builder_result.json")

    def report(result: dict) -> int:
        result_file.write_text(json.dumps(result) + "\n")
        return 0

    from hw.finn_env import configure_finn

    configure_finn(os.environ["FINN_BUILD_DIR"])
    import finn.xsi

    finn.xsi.SimEngine = None  # placeholder: see the module docstring
    import finn.builder.build_dataflow as build
    import finn.builder.build_dataflow_config as build_cfg

    cfg = build_cfg.DataflowBuildConfig(
        output_dir=out, synth_clk_period_ns=1000.0 / float(clock_mhz),
        target_fps=int(float(target_fps)), fpga_part=fpga_part,
        steps=build_cfg.estimate_only_dataflow_steps,
        generate_outputs=[build_cfg.DataflowOutputType.ESTIMATE_REPORTS])
    try:
        code = build.build_dataflow_cfg(qonnx, cfg)
    except Exception as exc:  # noqa: BLE001  (report whatever the builder raises)
        return report({"error": f"{type(exc).__name__}: {exc}"})
    perf = Path(out) / "report" / "estimate_network_performance.json"
    res = Path(out) / "report" / "estimate_layer_resources.json"
    if code != 0 or not perf.exists():
        log = Path(out) / "build_dataflow.log"
        tail = log.read_text().strip().splitlines()[-1] if log.exists() else f"exit {code}"
        return report({"error": f"builder failed: {tail}"})
    perf_d = json.loads(perf.read_text())
    total = json.loads(res.read_text()).get("total", {})
    return report({"throughput_fps": round(perf_d["estimated_throughput_fps"]),
                   "lut": total.get("LUT"), "xsi_placeholder": True})


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(*sys.argv[2:7])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, board in CASES:
            work = Path(tmp) / f"{model}_{board}"
            work.mkdir()
            ours = run_ours(model, board, work)
            missing = {"error": "no QONNX export to start from"}
            theirs = missing if "error" in ours else run_finn_builder(
                ours["qonnx"], ours["fpga_part"], ours["clock_mhz"], ours["target_fps"], work)
            same_input = missing if "error" in ours else run_ours(model, board, work,
                                                                  onnx=ours["qonnx"])
            ours.pop("qonnx", None)
            same_input.pop("qonnx", None)
            results.append({"model": model, "board": board, "build_py": ours,
                            "build_py_onnx": same_input, "finn_builder": theirs})
    table = Table(title="wall time to estimates, fresh process each (s)")
    for col in ("model", "board", "build.py s", "of which export s", "build.py fps",
                "build.py --onnx s", "finn builder s", "finn builder fps / error"):
        table.add_column(col)
    for r in results:
        ours, theirs = r["build_py"], r["finn_builder"]
        table.add_row(r["model"], r["board"], f"{ours['wall_s']:.1f}",
                      str(ours.get("export_s", "-")),
                      f"{ours['throughput_fps']:,}" if "throughput_fps" in ours else ours["error"],
                      str(r["build_py_onnx"].get("wall_s", "-")),
                      str(theirs.get("wall_s", "-")),
                      f"{theirs['throughput_fps']:,}" if "throughput_fps" in theirs
                      else theirs["error"])
    Console(width=160).print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
