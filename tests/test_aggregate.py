"""The correlation rules, without Flink: milliseconds per test."""

import json
from dataclasses import replace

import pytest

from job.aggregate import (
    BY_EVENT_TIME,
    BY_WALL_CLOCK,
    Closed,
    Outcome,
    Part,
    TimerAction,
    TimerDecision,
    Verdict,
    build_aggregate,
    classify,
    close,
    closed_marker,
    deadlines,
    deferred_fallback,
    kafka_key,
    late_record,
    on_event,
    on_timer,
    read_closed_marker,
)
from job.records import Event, Source
from job.rules import SINCE_LAST, Rule, default_rules
from tests.kit import DictState

TYPES = ("TypeA", "TypeB", "TypeC")
RULES = default_rules(TYPES, 120)


@pytest.mark.parametrize(
    ("event_type", "held", "closed", "verdict"),
    [
        ("TypeA", [], None, Verdict.OPENED),
        ("TypeB", ["TypeA"], None, Verdict.HELD),
        ("TypeC", ["TypeA", "TypeB"], None, Verdict.COMPLETE),
        ("TypeA", ["TypeC", "TypeB"], None, Verdict.COMPLETE),  # order does not matter
        ("TypeA", ["TypeA"], None, Verdict.DUPLICATE),
        ("TypeA", ["TypeA", "TypeB"], None, Verdict.DUPLICATE),
        ("TypeA", [], Outcome.COMPLETE, Verdict.LATE),
        ("TypeC", [], Outcome.EXPIRED, Verdict.LATE),
    ],
)
def test_classify(event_type, held, closed, verdict):
    assert classify(event_type, held, closed, TYPES) is verdict


def test_single_type_completes_on_first_record():
    assert classify("TypeA", [], None, ["TypeA"]) is Verdict.COMPLETE


def test_wall_clock_fallback_waits_for_quiet_input():
    assert deferred_fallback(now_ms=10_000, last_input_ms=1_000, grace_ms=3_000) is None
    assert deferred_fallback(now_ms=10_000, last_input_ms=7_000, grace_ms=3_000) is None
    assert deferred_fallback(now_ms=10_000, last_input_ms=9_000, grace_ms=3_000) == 12_000


def test_deadlines_since_first_are_first_event_plus_timeout_and_grace_on_the_wall_clock():
    rule = Rule(TYPES, 120_000)
    assert deadlines(rule, 1_000, 1_000, 1_000, 50_000, 10_000) == (121_000, 180_000)
    # A later part (event time 31 s) does not move the event-time deadline; the fallback is
    # what remains of it on the wall clock, plus grace.
    assert deadlines(rule, 1_000, 31_000, 31_000, 90_000, 10_000) == (121_000, 190_000)


def test_deadlines_since_last_follow_the_latest_part_up_to_the_cap():
    gap = Rule(TYPES, 10_000, SINCE_LAST)
    assert deadlines(gap, 0, 7_000, 7_000, 100, 1_000) == (17_000, 11_100)
    assert deadlines(gap, 0, 7_000, 3_000, 100, 1_000) == (17_000, 15_100)  # out of order
    capped = Rule(TYPES, 10_000, SINCE_LAST, max_duration_ms=12_000)
    assert deadlines(capped, 0, 7_000, 7_000, 100, 1_000) == (12_000, 6_100)
    # A part whose event time is already past the deadline: the fallback is only grace.
    assert deadlines(capped, 0, 7_000, 20_000, 100, 1_000) == (12_000, 1_100)


def _part(seq: int, t: int, record_type: str) -> Part:
    return Part(seq, t, json.dumps({"transaction": "tx-1", "log": record_type}), 0, seq)


def test_complete_aggregate_lists_parts_in_arrival_order_and_types_in_config_order():
    parts = {"TypeC": _part(0, 500, "c"), "TypeA": _part(1, 700, "a"), "TypeB": _part(2, 650, "b")}
    record = build_aggregate("tx-1", parts, TYPES, Outcome.COMPLETE, emitted_at=9_999)
    assert record["transaction"] == "tx-1"
    assert record["status"] == Outcome.COMPLETE
    assert record["types"] == ["TypeA", "TypeB", "TypeC"]
    assert record["missing"] == []
    assert record["arrival_order"] == ["TypeC", "TypeA", "TypeB"]
    assert record["parts"]["TypeA"] == {"transaction": "tx-1", "log": "a"}
    assert (record["first_event_time"], record["last_event_time"]) == (500, 700)
    assert record["duration_ms"] == 200
    assert record["emitted_at"] == 9_999
    assert record["sources"]["TypeA"] == {"partition": 0, "offset": 1}


def test_expired_aggregate_names_missing_types():
    parts = {"TypeB": _part(0, 100, "b")}
    record = build_aggregate("tx-1", parts, TYPES, Outcome.EXPIRED, emitted_at=0)
    assert record["status"] == Outcome.EXPIRED
    assert record["types"] == ["TypeB"]
    assert record["missing"] == ["TypeA", "TypeC"]
    assert list(record["parts"]) == ["TypeB"]


def test_late_record_carries_final_status_and_origin():
    event = Event("tx-9", "TypeA", '{"transaction": "tx-9"}', Source("Events-TypeA", 2, 41, 123))
    late = json.loads(late_record(event, Outcome.EXPIRED))
    assert late["final_status"] == Outcome.EXPIRED
    assert (late["topic"], late["partition"], late["offset"]) == ("Events-TypeA", 2, 41)
    assert late["value"] == {"transaction": "tx-9"}


