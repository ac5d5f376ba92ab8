"""Turns what the watcher saw into the benchmark's figures. Pure functions, no I/O.

Every system is measured on the same clock: outputs visible to a `read_committed` consumer
(aggregates and partials), from the moment its start command is issued. Input records done
are inferred from outputs (`records * outputs / expected`), never from a system's own
metrics, so exactly-once output that shows only at checkpoints counts when it shows.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from bench.watch import Sample


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    return {
        "count": len(latencies_ms),
        **{f"p{q}_ms": percentile(latencies_ms, q) for q in (50, 95, 99)},
        "max_ms": max(latencies_ms, default=None),
    }


def records_done(sample: Sample, records: int, expected_outputs: int) -> float:
    """Input records its visible outputs account for, all outputs weighing the same."""
    return sample.outputs * records / expected_outputs if expected_outputs else 0.0


def steady_window(
    samples: Sequence[Sample], expected_outputs: int, min_span_s: float = 0.0
) -> tuple[Sample, Sample] | None:
    """The first samples with 10% and with 90% of the expected outputs visible: start-up
    and tail excluded.

    Exactly-once output becomes visible a checkpoint at a time, and reading one commit
    takes the watcher a moment: a window shorter than `min_span_s` (the checkpoint
    interval, for such a system) would measure the watcher's reading, not the system. Such
    a run, and one too short for two samples, falls back to the whole run, from the first
    sample (the start command) to the first with every output.
    """

    def first_at(share: float) -> Sample | None:
        return next((s for s in samples if s.outputs >= share * expected_outputs), None)

    if not expected_outputs:
        return None
    low, high = first_at(0.1), first_at(0.9)
    if low is not None and high is not None and high.at - low.at >= max(min_span_s, 1e-9):
        return low, high
    high = first_at(1.0)
    if samples and high is not None and high.at > samples[0].at:
        return samples[0], high
    return None


def throughput(
    samples: Sequence[Sample], records: int, expected_outputs: int, min_span_s: float = 0.0
) -> dict:
    """Input records/s and CPU seconds per 1,000 input records over the steady window.

    /proc counts CPU time in clock ticks (10 ms): a window in which the system's processes
    used less than a tick (a peer that reads a tiny backlog between two samples) measured
    no CPU, which is not zero CPU, so it has no CPU figure."""
    window = steady_window(samples, expected_outputs, min_span_s)
    if window is None:
        return {
            "records_per_s": None,
            "cpu_s_per_1k": None,
            "task_cpu_s_per_1k": None,
            "window_s": None,
        }
    low, high = window
    done = records_done(high, records, expected_outputs) - records_done(
        low, records, expected_outputs
    )
    return {
        "records_per_s": done / (high.at - low.at),
        "cpu_s_per_1k": _per_1k(high.cpu_s - low.cpu_s, done),
        "task_cpu_s_per_1k": _per_1k(high.task_cpu - low.task_cpu, done),
        "window_s": high.at - low.at,
    }


def _per_1k(cpu_s: float, records: float) -> float | None:
    return cpu_s / records * 1000 if records and cpu_s > 0 else None


def whole_run(before: Sample, finished: Sample, records: int) -> dict:
    """Input records/s from the start command (`before`: Flink's job submission and
    start-up, a peer's process start, all included) to the last expected output being
    visible (`finished`): what a user waits for. CPU per 1,000 records over the same span."""
    span = finished.at - before.at
    if span <= 0 or finished.outputs <= before.outputs:
        return {
            "whole_run_records_per_s": None,
            "whole_run_cpu_s_per_1k": None,
            "whole_run_task_cpu_s_per_1k": None,
            "whole_run_s": None,
        }
    return {
        "whole_run_records_per_s": records / span,
        "whole_run_cpu_s_per_1k": (finished.cpu_s - before.cpu_s) / records * 1000,
        "whole_run_task_cpu_s_per_1k": (finished.task_cpu - before.task_cpu) / records * 1000,
        "whole_run_s": span,
    }


def phases(samples: Sequence[Sample], before: int, started: int | None, finished: int) -> dict:
    """Seconds from the start command until the start call returned (Flink: `flink run` and
    every task running), until the first output was visible, and until the last."""
    zero = samples[before]
    first = next((s for s in samples[before:] if s.outputs > zero.outputs), None)
    return {
        "start_s": None if started is None else samples[started].at - zero.at,
        "first_output_s": None if first is None else first.at - zero.at,
        "last_output_s": samples[finished].at - zero.at,
    }


NO_RATE = {
    "records_per_s": None,
    "cpu_s_per_1k": None,
    "task_cpu_s_per_1k": None,
    "window_s": None,
    "whole_run_records_per_s": None,
    "whole_run_cpu_s_per_1k": None,
    "whole_run_task_cpu_s_per_1k": None,
    "whole_run_s": None,
    "first_output_s": None,
}


def max_rate(throughput_figures: dict) -> float | None:
    """The rate the latency runs take percentages of: the lower of the two measures, so no
    system is driven past what it sustained end to end."""
    rates = [
        r
        for r in (
            throughput_figures.get("records_per_s"),
            throughput_figures.get("whole_run_records_per_s"),
        )
        if r
    ]
    return min(rates, default=None)


def timeline(
    samples: Sequence[Sample], records: int, expected_outputs: int, span_s: float = 2.0
) -> list[tuple[float, float]]:
    """(seconds since the first sample, input records/s over the last `span_s` or more);
    exactly-once outputs show at checkpoints, so shorter spans would only show their steps."""
    points = []
    before = samples[0] if samples else None
    for after in samples[1:]:
        span = after.at - before.at
        if span >= span_s:
            done = records_done(after, records, expected_outputs) - records_done(
                before, records, expected_outputs
            )
            points.append((after.at - samples[0].at, done / span))
            before = after
    last = samples[-1] if samples else None
    if last is not None and last.at > before.at:  # the tail: a last commit must show too
        done = records_done(last, records, expected_outputs) - records_done(
            before, records, expected_outputs
        )
        points.append((last.at - samples[0].at, done / (last.at - before.at)))
    return points


# --- a run's status and the repeats of one configuration ---------------------------------


def run_status(outputs: int, expected: int, check: dict | None = None) -> str:
    """ "complete" when every expected output is visible (and, where they are checked, they
    are what the workload must produce); "incomplete (n of m)" or "wrong (...)" otherwise.
    Only a complete run has rates."""
    if outputs < expected:
        return f"incomplete ({outputs:,} of {expected:,})"
    if check is not None and not check.get("ok", False):
        faults = [
            f"{check[k]:,} {k}"
            for k in ("wrong", "absent", "duplicates", "unexpected", "unreadable")
            if check.get(k)
        ]
        return f"wrong ({', '.join(faults) or 'outputs differ'})"
    if outputs > expected:
        return f"wrong ({outputs - expected:,} outputs more than {expected:,})"
    return "complete"


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median, min and max of the values that exist (None for none)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "n": len(present),
    }


THROUGHPUT_KEYS = (
    "records_per_s",
    "cpu_s_per_1k",
    "task_cpu_s_per_1k",
    "whole_run_records_per_s",
    "whole_run_cpu_s_per_1k",
    "whole_run_task_cpu_s_per_1k",
    "whole_run_s",
    "first_output_s",
)
LATENCY_KEYS = (
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "sent_rate",
    "target_rate",
    "cpu_s_per_1k",
)


def combine(runs: Sequence[dict], loads: Sequence[int | str] = ()) -> dict:
    """One configuration's repeats: the median of each figure with its spread (min..max).

    A configuration has figures only when every one of its runs was complete: a median
    over the runs that happened to finish would hide the ones that did not. Its `status`
    then names the first run that was not.
    """
    failed = next((r for r in runs if r.get("status") != "complete"), None)
    status = "complete"
    if failed is not None:
        status = failed["status"]
        if len(runs) > 1:
            status += f" in run {runs.index(failed) + 1} of {len(runs)}"
    usable = [] if failed is not None else list(runs)
    combined = {
        "status": status,
        "runs_complete": sum(1 for r in runs if r.get("status") == "complete"),
        "throughput": {},
        "spread": {},
        "latency": {},
    }
    for key in THROUGHPUT_KEYS:
        figures = spread([r["throughput"].get(key) for r in usable])
        combined["throughput"][key] = figures["median"]
        combined["spread"][key] = [figures["min"], figures["max"]]
    for load in (str(x) for x in loads):
        measured = [r["latency"].get(load) for r in usable]
        if not measured or any(m is None for m in measured):
            continue
        latency = {}
        for key in LATENCY_KEYS:
            figures = spread([m.get(key) for m in measured])
            latency[key] = figures["median"]
            latency[f"{key}_spread"] = [figures["min"], figures["max"]]
        latency["count"] = sum(m.get("count", 0) for m in measured)
        latency["expected"] = sum(m.get("expected", 0) for m in measured)
        combined["latency"][load] = latency
    return combined


def median_run(runs: Sequence[dict], key: str = "whole_run_records_per_s") -> dict | None:
    """The run whose `key` is the median (the lower middle one for an even count): its
    timeline is the one plotted."""
    rated = sorted(
        (r for r in runs if r["throughput"].get(key)), key=lambda r: r["throughput"][key]
    )
    if not rated:
        return runs[0] if runs else None
    return rated[(len(rated) - 1) // 2]
