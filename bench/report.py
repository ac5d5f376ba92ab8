"""Writes the benchmark's results: a Markdown table, a JSON file and PNG plots.

The Markdown and JSON carry every figure (medians over the repeats with their min..max, and
every run with its status and checked outputs) and the ratio of our job to each peer; the
plots need matplotlib (`pip install matplotlib`) and are skipped without it.
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


def _with_spread(value, spread, digits: int = 0) -> str:
    """`median (min..max)`; just the median for one run or no spread."""
    if value is None:
        return "-"
    low, high = (spread or [None, None])[:2]
    if low is None or high is None or low == high:
        return _fmt(value, digits)
    return f"{_fmt(value, digits)} ({_fmt(low, digits)}..{_fmt(high, digits)})"


def _ratio(ours, theirs) -> str:
    if not ours or not theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


def overlaps(a, b) -> bool:
    """Whether two [min, max] ranges overlap: then the difference is within the spread."""
    if not a or not b or None in (*a, *b):
        return False
    return a[0] <= b[1] and b[0] <= a[1]


def _latency_cell(latency: dict | None) -> str:
    if not latency:
        return "-"
    percentiles = " / ".join(_fmt(latency.get(f"p{q}_ms")) for q in (50, 95, 99))
    p99 = latency.get("p99_ms_spread")
    spread = ""
    if p99 and None not in p99 and p99[0] != p99[1]:
        spread = f", p99 {_fmt(p99[0])}..{_fmt(p99[1])}"
    cpu = latency.get("cpu_s_per_1k")
    cost = f", {_fmt(cpu, 3)} CPU s per 1k" if cpu is not None else ""
    return f"{percentiles} (at {_fmt(latency.get('sent_rate'))}/s{spread}{cost})"


def _rate_cells(system: dict) -> list[str]:
    """Steady and whole-run records/s, or the run's status where it has no rates."""
    status = system.get("status", "complete")
    t, spread = system["throughput"], system.get("spread", {})
    if status != "complete":
        return [status, status]
    return [
        _with_spread(t.get("records_per_s"), spread.get("records_per_s")),
        _with_spread(t.get("whole_run_records_per_s"), spread.get("whole_run_records_per_s")),
    ]


def _ours_vs(ours: dict, system: dict) -> str:
    """Ours against it, whole run then steady; "(within spread)" when the whole-run ranges
    of the two overlap, so the difference does not count."""
    key = "whole_run_records_per_s"
    a, b = ours["throughput"], system["throughput"]
    steady = _ratio(a.get("records_per_s"), b.get("records_per_s"))
    text = f"{_ratio(a.get(key), b.get(key))}, {steady}"
    if overlaps(ours.get("spread", {}).get(key), system.get("spread", {}).get(key)):
        text += " (within spread)"
    return text


def _header(results: dict) -> str:
    loads = results.get("loads", [50, 90])
    repeat = results.get("repeat", 1)
    transactions = results["transactions"]
    records = results.get("records", transactions * len(results["types"]))
    text = f"Benchmark of {results['date']} on {results['machine']}: {transactions:,} transactions"
    if "incomplete_transactions" in results:
        text += f" ({results['incomplete_transactions']:,} incomplete)"
    text += f", {records:,} records"
    if "malformed_records" in results:
        text += f" ({results['malformed_records']:,} malformed)"
    text += " pre-loaded per run"
    if "timeout_s" in results:
        text += f"; timeout {results['timeout_s']:g} s"
        if "out_of_orderness_s" in results:
            text += (
                f", out-of-orderness {results['out_of_orderness_s']:g} s, expiry grace "
                f"{results['expiry_grace_s']:g} s"
            )
    text += (
        f"; {repeat} run{'s' if repeat != 1 else ''} per system"
        + (", median (min..max)" if repeat > 1 else "")
        + "; "
    )
    if loads:
        text += (
            f"latency with records sent at {' and '.join(f'{x}%' for x in loads)} of each "
            "system's own maximum rate."
        )
    else:
        text += "no latency runs."
    return text


def _runs_table(systems: list[dict]) -> list[str]:
    """Every run: its status and what its outputs were, checked against the workload."""
    rows = []
    for s in systems:
        for run in s.get("runs", []):
            check = run.get("check")
            letters = run.get("dead_letters")
            outputs = f"{run.get('outputs', 0):,} of {run.get('expected_outputs', 0):,}"
            checked = "count only"
            if check:
                checked = f"{check['complete']:,} complete, {check['expired']:,} expired"
                if not check.get("ok"):
                    checked += " (" + "; ".join(check.get("examples", [])[:2]) + ")"
            dead = "-"
            if letters:
                dead = f"{letters['count']:,} of {letters['expected']:,}"
            rows.append(
                f"| {s['name']} | {run.get('run', 1)} | {run.get('status', '-')} | {outputs} | "
                f"{checked} | {dead} | "
                f"{_fmt(run['throughput'].get('whole_run_records_per_s'))} | "
                f"{_fmt(run['throughput'].get('whole_run_s'), 1)} |"
            )
    if not rows:
        return []
    return [
        "",
        "| system | run | status | outputs | outputs checked | dead letters | "
        "records/s whole run | whole run s |",
        "|---|---:|---|---:|---|---:|---:|---:|",
        *rows,
    ]


def markdown(results: dict) -> str:
    systems = results["systems"]
    ours = systems[0]
    loads = results.get("loads", [50, 90])
    lines = [
        _header(results),
        "",
        "| system | records/s steady | records/s whole run | start to first output s | "
        "CPU s per 1k records | of which task processes | "
        + "".join(f"latency p50 / p95 / p99 ms at {x}% | " for x in loads)
        + "ours vs it (whole run, steady) |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(loads) + "---:|",
    ]
    for s in systems:
        t = s["throughput"]
        cells = [
            s["name"],
            *_rate_cells(s),
            _with_spread(t.get("first_output_s"), s.get("spread", {}).get("first_output_s"), 1),
            *(
                _with_spread(t.get(key), s.get("spread", {}).get(key), 3)
                for key in ("whole_run_cpu_s_per_1k", "whole_run_task_cpu_s_per_1k")
            ),
            *(_latency_cell(s["latency"].get(str(x))) for x in loads),
            "-" if s is ours else _ours_vs(ours, s),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _runs_table(systems)
    if results.get("in_flight"):
        lines += [
            "",
            "| system | transactions in flight | TaskManager RSS MB (idle before) | "
            "checkpoint state MB | "
            "bytes of state per transaction | checkpoint ms (sync part) | longest checkpoint ms "
            "| drain s | RSS MB after all closed | state MB after |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in results["in_flight"]:
            lines.append(
                f"| {row['system']} | {row['transactions']:,} | "
                f"{_fmt(row['rss_mb'])} ({_fmt(row.get('idle_rss_mb'))}) | "
                f"{_fmt(row['state_mb'], 1)} | "
                f"{_fmt(row['state_bytes_per_tx'])} | {_fmt(row.get('checkpoint_ms'))} "
                f"({_fmt(row.get('checkpoint_sync_ms'))}) | {_fmt(row.get('checkpoint_max_ms'))} | "
                f"{_fmt(row.get('drain_s'), 1)} | {_fmt(row['rss_after_mb'])} | "
                f"{_fmt(row['state_after_mb'], 1)} |"
            )
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
    ax.set(
        xlabel="seconds since the start command",
        ylabel="input records/s (from visible outputs)",
        title="Throughput (the median run of each system)",
    )
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
