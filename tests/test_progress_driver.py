"""Progress records of open transactions and the quality metrics, driven over the Flink
function itself with a fake clock (tests/driver.py)."""

from __future__ import annotations

from dataclasses import replace

from pyflink.datastream import TimeDomain

from job.config import JobConfig
from job.correlate import DEADLINES, Open
from job.metrics import BUCKETS_MS, COMPLETION, INF, arrival_offset, late_age
from tests.driver import START_MS, Driver

TYPES = JobConfig().types
INTERVAL, TIMEOUT, GRACE = 5_000, 60_000, 10_000
CONFIG = JobConfig(timeout_s=60, expiry_grace_s=10, closed_retention_s=600)
PROGRESS = replace(CONFIG, progress_interval_s=INTERVAL / 1000)


def value(record_type: str, transaction: str = "tx-1") -> dict:
    return {"transaction": transaction, "log": f"{record_type} done"}


def progress(driver: Driver) -> list:
    return [(k, v) for t, k, v in driver.outputs if t == driver.config.progress_topic]


def progress_timer(driver: Driver, key: str = "tx-1") -> int:
    """The progress timer (event time) an open transaction's state names (0: none)."""
    stored = driver.state[DEADLINES.name].get(key)
    return 0 if stored is None else Open.from_state(stored, None).progress_at


def timer_set(driver: Driver, at: int, key: str = "tx-1") -> bool:
    return (TimeDomain.EVENT_TIME, key, at) in driver.timers


def send(driver: Driver, record_type: str, at: int, transaction: str = "tx-1") -> list:
    """A record with event time START_MS + at."""
    return driver.send(record_type, value(record_type, transaction), event_ms=START_MS + at)


def watermark(driver: Driver, at: int) -> list:
    return driver.advance(watermark=START_MS + at)


def test_an_open_transaction_is_reported_once_event_time_passes_and_only_when_it_changed():
    driver = Driver(PROGRESS)
    send(driver, "TypeA", 0)
    send(driver, "TypeC", 1_000)  # within the first interval: one report for both
    assert watermark(driver, INTERVAL - 1) == []
    (out,) = watermark(driver, INTERVAL)  # first part + interval, in event time
    assert out[:2] == (driver.config.progress_topic, '"tx-1"')
    (report,) = driver.on(driver.config.progress_topic)
    assert report["status"] == "open" and report["types"] == ["TypeA", "TypeC"]
    assert report["missing"] == ["TypeB", "TypeD", "TypeE"]
    assert (report["first_event_time"], report["last_event_time"]) == (START_MS, START_MS + 1_000)
    assert report["expires_at"] == START_MS + TIMEOUT
    assert watermark(driver, 4 * INTERVAL) == []  # nothing new: no timer, no record
    assert progress_timer(driver) == 0
    send(driver, "TypeB", 4 * INTERVAL)
    assert progress_timer(driver) == START_MS + 5 * INTERVAL
    (again,) = [v for _, _, v in watermark(driver, 5 * INTERVAL)]
    assert '"types":["TypeA","TypeB","TypeC"]' in again.replace(" ", "")
    assert driver.counter("progress_records") == 2


