"""Processing is total and outputs are strict JSON, without Flink: milliseconds per test.

Whatever bytes arrive, `parse` returns an event or a dead letter and never raises; whatever an
enrichment hook does, the aggregate is emitted; every output is RFC 8259 JSON that a strict
consumer accepts (no NaN, no Infinity, no lone surrogate) and that crosses into Java (ASCII).
The live version of these checks, on the real broker and cluster, is tests/test_hostile_input.py.
"""

from __future__ import annotations

import base64
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from job import aggregate, records
from job.aggregate import Outcome, Part, Verdict, build_aggregate
from job.config import JobConfig
from job.enrich import enrich, parse_reference
from job.records import DeadLetter, Event, Source, parse
from job.rules import default_rules
from tests.kit import DictState, strict_json

TYPES = ("TypeA", "TypeB")
RULES = default_rules(TYPES, 120)
CONFIG = JobConfig(types=TYPES)
SOURCE = Source("Events-TypeA", 0, 1, 1_000)


def _parse(raw: bytes | None, max_bytes: int = 1_000_000):
    return parse(raw, SOURCE, CONFIG.type_of, max_bytes)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"transaction": "sur-\\ud800-x", "log": "x"}', records.NOT_STRICT_JSON),
        (b'{"transaction": "t", "log": "\\udfff"}', records.NOT_STRICT_JSON),
        (b'{"transaction": "t", "\\ud800": 1}', records.NOT_STRICT_JSON),  # in a key
        (b'{"transaction": "t", "n": NaN}', records.NOT_STRICT_JSON),
        (b'{"transaction": "t", "n": [Infinity]}', records.NOT_STRICT_JSON),
        (b'{"transaction": "t", "n": -Infinity}', records.NOT_STRICT_JSON),
        (b'{"transaction": "t", "n": 1e400}', records.NOT_STRICT_JSON),  # beyond a double
        (b'{"transaction": "t", "n": ' + b"[" * 5000 + b"]" * 5000 + b"}", records.NOT_JSON),
        (b'{"transaction": "t", "n": ' + b"9" * 5000 + b"}", records.NOT_JSON),  # int limit
        (b'\xef\xbb\xbf{"transaction": "t"}', records.NOT_JSON),  # a UTF-8 BOM
        (b'{"transaction": "t\xed\xa0\x80"}', records.NOT_JSON),  # a surrogate in UTF-8 bytes
        (b"", records.NOT_JSON),
    ],
)
def test_hostile_values_are_dead_letters_with_their_bytes(raw, reason):
    result = _parse(raw)
    assert isinstance(result, DeadLetter), result
    assert result.reason == reason
    letter = strict_json(result.to_json())
    assert base64.b64decode(letter["value_base64"]) == raw


@pytest.mark.parametrize(
    "raw",
    [
        b'{"transaction": "pair-\\ud83d\\ude00", "log": "\\u00e9"}',  # a valid surrogate pair
        b'{"transaction": "t", "n": 1e308, "m": ' + b"9" * 4000 + b"}",  # big, but in range
        b'{"transaction": "first", "transaction": "dup-key"}',  # the last duplicate key wins
        b'{"transaction": "' + b"x" * records.MAX_ID_BYTES + b'"}',  # the longest id
    ],
)
def test_strict_but_unusual_values_are_events(raw):
    result = _parse(raw)
    assert isinstance(result, Event), result
    result.transaction.encode("utf-8")


