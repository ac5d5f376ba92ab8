"""A smoke run of the benchmark on the session's broker and cluster: tiny N, one run each,
seconds of load, every system. It checks the benchmark measures what it claims (every
correlator's outputs checked against the workload: complete and expired counts, each
output's types and parts; our job's dead letters by reason; a latency for every transaction
sent; state held and released), not how fast anything is.
"""

from __future__ import annotations

import json

import pytest

from bench import report
from bench.run import Settings, run
from stack.paths import RUN

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


def _logs() -> dict[str, str]:
    """The end of every peer's log, so a failure here explains itself."""
    return {
        log.name: log.read_text(errors="replace")[-2000:] for log in (RUN / "bench").glob("*.log")
    }


def test_benchmark_smoke_run(kafka, flink, tmp_path):
    systems = ("ours", "copy", "copy-p2", "dict", "faust")
    settings = Settings(
        transactions=300,
        latency_seconds=2,
        in_flight=(200,),
        settle_s=0,
        repeat=1,
        systems=systems,
        out=tmp_path,
    )
    results = run(settings, kafka, flink)

    assert results["incomplete_transactions"] == 30 and results["malformed_records"] > 0
    assert [s["name"] for s in results["systems"]][0].startswith("Flink job")
    assert len(results["systems"]) == len(systems)
    for system in results["systems"]:
        name = system["name"]
        (only,) = system["runs"]
        assert only["status"] == "complete", (name, only.get("error"), only.get("check"), _logs())
        assert system["status"] == "complete", name
        assert only["outputs"] == only["expected_outputs"], name
        if name.startswith("Flink"):  # each Flink job ran at the parallelism its name says
            assert only["details"]["parallelism"] == (2 if "parallelism 2" in name else 1), name
        if name.startswith("Flink SQL copy"):  # one output per input record: its count only
            assert only["expected_outputs"] == results["records"], name
        else:
            check = only["check"]
            assert check["ok"], (name, check)
            assert check["complete"] == check["expected_complete"] == 270, name
            assert check["expired"] == check["expected_expired"] == 30, name
        throughput = system["throughput"]
        assert throughput["records_per_s"] > 0, name
        assert throughput["whole_run_cpu_s_per_1k"] > 0, name
        if name.startswith("Flink"):  # a steady window of at least a checkpoint interval
            assert throughput["cpu_s_per_1k"] > 0, name
        else:  # a peer may read the tiny backlog in less CPU than /proc's tick shows
            assert throughput["cpu_s_per_1k"] is None or throughput["cpu_s_per_1k"] > 0, name
        assert throughput["whole_run_records_per_s"] > 0, name
        assert only["phases"]["last_output_s"] == pytest.approx(throughput["whole_run_s"])
        for load in ("50", "90"):
            latency = system["latency"][load]
            assert latency["count"] == latency["expected"], (name, load)
            assert 0 < latency["p50_ms"] <= latency["p99_ms"], (name, load)
            assert latency["cpu_s_per_1k"] > 0, (name, load)  # the system's CPU while paced

    ours = results["systems"][0]["runs"][0]
    letters = ours["dead_letters"]
    assert letters["count"] == letters["expected"] == results["malformed_records"]
    assert letters["reasons"] == letters["expected_reasons"]

    (held,) = results["in_flight"]
    assert held["transactions"] == 200
    assert held["system"] == "Flink job, parallelism 1"
    assert 0 <= held["checkpoint_sync_ms"] <= held["checkpoint_ms"] <= held["checkpoint_max_ms"]
    assert held["state_bytes_per_tx"] > 0
    assert 0 < held["idle_rss_mb"] < held["rss_mb"]
    assert held["aggregated_after"] == 200
    assert held["in_flight_after"] == 0

    written = report.write(results, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["transactions"] == 300
    table = (tmp_path / "results.md").read_text()
    assert all(s["name"] in table for s in results["systems"])
    assert "270 complete, 30 expired" in table
    assert tmp_path / "results.md" in written
