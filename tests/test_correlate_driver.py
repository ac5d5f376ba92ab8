"""The Flink function `Correlate` itself, driven over in-memory state, timers and counters
with a fake clock (tests/driver.py): its timer, state and metrics decisions in milliseconds.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from pyflink.datastream import TimeDomain

from job.config import JobConfig
from job.correlate import CLOSED, DEADLINES, PARTS
from job.records import BAD_TRANSACTION, DUPLICATE
from tests.driver import START_MS, Driver

TYPES = JobConfig().types
TIMEOUT, GRACE, RETENTION = 60_000, 10_000, 600_000


def value(record_type: str, transaction: str = "tx-1") -> dict:
    return {"transaction": transaction, "log": f"{record_type} done"}


def send_all(driver: Driver, types=TYPES, transaction: str = "tx-1") -> list:
    return [out for t in types for out in driver.send(t, value(t, transaction))]


def test_a_complete_transaction_is_emitted_at_once_and_only_its_retention_timer_stays():
    driver = Driver()
    (out,) = send_all(driver)
    topic, key, text = out
    record = json.loads(text)
    assert (topic, key) == (driver.config.aggregated_topic, '"tx-1"')
    assert record["status"] == "complete" and record["types"] == list(TYPES)
    until = START_MS + RETENTION
    timers = {(d, at) for d, k, at in driver.timers if k == "tx-1"}
    assert (TimeDomain.PROCESSING_TIME, until) in timers
    assert not any(d is TimeDomain.EVENT_TIME for d, _ in timers)  # deleted, not left to fire
    assert driver.state[CLOSED.name]["tx-1"] == f"complete@{until}"
    assert "tx-1" not in driver.state[DEADLINES.name]
    assert "tx-1" not in driver.state[PARTS.name]


def test_a_middle_record_costs_three_state_calls_and_no_iteration():
    driver = Driver()
    driver.send("TypeA", value("TypeA"))
    driver.calls.clear()
    driver.send("TypeB", value("TypeB"))
    assert dict(driver.calls) == {"deadlines.value": 1, "parts.put": 1, "deadlines.update": 1}


def test_the_completing_record_reads_the_held_parts_one_by_one_and_never_iterates():
    driver = Driver()
    send_all(driver, TYPES[:-1])
    driver.calls.clear()
    (out,) = driver.send(TYPES[-1], value(TYPES[-1]))
    assert json.loads(out[2])["types"] == list(TYPES)
    assert driver.calls["parts.get"] == len(TYPES) - 1
    assert driver.calls["parts.items"] == 0 and driver.calls["parts.keys"] == 0
    assert driver.calls["parts.put"] == 0  # the last part closes at once
    # and they go with one remove each: clear() would open a RocksDB iterator
    assert driver.calls["parts.remove"] == len(TYPES) - 1 and driver.calls["parts.clear"] == 0
    assert "tx-1" not in driver.state[PARTS.name]


def test_a_partial_expires_when_the_watermark_passes_its_deadline():
    driver = Driver()
    driver.send("TypeA", value("TypeA"), event_ms=START_MS)
    assert driver.advance(watermark=START_MS + TIMEOUT - 1) == []
    (out,) = driver.advance(watermark=START_MS + TIMEOUT)
    record = json.loads(out[2])
    assert out[0] == driver.config.expired_topic
    assert record["missing"] == list(TYPES[1:]) and record["expired_by"] == "event_time"


def test_at_the_end_of_a_bounded_input_every_partial_expires_named_as_such():
    """A bounded run (`stack recompute`) ends with event time at the end of time: every open
    partial expires then, and says it was the end of input, not its timeout."""
    driver = Driver()
    driver.send("TypeA", value("TypeA", "tx-1"), event_ms=START_MS)
    driver.send("TypeB", value("TypeB", "tx-2"), event_ms=START_MS + 10)
    outputs = driver.advance(watermark=2**63 - 1)
    records = {json.loads(v)["transaction"]: json.loads(v) for _, _, v in outputs}
    assert set(records) == {"tx-1", "tx-2"}
    assert {r["expired_by"] for r in records.values()} == {"end_of_input"}


def test_with_quiet_input_a_partial_expires_by_the_wall_clock_after_timeout_and_grace():
    driver = Driver()
    driver.send("TypeA", value("TypeA"))
    assert driver.advance(TIMEOUT + GRACE - 1) == []
    (out,) = driver.advance(1)
    assert json.loads(out[2])["expired_by"] == "wall_clock"


def test_the_wall_clock_fallback_waits_while_input_flows():
    driver = Driver()
    driver.send("TypeA", value("TypeA"))
    driver.advance(TIMEOUT + GRACE - 1_000)
    driver.send("TypeA", value("TypeA", "tx-2"))  # input 1 s before the fallback is due
    assert driver.advance(1_000) == []  # deferred to 10 s after that input
    assert driver.advance(GRACE - 1_001) == []
    expired = [json.loads(v)["transaction"] for _, _, v in driver.advance(1)]
    assert expired == ["tx-1"]


def test_the_metrics_flush_timer_does_not_touch_the_transaction_it_fires_for():
    driver = Driver()
    driver.send("TypeA", value("TypeA"))
    flush = [at for d, k, at in driver.timers if d is TimeDomain.PROCESSING_TIME]
    assert START_MS + 1_000 in flush  # counts are pending: a flush is scheduled
    assert driver.advance(1_000) == []
    assert driver.counter("type.TypeA.records_in") == 1
    assert driver.counter("transactions_in_flight") == 1


def test_counters_reach_flink_in_batches_and_are_exact_once_input_stops():
    driver = Driver()
    for i in range(3):
        send_all(driver, transaction=f"tx-{i}")
    driver.send("TypeA", b"{broken")
    driver.send("TypeB", value("TypeB", "tx-0"))  # late
    assert driver.counter("aggregated") == 0  # still in Python
    driver.advance(1_000)
    assert driver.counter("aggregated") == 3 and driver.counters["aggregated"].calls == 1
    assert driver.counter("dead_letters") == 1 and driver.counter("late") == 1
    assert driver.counter("type.TypeB.records_in") == 4
    assert driver.counter("transactions_in_flight") == 0
    assert driver.counter("closed_markers") == 3
    driver.advance(RETENTION)
    assert driver.counter("closed_markers") == 0


def test_late_while_remembered_and_a_new_transaction_after_the_retention():
    driver = Driver()
    send_all(driver)
    (late,) = driver.send("TypeA", value("TypeA"))
    assert late[0] == driver.config.late_topic
    driver.advance(RETENTION)
    assert "tx-1" not in driver.state[CLOSED.name]
    assert driver.send("TypeA", value("TypeA")) == []  # opens a new transaction
    assert "tx-1" in driver.state[DEADLINES.name]


def test_a_duplicate_type_is_a_dead_letter_and_the_first_is_kept():
    driver = Driver()
    driver.send("TypeA", {"transaction": "tx-1", "log": "first"})
    (out,) = driver.send("TypeA", {"transaction": "tx-1", "log": "second"})
    assert json.loads(out[2])["reason"] == DUPLICATE
    (aggregate,) = send_all(driver, TYPES[1:])
    assert json.loads(aggregate[2])["parts"]["TypeA"]["log"] == "first"


def test_a_record_routed_under_another_key_is_a_dead_letter():
    driver = Driver()
    row = ("", b'{"transaction": "tx-1"}', driver.config.topic_of("TypeA"), 0, 0, START_MS)
    (out,) = driver.function.process_element(row, _context(driver))
    assert json.loads(out[2])["reason"] == BAD_TRANSACTION
    assert driver.state.get(PARTS.name, {}) == {}


def _context(driver):
    from tests.driver import Context

    return Context(driver)


def test_state_written_before_the_held_types_were_stored_beside_the_deadlines():
    """Savepoints of the job before this layout: deadlines as a 2-tuple, held types only as
    the MapState's keys, closed markers without their retention end."""
    driver = Driver()
    event_at, wall_at = START_MS + TIMEOUT, START_MS + TIMEOUT + GRACE
    part = (0, START_MS, json.dumps(value("TypeA", "tx-old")), 0, 0)
    driver.state = {
        PARTS.name: {"tx-old": {"TypeA": part}},
        DEADLINES.name: {"tx-old": (event_at, wall_at)},
        CLOSED.name: {"tx-closed": "complete"},
    }
    driver.timers = {
        (TimeDomain.EVENT_TIME, "tx-old", event_at),
        (TimeDomain.PROCESSING_TIME, "tx-old", wall_at),
        (TimeDomain.PROCESSING_TIME, "tx-closed", START_MS + 5_000),
    }
    (late,) = driver.send("TypeB", value("TypeB", "tx-closed"))
    assert json.loads(late[2])["final_status"] == "complete"
    (out,) = send_all(driver, TYPES[1:], "tx-old")
    record = json.loads(out[2])
    assert record["status"] == "complete" and record["arrival_order"] == list(TYPES)
    driver.advance(5_000)
    assert "tx-closed" not in driver.state[CLOSED.name]