# Any JSON-ish value, including what Python's json writes but RFC 8259 forbids.
nasty_text = st.text(st.characters(codec=None, categories=None), max_size=8)
nasty_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | nasty_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(nasty_text, children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(nasty_values, nasty_text)
def test_whatever_parses_is_strict_and_whatever_is_refused_keeps_its_bytes(value, transaction):
    document = {"transaction": transaction, "value": value}
    raw = json.dumps(document).encode()  # Python writes NaN, Infinity and lone surrogates
    result = _parse(raw)
    if isinstance(result, Event):
        strict_json(result.value)
        result.transaction.encode("utf-8")
        state = DictState()
        step = aggregate.on_event(state, result, default_rules(("TypeA",), 120), 0)
        assert step.verdict is Verdict.COMPLETE
        strict_json(step.output.value)
        strict_json(step.output.key)
    else:
        assert base64.b64decode(strict_json(result.to_json())["value_base64"]) == raw
        has_nan = any(isinstance(x, float) and not math.isfinite(x) for x in _leaves(document))
        assert result.reason in {records.NOT_STRICT_JSON, records.BAD_TRANSACTION} or not has_nan


def _leaves(value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _record() -> dict:
    part = Part(0, 100, json.dumps({"transaction": "tx", "log": "a", "nested": {"n": 1}}), 0, 5)
    return build_aggregate("tx", {"TypeA": part}, TYPES, Outcome.COMPLETE, emitted_at=1)


@pytest.mark.parametrize(
    ("hook", "error"),
    [
        (lambda r: {"ratio": float("nan")}, "ValueError"),
        (lambda r: {"big": float("inf")}, "ValueError"),
        (lambda r: {"when": {1, 2}}, "TypeError"),  # json cannot encode a set
        (lambda r: {"name": "\ud800"}, "UnicodeEncodeError"),
        (lambda r: ["not", "a", "dict"], "TypeError"),
        (lambda r: 1 / 0, "ZeroDivisionError"),
    ],
)
def test_a_hook_returning_no_strict_json_is_an_enrichment_error(hook, error):
    record = enrich(_record(), {}, hook)
    assert record["enrichment_error"].startswith(error)
    assert "extra" not in record
    strict_json(records.to_json(record))


def test_a_hook_mutating_the_record_changes_nothing_emitted():
    def vandal(record: dict) -> dict:
        record["parts"]["TypeA"]["nested"]["n"] = 666
        record["sources"]["TypeA"]["offset"] = -1
        record["transaction"] = "someone else"
        return {"ok": True}

    original = _record()
    record = enrich(original, {}, vandal)
    assert record["parts"]["TypeA"]["nested"] == {"n": 1}
    assert record["sources"]["TypeA"]["offset"] == 5
    assert record["transaction"] == "tx"
    assert record["extra"] == {"ok": True}
    assert "reference" not in original  # the input record is left as it was


def test_a_failing_enricher_still_emits_the_aggregate():
    def broken(record: dict) -> dict:
        raise RuntimeError("reference data exploded")

    state = DictState()
    state.add_part("TypeA", Part(0, 100, '{"transaction": "tx"}', 0, 1))
    event = Event("tx", "TypeB", '{"transaction": "tx"}', Source("Events-TypeB", 0, 2, 150))
    step = aggregate.on_event(state, event, RULES, 0, broken)
    assert step.verdict is Verdict.COMPLETE
    out = strict_json(step.output.value)
    assert out["status"] == Outcome.COMPLETE and set(out["parts"]) == {"TypeA", "TypeB"}
    assert out["enrichment_error"] == "RuntimeError: reference data exploded"


def test_state_is_unchanged_when_closing_fails():
    """The Flink shell turns the exception into an internal_error dead letter of the record;
    the transaction must still hold exactly what it held, or the record counts twice."""

    class FailingRender(DictState):
        def mark_closed(self, closed) -> None:
            raise AssertionError("state changed before the output existed")

    state = FailingRender()
    state.add_part("TypeA", Part(0, 100, '{"transaction": "tx"}', 0, 1))
    bad_part = Event("tx", "TypeB", '{"transaction": "tx", "n": NaN}', SOURCE)  # not strict
    with pytest.raises(ValueError):
        aggregate.on_event(state, bad_part, RULES, 0)
    assert state.held_types() == ["TypeA"] and state.closed_status() is None


def test_internal_error_letter_keeps_bytes_and_names_the_exception():
    letter = records.internal_error(KeyError("\ud800 boom"), b"\x00raw", SOURCE, "tx-\ud800")
    doc = strict_json(letter.to_json())
    assert doc["reason"] == records.INTERNAL_ERROR
    assert doc["detail"].startswith("KeyError")
    assert base64.b64decode(doc["value_base64"]) == b"\x00raw"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b'"TypeA"', b'{"slo": NaN}'),
        (b'"Type\\ud800"', b"{}"),
        (b"TypeA", b"[" * 5000 + b"]" * 5000),
        (b"TypeA", b"\xff\xfe"),
        (b"\xff", b"{}"),
    ],
)
def test_bad_reference_records_raise_value_error_only(key, value):
    with pytest.raises(ValueError):
        parse_reference(key, value)
