"""`job.metrics.Tally`: counts summed in Python, handed to Flink's counters in batches."""

import pytest

from job.metrics import Tally
from tests.driver import FakeCounter


def test_counts_reach_the_counters_only_when_flushed_one_call_each():
    counters = {"a": FakeCounter(), "in_flight": FakeCounter()}
    tally = Tally(counters, every_ms=1_000, now_ms=0)
    for _ in range(500):
        tally.add("a")
        tally.add("in_flight")
        tally.add("in_flight", -1)
    tally.add("in_flight", -2)
    assert counters["a"].count == 0
    assert not tally.due(999) and tally.due(1_000)
    tally.flush(1_000)
    assert (counters["a"].count, counters["a"].calls) == (500, 1)
    assert (counters["in_flight"].count, counters["in_flight"].calls) == (-2, 1)
    assert not tally.due(5_000)  # nothing pending


def test_an_unknown_counter_fails_at_once():
    with pytest.raises(KeyError):
        Tally({}, every_ms=1_000, now_ms=0).add("nope")