def test_the_wall_clock_alone_reports_nothing():
    """Reading a backlog, the wall clock runs ahead of event time: a transaction whose parts
    are all in the backlog must not be reported because processing took a while."""
    driver = Driver(PROGRESS)
    send(driver, "TypeA", 0)
    driver.advance(TIMEOUT // 2)
    assert progress(driver) == []


def test_closing_a_reported_transaction_deletes_its_progress_record():
    driver = Driver(PROGRESS)
    send(driver, "TypeA", 0)
    watermark(driver, INTERVAL)
    for t in TYPES[1:3]:
        send(driver, t, INTERVAL + 100)  # arms the progress timer again, once
    armed = progress_timer(driver)
    assert armed == START_MS + 2 * INTERVAL + 100 and timer_set(driver, armed)
    closing = [o for t in TYPES[3:] for o in send(driver, t, INTERVAL + 200)]
    assert [t for t, _, _ in closing] == [
        driver.config.aggregated_topic,
        driver.config.progress_topic,
    ]
    assert closing[1][1:] == ('"tx-1"', None)  # a tombstone: compaction forgets the record
    assert not timer_set(driver, armed)  # deleted, not left to fire


def test_an_expired_reported_transaction_gets_a_tombstone_too():
    driver = Driver(PROGRESS)
    send(driver, "TypeA", 0)
    watermark(driver, INTERVAL)
    out = watermark(driver, TIMEOUT)
    assert [(t, v is None) for t, _, v in out] == [
        (driver.config.expired_topic, False), (driver.config.progress_topic, True),
    ]  # fmt: skip


def test_a_transaction_that_completes_within_the_interval_is_never_reported():
    driver = Driver(PROGRESS)
    send(driver, "TypeA", 0)
    outputs = [o for t in TYPES[1:] for o in send(driver, t, INTERVAL - 1)]
    assert [t for t, _, _ in outputs] == [driver.config.aggregated_topic]  # no tombstone
    assert not timer_set(driver, START_MS + INTERVAL)
    assert watermark(driver, 2 * INTERVAL) == [] and progress(driver) == []


def test_a_middle_record_with_a_pending_progress_timer_still_costs_three_state_calls():
    driver = Driver(PROGRESS)
    send(driver, "TypeA", 0)
    driver.calls.clear()
    send(driver, "TypeB", 10)
    assert dict(driver.calls) == {"deadlines.value": 1, "parts.put": 1, "deadlines.update": 1}


def test_without_progress_there_is_no_progress_timer():
    driver = Driver(CONFIG)
    send(driver, "TypeA", 0)
    flush = driver.function._flush_timer_at
    timers = [at for _, k, at in driver.timers if k == "tx-1" and at != flush]
    assert len(timers) == 2 and progress_timer(driver) == 0  # the two deadlines only
    watermark(driver, TIMEOUT)
    assert progress(driver) == []


def test_state_of_the_version_before_progress_still_reads_and_reports():
    """A 6-tuple (no progress fields) as the previous version stored it."""
    driver = Driver(PROGRESS)
    send(driver, "TypeA", 0)
    stored = driver.state[DEADLINES.name]["tx-1"]
    driver.state[DEADLINES.name]["tx-1"] = stored[:6]
    send(driver, "TypeB", 10)  # no progress timer pending in that state: armed
    watermark(driver, INTERVAL + 10)
    (report,) = driver.on(driver.config.progress_topic)
    assert report["types"] == ["TypeA", "TypeB"]


def test_quality_metrics_name_the_missing_types_the_arrival_offsets_and_the_late_ones():
    driver = Driver(CONFIG)
    for t, at in zip(TYPES, (0, 40, 200, 900, 20_000), strict=True):
        driver.send(t, value(t, "done"), event_ms=START_MS + at)
    driver.send("TypeA", value("TypeA", "part"), event_ms=START_MS)
    driver.send("TypeB", value("TypeB", "part"), event_ms=START_MS + 3_000)
    driver.advance(TIMEOUT + GRACE)  # "part" expires without C, D, E
    driver.advance(7_000)
    driver.send("TypeD", value("TypeD", "part"))  # late, 7 s after it closed
    driver.advance(1_000)  # the flush timer

    def counts(histogram) -> dict:
        bounds = [*BUCKETS_MS, INF]
        return {b: driver.counter(histogram.bucket(b)) for b in bounds}

    for t, missing in zip(TYPES, (0, 0, 1, 1, 1), strict=True):
        assert driver.counter(f"type.{t}.missing") == missing, t
    assert driver.counter("type.TypeD.late") == 1 and driver.counter("type.TypeA.late") == 0
    b = counts(arrival_offset("TypeB"))  # offsets 40 and 3,000: cumulative buckets
    assert (b[50], b[2_500], b[5_000], b[INF]) == (1, 1, 2, 2)
    assert driver.counter(arrival_offset("TypeB").sum) == 3_040
    assert driver.counter(arrival_offset("TypeE").count) == 1
    age = counts(late_age("TypeD"))
    assert (age[5_000], age[10_000], age[INF]) == (0, 1, 1)
    completion = counts(COMPLETION)  # "done": first part at START_MS, emitted at START_MS
    assert completion[INF] == 1 and driver.counter(COMPLETION.sum) == 0
