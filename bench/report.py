"""Writes the benchmark's results: a Markdown table, a JSON file and PNG plots.

The Markdown and JSON carry every figure and the ratio of our job to each peer; the plots
need matplotlib (`pip install matplotlib`) and are skipped without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path


def machine() -> str:
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores, {memory_gb:.0f} GB RAM, {platform.system()} {platform.machine()}"
    )


def _fmt(value, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(ours, theirs) -> str:
    if not ours or not theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


def _latency_cell(latency: dict | None) -> str:
    if not latency:
        return "-"
    percentiles = " / ".join(_fmt(latency.get(f"p{q}_ms")) for q in (50, 95, 99))
    return f"{percentiles} (at {_fmt(latency.get('sent_rate'))}/s)"


def markdown(results: dict) -> str:
    systems = results["systems"]
    ours = systems[0]["throughput"]
    loads = results.get("loads", [50, 90])
    lines = [
        f"Benchmark of {results['date']} on {results['machine']}: {results['transactions']:,} "
        f"transactions ({results['transactions'] * len(results['types']):,} records) "
        f"pre-loaded per system; "
        + (
            f"latency with records sent at {' and '.join(f'{x}%' for x in loads)} of each "
            "system's own maximum rate."
            if loads
            else "no latency runs."
        ),
        "",
        "| system | records/s steady | records/s whole run | CPU s per 1k records | "
        + " | ".join(f"latency p50 / p95 / p99 ms at {x}%" for x in loads)
        + " | ours vs it (steady, whole run) |",
        "|---|---:|---:|---:|" + "---:|" * len(loads) + "---:|",
    ]
    for s in systems:
        t = s["throughput"]
        ratio = "-"
        if s is not systems[0]:
            ratio = (
                f"{_ratio(ours['records_per_s'], t['records_per_s'])}, "
                f"{_ratio(ours['whole_run_records_per_s'], t['whole_run_records_per_s'])}"
            )
        cells = [
            s["name"],
            _fmt(t["records_per_s"]),
            _fmt(t["whole_run_records_per_s"]),
            _fmt(t["whole_run_cpu_s_per_1k"], 3),
            *(_latency_cell(s["latency"].get(str(x))) for x in loads),
            ratio,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if results.get("in_flight"):
        lines += [
            "",
            "| transactions in flight | TaskManager RSS MB | checkpoint state MB | "
            "bytes of state per transaction | RSS MB after all closed | state MB after |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["in_flight"]:
            lines.append(
                f"| {row['transactions']:,} | {_fmt(row['rss_mb'])} | "
                f"{_fmt(row['state_mb'], 1)} | {_fmt(row['state_bytes_per_tx'])} | "
                f"{_fmt(row['rss_after_mb'])} | {_fmt(row['state_after_mb'], 1)} |"
            )
        lines.append(f"\nIdle TaskManagers before: {_fmt(results['idle_rss_mb'])} MB RSS.")
    return "\n".join(lines) + "\n"


def write(results: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    written[0].write_text(json.dumps(results, indent=2))
    written[1].write_text(markdown(results))
    with contextlib.suppress(ImportError):  # plots are optional
        written += _plots(results, out)
    return written


def _plots(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for s in results["systems"]:
        points = s["timeline"]
        ax.plot([p[0] for p in points], [p[1] for p in points], label=s["name"])
    ax.set(xlabel="seconds since start", ylabel="input records/s", title="Throughput")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)

    loads = [str(x) for x in results.get("loads", [50, 90])]
    if not loads:  # `--loads ''`: throughput only
        return [out / "throughput.png"]
    fig, axes = plt.subplots(1, len(loads), figsize=(5 * len(loads), 4.5), squeeze=False)
    names = [s["name"] for s in results["systems"]]
    for ax, load in zip(axes[0], loads, strict=True):
        for i, q in enumerate((50, 95, 99)):
            values = [_latency(s, load, q) for s in results["systems"]]
            ax.bar([x + i * 0.27 for x in range(len(names))], values, width=0.27, label=f"p{q}")
        ax.set_xticks([x + 0.27 for x in range(len(names))], names, rotation=20, ha="right")
        ax.set(title=f"Completion latency at {load}% of max rate", ylabel="ms")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    return [out / "throughput.png", out / "latency.png"]


def _latency(system: dict, load: str, q: int) -> float:
    return (system["latency"].get(load) or {}).get(f"p{q}_ms") or 0
