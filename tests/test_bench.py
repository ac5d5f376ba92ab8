"""A smoke run of the benchmark on the session's broker and cluster: tiny N, seconds of
load, every system. It checks the benchmark measures what it claims (every output counted,
a latency for every transaction sent, state held and released), not how fast anything is.
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
    systems = ("ours", "copy", "dict", "faust")
    settings = Settings(
        transactions=300,
        latency_seconds=2,
        in_flight=(200,),
        timeout_s=30,
        settle_s=0,
        systems=systems,
        out=tmp_path,
    )
    results = run(settings, kafka, flink)

    assert [s["name"] for s in results["systems"]][0].startswith("Flink job")
    assert len(results["systems"]) == len(systems)
    for system in results["systems"]:
        assert system["outputs"] == system["expected_outputs"], (system["name"], _logs())
        assert system["throughput"]["records_per_s"] > 0, system["name"]
        assert system["throughput"]["cpu_s_per_1k"] > 0, system["name"]
        for load in ("50", "90"):
            latency = system["latency"][load]
            assert latency["count"] == latency["expected"], (system["name"], load)
            assert 0 < latency["p50_ms"] <= latency["p99_ms"], (system["name"], load)

    (held,) = results["in_flight"]
    assert held["transactions"] == 200
    assert held["state_bytes_per_tx"] > 0
    assert held["aggregated_after"] == 200
    assert held["in_flight_after"] == 0

    written = report.write(results, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["transactions"] == 300
    table = (tmp_path / "results.md").read_text()
    assert all(s["name"] in table for s in results["systems"])
    assert tmp_path / "results.md" in written
