"""What the writer does with each record, without Flink or PostgreSQL: milliseconds per test.

Every record of the output topics becomes exactly one row, one diverted record or nothing
(a tombstone), whatever its bytes (`job.storage.classify` never raises); a row holds nothing
PostgreSQL refuses (no U+0000 in text or jsonb, no lone surrogate); and the record is kept
exactly as emitted. The same classes go through the real writer into the real PostgreSQL in
tests/test_storage_total.py.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from job import storage
from job.aggregate import Part, build_aggregate
from job.records import MAX_ID_BYTES, to_json
from job.storage import Coordinates, Diverted, Row, backoff_ms, classify, transient

AT = Coordinates("Events_Aggregated", 1, 42)
TYPES = ("TypeA", "TypeB", "TypeC")


def output(transaction: str = "tx-1", logs: dict | None = None, status: str = "expired") -> str:
    """An aggregate as the correlator emits it."""
    logs = logs or {"TypeA": "a"}
    parts = {
        t: Part(i, 1_000 + i, to_json({"transaction": transaction, "log": log}), 0, i)
        for i, (t, log) in enumerate(logs.items())
    }
    record = build_aggregate(transaction, parts, TYPES, status, 5_000)
    record.update(kind=None, rule_version=0)
    return to_json(record)


def test_an_aggregate_is_a_row_stored_exactly():
    text = output()
    row = classify(text.encode(), AT)
    assert isinstance(row, Row)
    assert (row.transaction, row.status, row.first_event_ms, row.emitted_at_ms) == (
        "tx-1", "expired", 1_000, 5_000,
    )  # fmt: skip
    assert json.loads(row.present_types) == ["TypeA"]
    assert json.loads(row.missing_types) == ["TypeB", "TypeC"]
    assert row.aggregate == text and row.aggregate_text is None


@pytest.mark.parametrize(
    "logs",
    [
        {"TypeA": "a\x00b"},  # in a log
        {"TypeA": "ok", "TypeB": "\x00"},  # a whole log
    ],
)
def test_u0000_in_a_log_is_stored_readable_and_exactly(logs):
    text = output(logs=logs)
    assert "\\u0000" in text
    row = classify(text.encode(), AT)
    assert isinstance(row, Row)
    assert row.aggregate_text == text  # exactly as emitted
    assert "\\u0000" not in row.aggregate and "\x00" not in row.aggregate
    assert json.loads(row.aggregate) == storage.without_nul(json.loads(text))


def test_u0000_nested_and_in_a_key_is_read_as_u_fffd():
    document = json.loads(output())
    document["parts"]["TypeA"]["nested"] = {"k\x00": ["x\x00", {"deep": "\x00"}]}
    text = to_json(document)
    row = classify(text.encode(), AT)
    stored = json.loads(row.aggregate)
    assert stored["parts"]["TypeA"]["nested"] == {"k\ufffd": ["x\ufffd", {"deep": "\ufffd"}]}
    assert json.loads(row.aggregate_text) == document


def test_a_backslash_u0000_in_a_log_is_text_not_nul():
    text = output(logs={"TypeA": "\\u0000"})  # six characters, no U+0000
    row = classify(text.encode(), AT)
    assert row.aggregate == text and row.aggregate_text is None


def test_every_unicode_plane_is_stored_as_is():
    # A character of each of the 17 planes (U+0041, U+10400, ..., U+10FFFD), in id and log.
    chars = "".join(chr(plane * 0x10000 + (0x41 if plane == 0 else 0x400)) for plane in range(16))
    chars += "\U0010fffd"
    text = output(transaction=f"tx-{chars}", logs={"TypeA": chars})
    row = classify(text.encode(), AT)
    assert isinstance(row, Row) and row.transaction == f"tx-{chars}"
    assert row.aggregate == text and json.loads(row.aggregate)["parts"]["TypeA"]["log"] == chars


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", storage.NOT_JSON),
        (b"\xff\xfe{}", storage.NOT_JSON),
        (b'{"transaction": "t", "n": NaN}', storage.NOT_STRICT_JSON),
        (b'{"transaction": "\\ud800"}', storage.NOT_STRICT_JSON),
        (b"[]", storage.NOT_AN_OUTPUT),
        (b'{"transaction": "t"}', storage.NOT_AN_OUTPUT),
        (b'{"transaction": "t", "status": "complete"}', storage.NOT_AN_OUTPUT),
    ],
)
def test_what_is_no_output_is_diverted_with_its_bytes(value, reason):
    diverted = classify(value, AT)
    assert isinstance(diverted, Diverted)
    assert (diverted.reason, diverted.value, diverted.at) == (reason, value, AT)


def test_ids_the_key_cannot_hold_are_diverted():
    for transaction in ("a\x00b", "x" * (MAX_ID_BYTES + 1), "é" * (MAX_ID_BYTES // 2 + 1)):
        diverted = classify(output(transaction=transaction).encode(), AT)
        assert isinstance(diverted, Diverted) and diverted.reason == storage.UNSTORABLE_ID
    assert isinstance(classify(output(transaction="x" * MAX_ID_BYTES).encode(), AT), Row)


def test_numbers_out_of_the_columns_range_are_no_output():
    document = json.loads(output())
    document["first_event_time"] = 2**63
    assert classify(to_json(document).encode(), AT).reason == storage.NOT_AN_OUTPUT


def test_a_tombstone_is_nothing():
    assert classify(None, AT) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_have_exactly_one_place_and_never_raise(value):
    placed = classify(value, AT)
    assert isinstance(placed, Row | Diverted)
    if isinstance(placed, Row):
        _storable(placed)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(min_size=1, max_size=50))
def test_any_log_and_id_is_stored_or_diverted_and_rows_hold_nothing_postgresql_refuses(
    log, transaction
):
    try:
        text = output(transaction=transaction, logs={"TypeA": log})
    except ValueError:  # a lone surrogate: the correlator emits no such output
        return
    placed = classify(text.encode(), AT)
    if isinstance(placed, Row):
        _storable(placed)
        exact = placed.aggregate_text or placed.aggregate
        assert json.loads(exact) == json.loads(text)
    else:
        assert placed.reason == storage.UNSTORABLE_ID


def _storable(row: Row) -> None:
    """Nothing in the row's text or JSON that PostgreSQL refuses."""
    for text in (row.transaction, row.status, row.kind or "", row.present_types,
                 row.missing_types, row.aggregate, row.aggregate_text or ""):  # fmt: skip
        assert "\x00" not in text
        text.encode("utf-8")  # no lone surrogate
    for text in (row.present_types, row.missing_types, row.aggregate):
        assert "\\u0000" not in text.replace("\\\\", "")


