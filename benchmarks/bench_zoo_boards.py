"""Every zoo model for every Zynq board: `build.py --until estimate` in a fresh process each,
and a model x board table of estimated frames/s, latency, LUT/BRAM18/DSP, whether it fits, and
the model's accuracy on the synthetic test split (from its shipped checkpoint's metadata).

    ./run python benchmarks/bench_zoo_boards.py [--json benchmarks/results/zoo_boards.json]
        [--markdown benchmarks/results/zoo_boards.md] [--models M ...] [--boards B ...]

A model that FINN cannot map, or that fits no folding on a board, gets the build's own error
message in the table instead of figures; a model whose build fails for another reason than
fitting is not built again for the other boards (same graph, same failure). `--resume` keeps
the records already in the JSON file and builds only the rest. Verification runs on 8 frames per build here (the
default build uses 24); every graph step is still compared with the golden model.
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
sys.path.insert(0, str(ROOT))
VERIFY_FRAMES = 8


def zynq_boards() -> list[str]:
    from hw.boards import BOARDS

    return [name for name, board in BOARDS.items() if board.kind == "zynq"]


def shipped_accuracy(model: str) -> float | None:
    """Test-split accuracy recorded in the model's shipped checkpoint, or None (untrained)."""
    from models.checkpoints import read_checkpoint_file, shipped_checkpoint

    path = shipped_checkpoint(model)
    if path is None:
        return None
    evaluation = read_checkpoint_file(path).get("evaluation") or {}
    return evaluation.get("accuracy")


def run_case(model: str, board: str, workdir: Path) -> dict:
    out = workdir / f"{model}_{board}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "build.py"), "--model", model, "--board",
                           board, "--until", "estimate", "--out", str(out),
                           "--verify-frames", str(VERIFY_FRAMES)],
                          cwd=ROOT, capture_output=True, text=True)
    record = {"model": model, "board": board, "wall_s": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        text = " ".join((proc.stdout + proc.stderr).split())
        cut = text.rfind("error:")
        record["error"] = text[cut:cut + 400] if cut >= 0 else text[-400:]
        return record
    est = json.loads((out / "report" / "estimates.json").read_text())
    software = json.loads((out / "report" / "partition.json").read_text())["software_nodes"]
    record.update(throughput_fps=round(est["throughput_fps"]), latency_us=est["latency_us"],
                  lut=round(est["total"]["lut"]), bram18=est["total"]["bram18"],
                  uram=est["total"]["uram"], dsp=est["total"]["dsp"], fits=est["fits"],
                  utilisation_max=max(json.loads((out / "report" / "folding_search.json")
                                                 .read_text())[-1]["utilisation"].values()),
                  software_nodes=[n["op_type"] for n in software])
    return record


def markdown(results: list[dict], accuracy: dict[str, float | None]) -> str:
    rows = ["| model | board | est. frames/s | latency (µs) | LUT | BRAM18 | URAM | DSP | fits | "
            "synthetic test acc. (%) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        acc = accuracy.get(r["model"])
        acc_text = f"{100 * acc:.1f}" if acc is not None else "untrained"
        if "error" in r:
            rows.append(f"| {r['model']} | {r['board']} | {r['error'][:160]} |  |  |  |  |  | "
                        f"no | {acc_text} |")
            continue
        rows.append(f"| {r['model']} | {r['board']} | {r['throughput_fps']:,} | "
                    f"{r['latency_us']:,.0f} | {r['lut']:,} | {r['bram18']} | "
                    f"{r.get('uram', 0)} | {r['dsp']} | "  # records before URAM weights: 0
                    f"{'yes' if r['fits'] else 'no'} | {acc_text} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    from models.registry import model_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--boards", nargs="*", default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--resume", action="store_true",
                        help="keep the records already in --json, build the rest")
    args = parser.parse_args()
    models = args.models or model_names()
    boards = args.boards or zynq_boards()
    accuracy = {m: shipped_accuracy(m) for m in models}
    done = {}
    if args.resume and args.json and args.json.exists():
        done = {(r["model"], r["board"]): r for r in json.loads(args.json.read_text())}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            unmappable = None
            for board in boards:
                if (model, board) in done:
                    results.append(done[(model, board)])
                elif unmappable is not None:
                    results.append({"model": model, "board": board, "wall_s": 0.0,
                                    "error": f"not built: same graph as on {unmappable['board']}"
                                             f", which failed with {unmappable['error']}"})
                else:
                    results.append(run_case(model, board, Path(tmp)))
                r = results[-1]
                if "error" in r and "does not fit" not in r["error"] and unmappable is None:
                    unmappable = r
                print(f"{model} {board}: " + (r["error"][:120] if "error" in r else
                      f"{r['throughput_fps']:,} fps, {r['lut']:,} LUT, fits {r['fits']}"),
                      flush=True)
                if args.json:  # keep what is done if the run is cut short
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(results, indent=2) + "\n")
    table = Table(title="build.py --until estimate per model and Zynq board")
    for col in ("model", "board", "fps", "latency us", "LUT", "BRAM18", "DSP", "fits", "acc %"):
        table.add_column(col)
    for r in results:
        acc = accuracy.get(r["model"])
        acc_text = f"{100 * acc:.1f}" if acc is not None else "untrained"
        if "error" in r:
            table.add_row(r["model"], r["board"], r["error"][:60], "", "", "", "", "no", acc_text)
        else:
            table.add_row(r["model"], r["board"], f"{r['throughput_fps']:,}",
                          f"{r['latency_us']:,.0f}", f"{r['lut']:,}", str(r["bram18"]),
                          str(r["dsp"]), "yes" if r["fits"] else "no", acc_text)
    Console(width=160).print(table)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(results, accuracy))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
