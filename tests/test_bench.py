"""A smoke run of the benchmark on the session's broker and cluster: tiny N, one run each,
seconds of load, every system. It checks the benchmark measures what it claims (every
correlator's outputs checked against the workload: complete and expired counts, each
output's types and parts; our job's dead letters by reason; a latency for every transaction
sent), not how fast anything is. The memory run (`--in-flight`, not in the defaults) is a
long scenario here: `bin/test --long -k in_flight`.
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
    systems = ("ours", "pass", "state", "copy", "dict", "faust")
    settings = Settings(
        transactions=300,
        latency_seconds=2,
        in_flight=(),  # the memory run: test_in_flight_memory_run, a long scenario
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
        flink = name.startswith(("Flink", "Python"))
        if flink:  # each Flink job ran at the parallelism its name says
            assert only["details"]["parallelism"] == (2 if "parallelism 2" in name else 1), name
        if "(ceiling)" in name:  # one output per input record: its count only
            assert only["expected_outputs"] == results["records"], name
        else:
            check = only["check"]
            assert check["ok"], (name, check)
            assert check["complete"] == check["expected_complete"] == 270, name
            assert check["expired"] == check["expected_expired"] == 30, name
        throughput = system["throughput"]
        assert throughput["records_per_s"] > 0, name
        assert throughput["whole_run_cpu_s_per_1k"] > 0, name
        # Every process counts: Flink's client and JobManager beside its TaskManagers; a
        # peer is one process.
        task_share = throughput["whole_run_task_cpu_s_per_1k"]
        if flink:
            assert 0 < task_share < throughput["whole_run_cpu_s_per_1k"], name
        else:
            assert task_share == throughput["whole_run_cpu_s_per_1k"], name
        if flink:  # a steady window of at least a checkpoint interval
            assert throughput["cpu_s_per_1k"] > 0, name
        else:  # a peer may read the tiny backlog in less CPU than /proc's tick shows
            assert throughput["cpu_s_per_1k"] is None or throughput["cpu_s_per_1k"] > 0, name
        assert throughput["whole_run_records_per_s"] > 0, name
        assert only["phases"]["last_output_s"] == pytest.approx(throughput["whole_run_s"])
        for load in map(str, settings.loads):
            latency = system["latency"][load]
            assert latency["count"] == latency["expected"], (name, load)
            assert 0 < latency["p50_ms"] <= latency["p99_ms"], (name, load)
            assert latency["cpu_s_per_1k"] > 0, (name, load)  # the system's CPU while paced

    ours = results["systems"][0]["runs"][0]
    letters = ours["dead_letters"]
    assert letters["count"] == letters["expected"] == results["malformed_records"]
    assert letters["reasons"] == letters["expected_reasons"]

    assert results["in_flight"] == []

    written = report.write(results, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["transactions"] == 300
    table = (tmp_path / "results.md").read_text()
    assert all(s["name"] in table for s in results["systems"])
    assert "270 complete, 30 expired" in table
    assert tmp_path / "results.md" in written


@pytest.mark.long
def test_in_flight_memory_run(kafka, flink, tmp_path):
    """`--in-flight N` (not in the defaults): RSS and checkpointed state with 200
    transactions held open, then after every one closed and its marker dropped. A minute of
    CI time for an option the README's table does not use: `bin/test --long -k in_flight`."""
    from bench.run import measure_in_flight

    settings = Settings(transactions=300, out=tmp_path)
    held = measure_in_flight(flink, kafka, settings, 200, "ours")
    assert held["transactions"] == 200
    assert held["system"] == "Flink job, parallelism 1"
    assert 0 <= held["checkpoint_sync_ms"] <= held["checkpoint_ms"] <= held["checkpoint_max_ms"]
    assert held["state_bytes_per_tx"] > 0
    assert 0 < held["idle_rss_mb"] < held["rss_mb"]
    assert held["aggregated_after"] == 200
    assert held["in_flight_after"] == 0


def test_recovery_and_savepoint_start_figures(kafka, flink, tmp_path):
    """`python -m bench recovery`'s measurements, once each, on the session's cluster of two
    TaskManagers with the platform's supervisor: the job's TaskManager is killed under load,
    and the times from the kill (noticed, running, first output emitted after the kill) come
    in that order, with the dead TaskManager replaced; then a resume from a savepoint, timed
    from its `flink run` (submitted, running, first output emitted after the resume). It
    checks the measuring, not the speed."""
    from bench.recovery import markdown, one_recovery, summary

    flink.start_supervisor()
    # Checkpoints every second (the shipped 5 s): the warm-ups and the first outputs, which
    # wait for checkpoints, come sooner; what is checked does not depend on them.
    options = {"execution.checkpointing.interval": "1s"}
    result = one_recovery("spare", kafka, flink, rate=500, run=1, options=options)

    assert result["killed"] == 1
    assert 0 < result["noticed_s"] <= result["running_s"] <= result["first_output_s"] < 120
    assert len(flink.running_taskmanagers()) == 2  # replaced, with no command run

    resumed = one_recovery("savepoint", kafka, flink, rate=500, run=1, options=options)
    # `flink run -d` returns when the job is accepted; its tasks may run before it exits.
    assert 0 < resumed["submitted_s"] < 120 and resumed["running_s"] > 0
    assert resumed["running_s"] <= resumed["first_output_s"] < 120
    assert "noticed_s" not in resumed

    table = markdown(
        {
            "rate": 500,
            "repeat": 1,
            "scenarios": {"spare": summary([result]), "savepoint": summary([resumed])},
        }
    )
    assert f"| spare | {result['noticed_s']:.1f} | - |" in table
    assert f"| savepoint | - | {resumed['submitted_s']:.1f} |" in table