def test_transient_errors_wait_and_refusals_divert():
    assert transient(None)  # no answer at all
    # away, shutting down, starting, disk full, too many clients, serialization, I/O, no
    # table, no grant: the database's fault, so the same rows are tried again later
    for sqlstate in ("08006", "57P01", "57P03", "53100", "53300", "40001", "58030", "42P01",
                     "42501"):  # fmt: skip
        assert transient(sqlstate), sqlstate
    # a character jsonb refuses, an encoding error, an index entry too large, a constraint
    for sqlstate in ("22P05", "22021", "54000", "23505", "22003"):
        assert not transient(sqlstate), sqlstate


def test_backoff_doubles_to_a_cap():
    assert [backoff_ms(n) for n in range(1, 7)] == [500, 1000, 2000, 4000, 5000, 5000]
    assert backoff_ms(10_000) == 5000  # however long the outage


def test_u0000_nested_as_deep_as_the_parser_goes_is_stored():
    """The correlator takes nesting up to about 1,000 levels: U+0000 at the bottom of it is
    read as U+FFFD without recursion running out."""
    document = json.loads(output())
    document["parts"]["TypeA"]["deep"] = json.loads("[" * 900 + '"\\u0000"' + "]" * 900)
    text = to_json(document)
    row = classify(text.encode(), AT)
    assert isinstance(row, Row) and row.aggregate_text == text
    assert "\\u0000" not in row.aggregate and "\\ufffd" in row.aggregate


def test_a_record_the_writer_cannot_place_is_diverted_not_raised(monkeypatch):
    monkeypatch.setattr(storage, "to_row", lambda *_: 1 / 0)
    placed = classify(output().encode(), AT)
    assert isinstance(placed, Diverted) and placed.reason == storage.INTERNAL_ERROR
    assert placed.detail.startswith("ZeroDivisionError")
