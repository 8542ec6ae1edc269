"""Wall time of `build.py` to estimates (and to code generation) per model and board.

Runs each build in a fresh process, as a user would, into a temporary directory, and reports
the total wall time and the time of each step (from report/steps.json), with the estimated
frame rate and LUTs. Default verification frames (24).

    ./run python benchmarks/bench_build.py [--json benchmarks/results/build_times.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
CASES = (("bacalhaunet", "pynq-z2"), ("vgg10-w4a4-32", "zcu104"), ("vgg10", "zcu104"))


def run_case(model: str, board: str, until: str, workdir: Path) -> dict:
    out = workdir / f"{model}_{board}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "build.py"), "--model", model, "--board",
                           board, "--until", until, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"model": model, "board": board, "until": until, "wall_s": round(wall, 1),
                "error": proc.stderr.strip().splitlines()[-1]}
    steps = json.loads((out / "report" / "steps.json").read_text())
    est = json.loads((out / "report" / "estimates.json").read_text())
    return {"model": model, "board": board, "until": until, "wall_s": round(wall, 1),
            "steps_s": {s["step"]: s["seconds"] for s in steps},
            "throughput_fps": round(est["throughput_fps"]), "lut": est["total"]["lut"],
            "fits": est["fits"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--until", default="estimate", choices=("estimate", "codegen"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_case(m, b, args.until, Path(tmp)) for m, b in CASES]
    table = Table(title=f"build.py --until {args.until} (wall time, fresh process each)")
    for col in ("model", "board", "wall s", "streamline s", "verify+steps s", "est. fps",
                "LUT", "fits"):
        table.add_column(col)
    for r in results:
        if "error" in r:
            table.add_row(r["model"], r["board"], str(r["wall_s"]), "-", "-", "-", "-",
                          r["error"])
            continue
        table.add_row(r["model"], r["board"], f"{r['wall_s']:.1f}",
                      f"{r['steps_s'].get('streamline', 0):.1f}",
                      f"{sum(r['steps_s'].values()):.1f}", f"{r['throughput_fps']:,}",
                      f"{r['lut']:,.0f}", str(r["fits"]))
    Console().print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
