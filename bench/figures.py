"""Turns what the watcher saw into the benchmark's figures. Pure functions, no I/O."""

from __future__ import annotations

import math
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


def records_done(sample: Sample, records_per_output: int) -> int:
    """Input records done: what the system reports or what its outputs account for,
    whichever is more (a system's metrics can lag behind its visible outputs)."""
    return max(sample.progress or 0, sample.outputs * records_per_output)


def steady_window(
    samples: Sequence[Sample], total: int, records_per_output: int
) -> tuple[Sample, Sample] | None:
    """The first samples at 10% and at 90% of `total` input records: start-up and tail
    excluded.

    A run too short for that (everything done between two samples) falls back to the whole
    run, from the first sample (the system just started) to the first with all done.
    """

    def first_at(share: float) -> Sample | None:
        return next(
            (s for s in samples if records_done(s, records_per_output) >= share * total), None
        )

    low, high = first_at(0.1), first_at(0.9)
    if low is not None and high is not None and high.at > low.at:
        return low, high
    high = first_at(1.0)
    if samples and high is not None and high.at > samples[0].at:
        return samples[0], high
    return None


def throughput(samples: Sequence[Sample], total: int, records_per_output: int) -> dict:
    """Input records/s and CPU seconds per 1,000 input records over the steady window."""
    window = steady_window(samples, total, records_per_output)
    if window is None:
        return {"records_per_s": None, "cpu_s_per_1k": None, "window_s": None}
    low, high = window
    records = records_done(high, records_per_output) - records_done(low, records_per_output)
    return {
        "records_per_s": records / (high.at - low.at),
        "cpu_s_per_1k": (high.cpu_s - low.cpu_s) / records * 1000 if records else None,
        "window_s": high.at - low.at,
    }


def whole_run(before: Sample, started: Sample, finished: Sample, records: int) -> dict:
    """Input records/s from the moment the system was up (`started`) to its last output:
    what a user waits for. Unlike the steady window it counts a system that works in phases
    (faust re-keys the whole backlog first, then correlates) at its true pace. CPU per
    1,000 records counts from `before` the start, since a fast system does much of its work
    while its start-up call is still returning."""
    span = finished.at - started.at
    if span <= 1.0 or finished.outputs <= started.outputs:
        return {"whole_run_records_per_s": None, "whole_run_cpu_s_per_1k": None}
    return {
        "whole_run_records_per_s": records / span,
        "whole_run_cpu_s_per_1k": (finished.cpu_s - before.cpu_s) / records * 1000,
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
    samples: Sequence[Sample], records_per_output: int, span_s: float = 2.0
) -> list[tuple[float, float]]:
    """(seconds since the first sample, input records/s over the last `span_s` or more);
    metrics refresh about once a second, so shorter spans would only show their steps."""
    points = []
    before = samples[0] if samples else None
    for after in samples[1:]:
        span = after.at - before.at
        if span >= span_s:
            done = records_done(after, records_per_output) - records_done(
                before, records_per_output
            )
            points.append((after.at - samples[0].at, done / span))
            before = after
    return points