# Any interleaving of parts, duplicates, garbage, clock and watermark moves: every input
# record ends up in exactly one place, and every transaction closes exactly once.
_step = st.one_of(
    st.tuples(st.just("send"), st.sampled_from(TYPES), st.integers(0, 5)),
    st.tuples(st.just("garbage"), st.binary(max_size=20), st.just(0)),
    st.tuples(st.just("clock"), st.integers(0, 80_000), st.just(0)),
    st.tuples(st.just("watermark"), st.integers(0, 80_000), st.just(0)),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_step, max_size=60))
def test_every_record_is_accounted_for_once(steps):
    driver = Driver()
    sent = []
    for action, a, b in steps:
        if action == "send":
            topic = driver.config.topic_of(a)
            sent.append((topic, driver.offsets[topic]))
            driver.send(a, value(a, f"tx-{b}"))
        elif action == "garbage":
            topic = driver.config.topic_of("TypeA")
            sent.append((topic, driver.offsets[topic]))
            driver.send("TypeA", b"\xff" + a)
        elif action == "clock":
            driver.advance(a)
        else:
            driver.advance(watermark=driver.watermark + a if driver.watermark > 0 else START_MS)
    driver.advance(TIMEOUT + GRACE)  # every open transaction expires
    driver.advance(RETENTION)  # every closed marker is forgotten

    seen = []
    for topic, _, text in driver.outputs:
        record = json.loads(text)
        if topic in (driver.config.aggregated_topic, driver.config.expired_topic):
            seen += [(driver.config.topic_of(t), s["offset"]) for t, s in record["sources"].items()]
        else:
            seen.append((record["topic"], record["offset"]))
    assert sorted(seen) == sorted(sent)
    assert driver.state.get(DEADLINES.name, {}) == {} and driver.state.get(PARTS.name, {}) == {}
    assert driver.state.get(CLOSED.name, {}) == {}
    assert driver.counter("transactions_in_flight") == 0
    assert driver.counter("closed_markers") == 0


