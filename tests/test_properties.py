"""Property and fuzz tests of the parser and the rules (hypothesis), without Flink.

The accounting invariant: every input record ends up in exactly one place: a part of an
aggregate, a part of an expired partial, a dead letter, or a late record.
"""

from __future__ import annotations

import base64
import json
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from job import aggregate, records
from job.aggregate import Outcome, Verdict
from job.config import JobConfig
from job.records import BAD_TRANSACTION, DeadLetter, Event, Source, id_problem, parse
from job.rules import default_rules
from tests.kit import DictState

TYPES = ("TypeA", "TypeB", "TypeC")
RULES = default_rules(TYPES, 120)
CONFIG = JobConfig(types=TYPES)


@given(st.binary(max_size=300), st.sampled_from(["Events-TypeA", "Events-TypeZ", "x"]))
def test_parser_never_raises_and_keeps_bad_bytes(raw, topic):
    result = parse(raw, Source(topic, 0, 1, 2), CONFIG.type_of, 200)
    assert isinstance(result, Event | DeadLetter)
    if isinstance(result, DeadLetter):
        assert base64.b64decode(json.loads(result.to_json())["value_base64"]) == raw


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4), st.text(min_size=1))
def test_parser_accepts_any_object_with_a_storable_string_transaction(extra, transaction):
    """Any id the table can key (no U+0000, at most MAX_ID_BYTES of UTF-8) is an event; any
    other is a dead letter bad_transaction, with its bytes."""
    value = {**extra, "transaction": transaction}
    raw = json.dumps(value).encode()
    event = parse(raw, Source("Events-TypeA", 0, 0, 0), CONFIG.type_of, 10_000)
    if id_problem(transaction) is not None:
        assert isinstance(event, DeadLetter) and event.reason == BAD_TRANSACTION
        assert event.raw == raw
        return
    assert isinstance(event, Event)
    assert event.transaction == transaction
    assert json.loads(event.value) == value


# One step of a run: a record (transaction index, type), or a timer (expire / forget).
steps = st.lists(
    st.one_of(
        st.tuples(st.just("record"), st.integers(0, 5), st.sampled_from(TYPES)),
        st.tuples(st.just("expire"), st.integers(0, 5), st.none()),
        st.tuples(st.just("forget"), st.integers(0, 5), st.none()),
    ),
    max_size=120,
)


@settings(max_examples=300)
@given(steps)
def test_every_record_is_accounted_for_exactly_once(run):
    states: dict[str, DictState] = {}
    outputs: list[aggregate.Output] = []
    sent = []
    for offset, (action, index, record_type) in enumerate(run):
        tx = f"tx-{index}"
        state = states.setdefault(tx, DictState())
        if action == "record":
            value = json.dumps({"transaction": tx, "log": record_type})
            event = Event(
                tx, record_type, value, Source("Events-" + record_type, 0, offset, offset)
            )
            sent.append(offset)
            step = aggregate.on_event(state, event, RULES, now_ms=offset)
            if step.verdict is Verdict.COMPLETE:
                assert state.held_types() == []
            if step.output:
                outputs.append(step.output)
        elif action == "expire" and state.held_types():
            outputs.append(aggregate.close(state, tx, TYPES, Outcome.EXPIRED, now_ms=offset))
        elif action == "forget" and not state.held_types():
            states.pop(tx)  # retention over: the transaction is forgotten
    for tx, state in states.items():  # end of input: every open partial expires
        if state.held_types():
            outputs.append(aggregate.close(state, tx, TYPES, Outcome.EXPIRED, now_ms=len(run)))

    accounted = Counter()
    for output in outputs:
        doc = json.loads(output.value)
        if output.kind in (Outcome.COMPLETE, Outcome.EXPIRED):
            assert set(doc["types"]) | set(doc["missing"]) == set(TYPES)
            assert (output.kind == Outcome.COMPLETE) == (doc["missing"] == [])
            accounted.update(s["offset"] for s in doc["sources"].values())
        elif output.kind == Outcome.DEAD_LETTER:
            assert doc["reason"] == records.DUPLICATE
            accounted[doc["offset"]] += 1
        else:
            assert output.kind == Outcome.LATE
            accounted[doc["offset"]] += 1
    assert accounted == Counter(sent)
