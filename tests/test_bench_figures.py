"""The benchmark's arithmetic, on made-up samples (milliseconds, no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import workload
from bench.figures import (
    combine,
    latency_summary,
    max_rate,
    median_run,
    percentile,
    records_done,
    run_status,
    spread,
    throughput,
    timeline,
    whole_run,
)
from bench.profile import NO_PYTHON, parse_collapsed, summarize
from bench.report import markdown, overlaps
from bench.run import build_parser
from bench.watch import Sample
from generator.transactions import record_value

TYPES = ("TypeA", "TypeB", "TypeC", "TypeD", "TypeE")


def test_percentiles_are_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    assert latency_summary([3, 1, 2])["max_ms"] == 3


def test_throughput_uses_the_steady_window_between_10_and_90_percent_of_outputs():
    # 100 expected outputs standing for 1,000 input records: a slow start, then 10 outputs
    # (100 records) per second, then a slow tail.
    samples = [
        Sample(at=0, outputs=0, cpu_s=0),
        Sample(at=10, outputs=10, cpu_s=1),  # 10% of the outputs visible
        Sample(at=18, outputs=90, cpu_s=5),  # 90%
        Sample(at=60, outputs=100, cpu_s=6),
    ]
    figures = throughput(samples, records=1000, expected_outputs=100)
    assert figures["records_per_s"] == pytest.approx(800 / 8)
    assert figures["cpu_s_per_1k"] == pytest.approx(4 / 800 * 1000)
    assert figures["window_s"] == 8


def test_outputs_stand_for_input_records_all_alike():
    # 1,441 records behind 300 outputs (aggregates and partials, malformed records too)
    assert records_done(Sample(0, outputs=150, cpu_s=0), 1441, 300) == pytest.approx(720.5)
    assert records_done(Sample(0, outputs=0, cpu_s=0), 1441, 300) == 0
    assert records_done(Sample(0, outputs=3, cpu_s=0), 10, 0) == 0


def test_a_run_done_between_two_samples_falls_back_to_the_whole_run():
    samples = [Sample(at=0, outputs=0, cpu_s=0), Sample(at=4, outputs=100, cpu_s=2)]
    assert throughput(samples, records=100, expected_outputs=100)["records_per_s"] == 25


def test_a_window_shorter_than_a_cpu_tick_has_no_cpu_figure():
    # The dict loop read 300 transactions between two samples 0.2 s apart: /proc's CPU
    # time did not move by a tick (10 ms), which measured nothing, not zero CPU.
    samples = [
        Sample(at=0, outputs=0, cpu_s=0.5),
        Sample(at=1.0, outputs=100, cpu_s=0.8),
        Sample(at=1.2, outputs=300, cpu_s=0.8),
    ]
    figures = throughput(samples, records=1441, expected_outputs=300)
    assert figures["records_per_s"] > 0
    assert figures["cpu_s_per_1k"] is None


def test_exactly_once_steps_count_when_they_show():
    # Outputs visible only at checkpoints: 0, then 60% at 5 s, then 100% at 10 s.
    samples = [
        Sample(at=0, outputs=0, cpu_s=0),
        Sample(at=4.5, outputs=0, cpu_s=1),
        Sample(at=5, outputs=60, cpu_s=2),
        Sample(at=10, outputs=100, cpu_s=3),
    ]
    figures = throughput(samples, records=500, expected_outputs=100)
    assert figures["window_s"] == 5  # from the first step (>= 10%) to the second (>= 90%)
    assert figures["records_per_s"] == pytest.approx(200 / 5)


def test_one_commit_read_over_two_samples_is_no_steady_window():
    # Every output in one exactly-once commit, read by the watcher over half a second: the
    # window from 10% to 90% would be the watcher's reading, so the whole run counts.
    samples = [
        Sample(at=0, outputs=0, cpu_s=0),
        Sample(at=17.0, outputs=5000, cpu_s=3),
        Sample(at=17.5, outputs=24000, cpu_s=3),
    ]
    figures = throughput(samples, records=24000, expected_outputs=24000, min_span_s=5)
    assert figures["window_s"] == 17.5
    assert figures["records_per_s"] == pytest.approx(24000 / 17.5)
    unguarded = throughput(samples, records=24000, expected_outputs=24000)
    assert unguarded["window_s"] == 0.5  # what a system without steps gets


def test_timeline_rates_span_at_least_two_seconds():
    samples = [Sample(at=t, outputs=t * 10, cpu_s=0) for t in range(7)]
    assert timeline(samples, records=60, expected_outputs=60) == [(2, 10.0), (4, 10.0), (6, 10.0)]
    # a last commit shortly after the last full span still shows
    tail = [*samples, Sample(at=6.5, outputs=70, cpu_s=0)]
    assert timeline(tail, records=70, expected_outputs=70)[-1] == (6.5, 20.0)


def test_no_window_without_output():
    samples = [Sample(at=0, outputs=0, cpu_s=0), Sample(at=5, outputs=0, cpu_s=1)]
    assert throughput(samples, records=100, expected_outputs=100)["records_per_s"] is None


def test_whole_run_counts_from_the_start_command():
    before = Sample(at=0, outputs=0, cpu_s=1)  # before the start command: submission counts
    finished = Sample(at=50, outputs=100, cpu_s=11)
    figures = whole_run(before, finished, records=500)
    assert figures["whole_run_records_per_s"] == 10
    assert figures["whole_run_cpu_s_per_1k"] == pytest.approx(10 / 500 * 1000)
    assert figures["whole_run_s"] == 50


def test_latency_runs_take_the_lower_of_the_two_rates():
    assert max_rate({"records_per_s": 2400, "whole_run_records_per_s": 1400}) == 1400
    assert max_rate({"records_per_s": 900, "whole_run_records_per_s": None}) == 900
    assert max_rate({"records_per_s": None, "whole_run_records_per_s": None}) is None


def test_a_run_short_of_its_outputs_is_incomplete():
    assert run_status(300, 300) == "complete"
    assert run_status(290, 300) == "incomplete (290 of 300)"
    assert run_status(1_200, 1_441) == "incomplete (1,200 of 1,441)"
    assert run_status(301, 300) == "wrong (1 outputs more than 300)"
    assert run_status(300, 300, {"ok": True}) == "complete"
    bad = {"ok": False, "wrong": 2, "absent": 1, "duplicates": 0}
    assert run_status(300, 300, bad) == "wrong (2 wrong, 1 absent)"


def _run(status: str, whole: float | None, steady: float | None = None, **latency) -> dict:
    return {
        "status": status,
        "throughput": {"whole_run_records_per_s": whole, "records_per_s": steady},
        "latency": latency,
        "timeline": [[0, whole]],
    }


def test_spread_is_median_min_and_max_of_what_exists():
    assert spread([3, 1, 2]) == {"median": 2, "min": 1, "max": 3, "n": 3}
    assert spread([4, None, 1, 2]) == {"median": 2, "min": 1, "max": 4, "n": 3}
    assert spread([1, 2])["median"] == 1.5
    assert spread([None]) == {"median": None, "min": None, "max": None, "n": 0}


def test_repeats_report_the_median_and_its_spread():
    runs = [
        _run("complete", 100, 120, **{"50": {"p50_ms": 10, "p99_ms": 30, "count": 5}}),
        _run("complete", 90, 130, **{"50": {"p50_ms": 12, "p99_ms": 50, "count": 5}}),
        _run("complete", 120, 110, **{"50": {"p50_ms": 11, "p99_ms": 40, "count": 5}}),
    ]
    combined = combine(runs, loads=[50])
    assert combined["status"] == "complete"
    assert combined["runs_complete"] == 3
    assert combined["throughput"]["whole_run_records_per_s"] == 100
    assert combined["spread"]["whole_run_records_per_s"] == [90, 120]
    assert combined["throughput"]["records_per_s"] == 120
    latency = combined["latency"]["50"]
    assert latency["p99_ms"] == 40 and latency["p99_ms_spread"] == [30, 50]
    assert latency["count"] == 15
    assert median_run(runs)["throughput"]["whole_run_records_per_s"] == 100


def test_one_incomplete_run_leaves_the_configuration_without_a_rate():
    runs = [_run("complete", 100), _run("incomplete (250 of 300)", None), _run("complete", 90)]
    combined = combine(runs)
    assert combined["status"] == "incomplete (250 of 300) in run 2 of 3"
    assert combined["runs_complete"] == 2
    assert combined["throughput"]["whole_run_records_per_s"] is None
    assert combined["spread"]["whole_run_records_per_s"] == [None, None]


def test_a_ratio_counts_only_beyond_the_spread():
    assert overlaps([90, 120], [110, 130])
    assert not overlaps([90, 100], [110, 130])
    assert not overlaps([None, None], [1, 2])


def test_the_workload_is_the_same_for_the_same_seed():
    a = workload.plan(300, TYPES, "t")
    assert a == workload.plan(300, TYPES, "t")
    assert a != workload.plan(300, TYPES, "t", seed=8)


def test_the_workload_has_incomplete_transactions_in_its_head_and_malformed_records():
    load = workload.plan(1000, TYPES, "t")
    assert load.count == 1000
    assert load.incomplete == 100 and load.complete == 900
    assert load.head == 200
    partial = [i for i, sent in enumerate(load.sent) if len(sent) < len(TYPES)]
    assert len(partial) == 100 and max(partial) < load.head
    assert all(1 <= len(load.sent[i]) <= len(TYPES) - 1 for i in partial)
    parts = sum(len(s) for s in load.sent)
    assert load.records == parts + len(load.malformed)
    assert len(load.malformed) / load.records == pytest.approx(0.01, abs=0.001)
    reasons = {m.reason for _, m in load.malformed}
    assert reasons == {"not_json", "no_transaction", "bad_transaction"}
    expected = load.expected()
    assert expected["t-0"] == load.sent[0] and len(expected) == 1000


def test_malformed_records_are_what_our_job_dead_letters():
    from job.records import Source, parse

    source = Source("Events-TypeA", 0, 0, 0)
    for kind in range(3):
        record = workload.malformed_record(kind, "TypeA", "t", kind)
        letter = parse(record.value, source, lambda _: "TypeA", 1_000_000)
        assert letter.reason == record.reason


def _output(transaction: str, sent: tuple[str, ...], **changes) -> bytes:
    doc = {
        "transaction": transaction,
        "status": "complete" if len(sent) == len(TYPES) else "expired",
        "types": list(sent),
        "missing": [t for t in TYPES if t not in sent],
        "parts": {t: record_value(transaction, t) for t in sent},
        **changes,
    }
    return json.dumps(doc).encode()


def test_outputs_are_checked_against_the_expected_outcome():
    load = workload.plan(50, TYPES, "t", incomplete=0.2, malformed=0)
    outputs = [_output(load.transaction(i), sent) for i, sent in enumerate(load.sent)]
    check = workload.check(load, outputs)
    assert check["ok"], check
    assert (check["complete"], check["expired"]) == (40, 10)
    assert (check["expected_complete"], check["expected_expired"]) == (40, 10)

    partial = next(i for i, sent in enumerate(load.sent) if len(sent) < len(TYPES))
    whole = next(i for i, sent in enumerate(load.sent) if len(sent) == len(TYPES))
    absent = next(i for i in range(load.count) if i not in (partial, whole))
    wrong = list(outputs)
    wrong[partial] = _output(load.transaction(partial), TYPES)  # completed though incomplete
    wrong[whole] = _output(load.transaction(whole), TYPES, types=["TypeA"])
    wrong.append(outputs[whole])  # a duplicate
    wrong.append(b"{not json")
    wrong.remove(outputs[absent])  # one never came out
    check = workload.check(load, wrong)
    assert not check["ok"]
    assert check["wrong"] == 2 and check["duplicates"] == 1 and check["absent"] == 1
    assert check["unreadable"] == 1
    assert any("status 'complete', expected 'expired'" in e for e in check["examples"])


def test_a_part_with_another_value_is_wrong():
    load = workload.plan(1, TYPES, "t", incomplete=0, malformed=0)
    parts = {t: record_value("t-0", t) for t in TYPES}
    parts["TypeC"] = {"transaction": "t-0", "log": "changed"}
    check = workload.check(load, [_output("t-0", TYPES, parts=parts)])
    assert check["wrong"] == 1 and "part TypeC" in check["examples"][0]


def test_profile_counts_own_and_total_time_per_function():
    raw = "\n".join(
        [
            "thread (0x1);run (a.py:1);parse (b.py:5);loads (json.py:9) 6",
            "thread (0x1);run (a.py:2);parse (b.py:7) 2",
            "thread (0x2);run (a.py:1);put (state.py:3) 2",
            "thread (0x2);open (c.py:1);_find_and_load (<frozen importlib._bootstrap>:1) 3",
            "thread (0x1) 4",
        ]
    )
    summary = summarize(parse_collapsed(raw))
    assert summary["samples"] == 17 and summary["imports"] == 3  # imports left out below
    assert summary["no_python"] == 4  # a running thread in Java
    assert summary["threads"] == {"thread (0x1)": 12, "thread (0x2)": 5}
    assert "open (c.py)" not in summary["total"]
    assert summary["files"] == {"json.py": 6, "b.py": 2, "state.py": 2, NO_PYTHON: 4}
    assert summary["own"]["loads (json.py)"] == 6
    assert summary["own"]["parse (b.py)"] == 2  # its lines add up
    assert summary["total"]["parse (b.py)"] == 8
    assert summary["total"]["run (a.py)"] == 10


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


def _system(name: str, status: str, whole, spread_whole, runs: list[dict]) -> dict:
    return {
        "name": name,
        "status": status,
        "throughput": {
            "records_per_s": whole,
            "whole_run_records_per_s": whole,
            "whole_run_cpu_s_per_1k": 0.5 if whole else None,
        },
        "spread": {"whole_run_records_per_s": spread_whole, "records_per_s": spread_whole},
        "latency": {},
        "timeline": [],
        "runs": runs,
    }


def test_report_shows_spread_incomplete_runs_and_checked_outputs():
    check = {"ok": True, "complete": 270, "expired": 30, "examples": []}
    run = {
        "run": 1, "status": "complete", "outputs": 300, "expected_outputs": 300,
        "check": check, "dead_letters": {"count": 14, "expected": 14},
        "throughput": {"whole_run_records_per_s": 100.0, "whole_run_s": 14.4},
    }  # fmt: skip
    failed = {
        "run": 2, "status": "incomplete (250 of 300)", "outputs": 250,
        "expected_outputs": 300, "throughput": {"whole_run_records_per_s": None},
    }  # fmt: skip
    results = {
        "date": "2026-12-02", "machine": "2 cores", "transactions": 300, "types": list(TYPES),
        "records": 1441, "incomplete_transactions": 30, "malformed_records": 14,
        "timeout_s": 5.0, "out_of_orderness_s": 1.0, "expiry_grace_s": 5.0, "repeat": 2,
        "loads": [], "in_flight": [],
        "systems": [
            _system("ours", "complete", 100.0, [90.0, 110.0], [run, run]),
            _system("loop", "complete", 95.0, [80.0, 105.0], [run, run]),
            _system("faust", "incomplete (250 of 300) in run 2 of 2", None, None, [run, failed]),
        ],
    }  # fmt: skip
    text = markdown(results)
    assert "30 incomplete" in text and "14 malformed" in text and "median (min..max)" in text
    assert "| ours | 100 (90..110) | 100 (90..110) |" in text
    assert "1.05x, 1.05x (within spread)" in text
    faust = next(line for line in text.splitlines() if line.startswith("| faust |"))
    assert faust.count("incomplete (250 of 300) in run 2 of 2") == 2
    assert "| faust | 2 | incomplete (250 of 300) | 250 of 300 |" in text
    assert "270 complete, 30 expired | 14 of 14 |" in text


def test_python_ceilings_pass_each_record_and_state_adds_one_put_and_one_timer():
    """bench/peers/python_ceiling.py over plain rows: one output per record with its event
    time, malformed bytes as text; `state` does one MapState put and one event-time timer
    per record (timeout after the record's event time), and its timer forgets the key."""
    from bench.peers.python_ceiling import PassThrough, WithStateAndTimer

    class Timers:
        def __init__(self):
            self.registered = []

        def register_event_time_timer(self, at):
            self.registered.append(at)

    class Context:
        def __init__(self):
            self.timers = Timers()

        def timer_service(self):
            return self.timers

    row = ("t1", b'{"transaction": "t1"}\xff', "Events-TypeA", 2, 41, 1_000)
    (out,) = PassThrough("out").process_element(row, None)
    assert tuple(out) == ("out", "t1", '{"transaction": "t1"}\ufffd', 1_000)

    function, ctx, state = WithStateAndTimer("out", 5_000), Context(), {}
    function.parts = type("Map", (), {"put": state.__setitem__, "clear": state.clear})()
    outputs = list(function.process_element(row, ctx))
    assert [tuple(o) for o in outputs] == [tuple(out)]
    assert state == {"Events-TypeA": (2, 41, 1_000, row[1])}
    assert ctx.timers.registered == [6_000]
    assert list(function.on_timer(6_000, ctx)) == [] and state == {}


def test_recovery_table_has_kills_and_starts_with_their_own_figures():
    """A kill has no `submitted`, a start no `noticed`: each shows '-' there, and the
    settings given to the job and to the cluster head the table."""
    from bench.recovery import markdown, summary

    kill = {"noticed_s": 2.5, "running_s": 9.0, "first_output_s": 12.0}
    starts = [{"submitted_s": s, "running_s": s + 2, "first_output_s": s + 4} for s in (5, 7, 6)]
    table = markdown(
        {
            "rate": 4000,
            "repeat": 3,
            "options": {"restart-strategy.exponential-delay.initial-backoff": "100ms"},
            "cluster": {"heartbeat.interval": "1000"},
            "scenarios": {"spare": summary([kill]), "savepoint": summary(starts)},
        }
    )
    assert "job -D restart-strategy.exponential-delay.initial-backoff=100ms" in table
    assert "cluster -D heartbeat.interval=1000" in table
    assert "| spare | 2.5 | - | 9.0 | 12.0 |" in table
    assert "| savepoint | - | 6.0 (5.0..7.0) | 8.0 (7.0..9.0) | 10.0 (9.0..11.0) |" in table
