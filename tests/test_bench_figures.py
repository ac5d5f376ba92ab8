"""The benchmark's arithmetic, on made-up samples (milliseconds, no services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.figures import (
    latency_summary,
    max_rate,
    percentile,
    records_done,
    throughput,
    timeline,
    whole_run,
)
from bench.run import build_parser
from bench.watch import Sample


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    assert latency_summary([3, 1, 2])["max_ms"] == 3


def test_throughput_uses_the_steady_window_between_10_and_90_percent():
    # 1,000 input records: a slow start, then 100 records/s, then a slow tail.
    samples = [
        Sample(at=0, outputs=0, cpu_s=0),
        Sample(at=10, outputs=10, cpu_s=1),  # 100 records: 10% reached
        Sample(at=18, outputs=90, cpu_s=5),  # 900 records: 90% reached
        Sample(at=60, outputs=100, cpu_s=6),
    ]
    figures = throughput(samples, total=1000, records_per_output=10)
    assert figures["records_per_s"] == pytest.approx(800 / 8)
    assert figures["cpu_s_per_1k"] == pytest.approx(4 / 800 * 1000)
    assert figures["window_s"] == 8


def test_a_run_done_between_two_samples_falls_back_to_the_whole_run():
    samples = [Sample(at=0, outputs=0, cpu_s=0), Sample(at=4, outputs=100, cpu_s=2)]
    assert throughput(samples, total=100, records_per_output=1)["records_per_s"] == 25


def test_reported_progress_counts_unless_outputs_show_more():
    assert records_done(Sample(0, outputs=2, cpu_s=0, progress=50), 5) == 50
    assert records_done(Sample(0, outputs=20, cpu_s=0, progress=50), 5) == 100
    assert records_done(Sample(0, outputs=3, cpu_s=0), 5) == 15


def test_timeline_rates_span_at_least_two_seconds():
    samples = [Sample(at=t, outputs=t * 10, cpu_s=0) for t in range(7)]
    assert timeline(samples, records_per_output=1) == [(2, 10.0), (4, 10.0), (6, 10.0)]


def test_no_window_without_output():
    samples = [Sample(at=0, outputs=0, cpu_s=0), Sample(at=5, outputs=0, cpu_s=1)]
    assert throughput(samples, total=100, records_per_output=1)["records_per_s"] is None


def test_whole_run_counts_from_the_start_and_cpu_from_before_it():
    before = Sample(at=0, outputs=0, cpu_s=1)
    started = Sample(at=10, outputs=0, cpu_s=3)
    finished = Sample(at=60, outputs=100, cpu_s=11)
    figures = whole_run(before, started, finished, records=500)
    assert figures["whole_run_records_per_s"] == 10
    assert figures["whole_run_cpu_s_per_1k"] == pytest.approx(10 / 500 * 1000)


def test_latency_runs_take_the_lower_of_the_two_rates():
    assert max_rate({"records_per_s": 2400, "whole_run_records_per_s": 1400}) == 1400
    assert max_rate({"records_per_s": 900, "whole_run_records_per_s": None}) == 900
    assert max_rate({"records_per_s": None, "whole_run_records_per_s": None}) is None


def test_docs_list_every_benchmark_option():
    docs = (Path(__file__).resolve().parent.parent / "docs" / "benchmark.md").read_text()
    options = [o for a in build_parser()._actions for o in a.option_strings if o != "-h"]
    assert len(options) > 5
    for option in options:
        if option != "--help":
            assert f"`{option}`" in docs, option


def test_report_without_latency_runs(tmp_path):
    """`bin/bench --loads ''` writes the table and the throughput plot, and no latency."""
    from bench import report

    system = {
        "name": "Flink job, parallelism 1",
        "throughput": {
            "records_per_s": 10.0,
            "whole_run_records_per_s": 8.0,
            "whole_run_cpu_s_per_1k": 1.0,
        },  # fmt: skip
        "latency": {},
        "timeline": [[0, 0], [1, 10]],
    }
    results = {
        "date": "2026-12-02", "machine": "2 cores", "transactions": 10, "types": ["TypeA"],
        "loads": [], "systems": [system], "in_flight": [],
    }  # fmt: skip
    written = report.write(results, tmp_path)
    text = (tmp_path / "results.md").read_text()
    assert "no latency runs" in text and "sent at  of" not in text
    assert tmp_path / "latency.png" not in written
