"""The estimate report: FINN's analytical per-layer resources and cycles, against the board."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from flows.fileio import atomic_path, atomic_write_text
from hw.folding import utilisation

NOTE = ("FINN analytical estimates, not synthesis results; FINN's LUT estimates run high "
        "(about 1.9x the post-synthesis figure on its own VGG10 example).")


def estimate_report(model, cfg) -> dict:
    """Per-layer and total resources and cycles, frame rate, latency and utilisation."""
    from hw import finn_flow as ff

    clock = cfg.effective_clock_mhz
    est = ff.estimates(model, cfg.fpga_part, clock)
    used, fits = utilisation(est["total"], cfg.board_record, cfg.max_utilisation)
    return {
        "model": cfg.model, "board": cfg.board, "fpga_part": cfg.fpga_part,
        "clock_mhz": clock, "target_fps": cfg.target_fps,
        "throughput_fps": est["throughput_fps"], "bottleneck": est["bottleneck"],
        "bottleneck_cycles": est["max_cycles"], "latency_cycles": est["latency_cycles"],
        "latency_us": est["latency_cycles"] / clock,
        "total": est["total"], "utilisation": used, "max_utilisation": cfg.max_utilisation,
        "fits": fits, "layers": est["layers"], "note": NOTE,
    }


def write_estimate_report(report: dict, cfg) -> None:
    """`estimates.json`, `estimates.md`, `estimates.png` in the report directory; prints it."""
    out = cfg.report_dir
    atomic_write_text(out / "estimates.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "estimates.md", markdown(report))
    plot(report, out / "estimates.png")
    Console(stderr=True).print(table(report))


def _summary(report: dict) -> str:
    t, u = report["total"], report["utilisation"]
    return (f"{report['model']} on {report['board']} at {report['clock_mhz']:g} MHz: "
            f"{report['throughput_fps']:,.0f} frames/s, latency {report['latency_us']:,.1f} us; "
            f"LUT {t['lut']:,.0f} ({u['lut']:.0%}), BRAM18 {t['bram18']} ({u['bram18']:.0%}), "
            f"URAM {t['uram']} ({u['uram']:.0%}), DSP {t['dsp']} ({u['dsp']:.0%}); "
            f"fits: {'yes' if report['fits'] else 'no'}")


def markdown(report: dict) -> str:
    lines = [f"# Estimates: {_summary(report)}", "", report["note"], "",
             "| layer | op | PE | SIMD | cycles | LUT | BRAM18 | URAM | DSP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["layers"]:
        lines.append(f"| {r['name']} | {r['op_type']} | {r['pe'] or '-'} | {r['simd'] or '-'} "
                     f"| {r['cycles']} | {r['lut']:.0f} | {r['bram18']} | {r['uram']} "
                     f"| {r['dsp']} |")
    t = report["total"]
    lines.append(f"| total | | | | {report['bottleneck_cycles']} (max) | {t['lut']:.0f} "
                 f"| {t['bram18']} | {t['uram']} | {t['dsp']} |")
    return "\n".join(lines) + "\n"


def table(report: dict) -> Table:
    tab = Table(title=_summary(report), caption=report["note"])
    for col in ("layer", "PE", "SIMD", "cycles", "LUT", "BRAM18", "URAM", "DSP"):
        tab.add_column(col, justify="left" if col == "layer" else "right")
    for r in report["layers"]:
        style = "bold red" if r["name"] == report["bottleneck"] else None
        tab.add_row(r["name"], str(r["pe"] or "-"), str(r["simd"] or "-"), str(r["cycles"]),
                    f"{r['lut']:.0f}", str(r["bram18"]), str(r["uram"]), str(r["dsp"]),
                    style=style)
    return tab


def plot(report: dict, path) -> None:
    """Cycles and LUTs per layer, bottleneck highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report["layers"]
    names = [r["name"] for r in layers]
    colors = ["tab:red" if n == report["bottleneck"] else "tab:blue" for n in names]
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.35 * len(names)), 10), sharex=True)
    axes[0].bar(names, [r["cycles"] for r in layers], color=colors)
    axes[0].set_ylabel("cycles / frame")
    axes[1].bar(names, [r["lut"] for r in layers], color=colors)
    axes[1].set_ylabel("LUT (estimate)")
    axes[2].bar(names, [r["bram18"] for r in layers], label="BRAM18", color="tab:green")
    axes[2].bar(names, [r["dsp"] for r in layers], bottom=[r["bram18"] for r in layers],
                label="DSP", color="tab:orange")
    axes[2].set_ylabel("BRAM18 + DSP")
    axes[2].legend()
    axes[2].tick_params(axis="x", rotation=90)
    fig.suptitle(_summary(report), fontsize=9)
    # margins from the longest layer name (rotated tick labels, about 0.085 in a character at
    # the default 10 pt) instead of tight_layout, which draws the figure twice to measure it
    height = fig.get_figheight()
    longest = max((len(n) for n in names), default=1)
    fig.subplots_adjust(left=0.9 / fig.get_figwidth(), right=0.98, top=1 - 0.5 / height,
                        bottom=(0.3 + 0.085 * longest) / height, hspace=0.08)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