# --- what a transaction's close must survive, and counts that survive a restore ---------


class _Failing:
    """Wraps a driver part so that one of its methods raises."""

    def __init__(self, inner, name: str):
        self.inner, self.name = inner, name

    def __getattr__(self, attr):
        if attr == self.name:
            raise RuntimeError(f"{attr} failed")
        return getattr(self.inner, attr)


def test_an_aggregate_goes_out_when_its_timers_cannot_be_deleted(monkeypatch):
    driver = Driver()
    send_all(driver, TYPES[:-1])
    import tests.driver as driver_module

    real = driver_module.TimerService
    monkeypatch.setattr(
        driver_module, "TimerService", lambda d: _Failing(real(d), "delete_event_time_timer")
    )
    (out,) = driver.send(TYPES[-1], value(TYPES[-1]))
    assert json.loads(out[2])["status"] == "complete"
    monkeypatch.setattr(driver_module, "TimerService", real)
    driver.advance(1_000)  # the metrics flush
    assert driver.counter("internal_errors") == 1
    # The stale timers find the transaction closed: nothing more comes out of it.
    assert driver.advance(TIMEOUT + GRACE + 1, watermark=START_MS + TIMEOUT + 1) == []


def test_an_expired_partial_goes_out_when_its_metrics_fail():
    driver = Driver()
    driver.send("TypeA", value("TypeA"))
    driver.function.expired_parts = _Failing(driver.function.expired_parts, "update")
    (out,) = driver.advance(watermark=START_MS + TIMEOUT)
    assert json.loads(out[2])["status"] == "expired"


def held_in_state(driver: Driver) -> tuple[int, int]:
    """(open transactions, closed markers) as keyed state holds them."""
    return len(driver.state.get(DEADLINES.name, {})), len(driver.state.get(CLOSED.name, {}))


def gauges(driver: Driver) -> tuple[int, int]:
    driver.function.tally.flush(driver.now)  # what a timer or the next second would do
    return driver.counter("transactions_in_flight"), driver.counter("closed_markers")


def test_the_gauges_equal_what_state_holds_after_a_restore():
    driver = Driver()
    for n in range(7):
        send_all(driver, TYPES, transaction=f"done-{n}")
    for n in range(4):
        send_all(driver, TYPES[:2], transaction=f"open-{n}")
    assert held_in_state(driver) == gauges(driver) == (4, 7)
    driver.restart()
    driver.send("TypeA", b"not json")  # the restored instance's first record
    assert gauges(driver) == held_in_state(driver) == (4, 7)
    for n in range(2):
        send_all(driver, TYPES[2:], transaction=f"open-{n}")  # two of them close now
    assert gauges(driver) == held_in_state(driver) == (2, 9)
    driver.advance(RETENTION)  # the markers' retention ends, the open ones expire
    assert gauges(driver) == held_in_state(driver) == (0, 2)


def test_after_a_rescale_the_gauges_start_from_zero_and_never_go_below():
    driver = Driver()
    for n in range(3):
        send_all(driver, TYPES[:2], transaction=f"open-{n}")
    driver.restart(parallelism=2)  # another instance's copy: its counts are not ours
    driver.advance(watermark=START_MS + TIMEOUT)
    assert gauges(driver) == (0, 3)


def test_a_reference_record_cannot_overwrite_the_jobs_own_keys():
    driver = Driver()
    driver.send("TypeA", value("TypeA"))
    saved = dict(driver.broadcast)
    driver.reference("@held", {"open": 99})
    assert dict(driver.broadcast) == saved
    driver.advance(1_000)
    assert driver.counter("reference_errors") == 1


def test_counting_what_an_instance_holds_costs_one_write_when_it_changes():
    driver = Driver()
    driver.send("TypeA", value("TypeA"))  # opens: one write
    assert driver.calls["broadcast.put"] == 1
    driver.send("TypeB", value("TypeB"))  # held, nothing changes: none
    assert driver.calls["broadcast.put"] == 1
    send_all(driver, TYPES[2:])  # closes: one write
    assert driver.calls["broadcast.put"] == 2