def test_kafka_key_is_json_quoted_like_the_original_producer():
    assert kafka_key("tx-1") == '"tx-1"'
    assert kafka_key(None) is None


# The timer decisions of the Flink shell, with a fake clock (plain integers).
GRACE = 3_000
EVENT_AT, WALL_AT, UNTIL = 5_000, 10_000, 70_000  # what the state of a transaction names


def _timer(fired_at, wall_clock, open_=True, closed_until=None, now=10_000, last_input=0):
    deadlines = (EVENT_AT, WALL_AT) if open_ else None
    return on_timer(fired_at, wall_clock, deadlines, closed_until, now, last_input, GRACE)


def test_the_progress_timer_reports_in_event_time_only_and_expiry_comes_first():
    def at(fired_at, wall_clock, progress_at):
        deadlines = (EVENT_AT, WALL_AT)
        return on_timer(fired_at, wall_clock, deadlines, None, 10_000, 0, GRACE, progress_at)

    assert at(2_000, False, 2_000).action is TimerAction.REPORT
    assert at(2_000, True, 2_000).action is TimerAction.IGNORE  # a wall-clock timer
    assert at(2_000, False, 0).action is TimerAction.IGNORE  # none pending: stale
    assert at(EVENT_AT, False, EVENT_AT).action is TimerAction.EXPIRE
    assert on_timer(2_000, False, None, UNTIL, 10_000, 0, GRACE, 2_000).action is (
        TimerAction.IGNORE
    )  # closed since


def test_event_time_timer_of_an_open_transaction_expires_it_by_event_time():
    decision = _timer(EVENT_AT, wall_clock=False, last_input=9_999)  # input flowing: no matter
    assert decision == TimerDecision(TimerAction.EXPIRE, expired_by=BY_EVENT_TIME)


def test_wall_clock_fallback_expires_only_after_quiet_input():
    assert _timer(WALL_AT, wall_clock=True, now=10_000, last_input=7_000) == TimerDecision(
        TimerAction.EXPIRE, expired_by=BY_WALL_CLOCK
    )
    # Input 1 s ago: look again when the input has been quiet for the whole grace.
    assert _timer(WALL_AT, wall_clock=True, now=10_000, last_input=9_000) == TimerDecision(
        TimerAction.DEFER, again_at=12_000
    )


def test_timers_the_state_does_not_name_are_stale():
    # The metrics' flush timer, or a fallback's earlier time after a deferral.
    assert _timer(WALL_AT - 1, wall_clock=True).action is TimerAction.IGNORE
    assert _timer(EVENT_AT + 1, wall_clock=False).action is TimerAction.IGNORE
    # An event-time timer at the wall-clock deadline's number is still not the fallback.
    assert _timer(WALL_AT, wall_clock=False).action is TimerAction.IGNORE


def test_retention_timer_forgets_a_closed_transaction_and_stale_timers_do_nothing():
    closed = dict(open_=False, closed_until=UNTIL)
    assert _timer(UNTIL, wall_clock=True, **closed).action is TimerAction.FORGET
    # A flush or fallback timer before the retention ends, an event-time timer, no marker.
    assert _timer(UNTIL - 1, wall_clock=True, **closed).action is TimerAction.IGNORE
    assert _timer(UNTIL, wall_clock=False, **closed).action is TimerAction.IGNORE
    assert _timer(UNTIL, wall_clock=True, open_=False).action is TimerAction.IGNORE


def test_a_marker_from_before_the_retention_end_was_stored_ends_at_any_wall_clock_timer():
    assert read_closed_marker("complete") == (Closed("complete"), 0)
    assert _timer(1, wall_clock=True, open_=False, closed_until=0).action is TimerAction.FORGET


def test_closed_marker_round_trips():
    closed = Closed(Outcome.EXPIRED, "refund@eu", 2)  # a kind may hold the separator
    assert read_closed_marker(closed_marker(closed, UNTIL)) == (closed, UNTIL)
    assert read_closed_marker(closed_marker(Closed("complete"), UNTIL)) == (
        Closed("complete"),
        UNTIL,
    )


def test_closed_markers_of_earlier_versions_read():
    assert read_closed_marker(f"expired@{UNTIL}") == (Closed("expired"), UNTIL)
    assert read_closed_marker("complete") == (Closed("complete"), 0)


def test_a_straggler_after_the_retention_opens_a_new_transaction():
    """The edge of the closed marker: late while remembered, a new transaction after."""
    state = DictState()
    event = Event("tx-r", "TypeA", '{"transaction": "tx-r"}', Source("Events-TypeA", 0, 1, 5))
    for t in TYPES:
        on_event(state, replace(event, type=t), RULES, 0)
    assert state.closed_status() == Outcome.COMPLETE
    assert on_event(state, event, RULES, 0).verdict is Verdict.LATE
    # The retention timer fires: the shell clears the marker as the decision says.
    assert _timer(UNTIL, True, open_=False, closed_until=UNTIL).action is TimerAction.FORGET
    state.forget()
    assert on_event(state, event, RULES, 0).verdict is Verdict.OPENED


def test_an_expired_partial_names_the_timer_that_closed_it():
    state = DictState()
    state.add_part("TypeA", _part(0, 100, "a"))
    output = close(state, "tx-1", TYPES, Outcome.EXPIRED, 0, expired_by=BY_WALL_CLOCK)
    assert json.loads(output.value)["expired_by"] == BY_WALL_CLOCK
    assert state.closed_status() == Outcome.EXPIRED and state.held_types() == []
