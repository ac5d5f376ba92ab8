"""Every output fits Kafka's default record size, at the job's default limits: milliseconds.

An input record may be up to `--max-record-bytes` (1,000,000 by default); the outputs that
carry copies of input (a dead letter in base64, a late record, an aggregate of five such
parts) would not fit Kafka's 1 MiB. `job.sizes.fit` leaves the copies out and says where the
originals are. The same on the real broker: tests/test_storage_total.py.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from job.aggregate import Outcome, Output, Part, build_aggregate, kafka_key, late_record
from job.config import JobConfig
from job.records import Event, Source, parse, to_json
from job.sizes import fit, size

CONFIG = JobConfig()  # the defaults, not limits lowered for the test
LIMIT = CONFIG.max_output_bytes
KAFKA_MAX_REQUEST = 1_048_576  # the producer's default max.request.size
TYPES = CONFIG.types


def _fit(output: Output) -> Output:
    return fit(output, LIMIT, CONFIG.topic_of)


def _aggregate(part_bytes: list[int], transaction: str = "tx-1") -> Output:
    parts = {
        t: Part(i, 1_000 + i, to_json({"transaction": transaction, "log": "x" * n}), i % 3, 10 + i)
        for i, (t, n) in enumerate(zip(TYPES, part_bytes, strict=False))
    }
    status = Outcome.COMPLETE if len(parts) == len(TYPES) else Outcome.EXPIRED
    record = build_aggregate(transaction, parts, TYPES, status, 2_000)
    record.update(kind=None, rule_version=0, extra={"k": "v"})
    return Output(status, kafka_key(transaction), to_json(record), record)


def test_an_output_that_fits_is_unchanged():
    output = _aggregate([100, 100])
    assert _fit(output) is output


def test_an_aggregate_of_five_parts_under_the_record_limit_leaves_its_parts_out():
    output = _aggregate([CONFIG.max_record_bytes - 40] * 5)
    assert size(output) > 5_000_000
    fitted = _fit(output)
    assert size(fitted) <= LIMIT < KAFKA_MAX_REQUEST
    document = json.loads(fitted.value)
    assert document["parts"] is None and document["extra"] == {"k": "v"}
    omitted = document["omitted"]
    assert omitted["reason"] == "too_large" and omitted["fields"] == ["parts"]
    assert omitted["bytes"] == size(output) and omitted["limit"] == LIMIT
    # Each original is found on its topic, partition and offset.
    assert omitted["parts_at"]["TypeC"] == {"topic": "Events-TypeC", "partition": 2, "offset": 12}
    assert document["types"] == list(TYPES) and document["status"] == "complete"


def test_a_dead_letter_of_a_record_just_under_the_limit_fits():
    raw = b"\xff" * (CONFIG.max_record_bytes - 1)  # not JSON, just under --max-record-bytes
    letter = parse(raw, Source("Events-TypeA", 0, 7, 1), CONFIG.type_of, CONFIG.max_record_bytes)
    output = Output(Outcome.DEAD_LETTER, None, letter.to_json())
    assert size(output) > KAFKA_MAX_REQUEST
    fitted = _fit(output)
    assert size(fitted) <= LIMIT
    document = json.loads(fitted.value)
    assert document["value_base64"] is None and document["reason"] == "not_json"
    assert (document["topic"], document["partition"], document["offset"]) == ("Events-TypeA", 0, 7)
    assert document["omitted"]["fields"] == ["value_base64"]


def test_a_late_record_of_a_large_part_fits():
    value = to_json({"transaction": "tx-1", "log": "y" * (CONFIG.max_record_bytes - 50)})
    event = Event("tx-1", "TypeB", value, Source("Events-TypeB", 1, 99, 5))
    output = Output(Outcome.LATE, kafka_key("tx-1"), late_record(event, "complete"))
    fitted = _fit(output)
    document = json.loads(fitted.value)
    assert size(fitted) <= LIMIT and document["value"] is None
    assert (document["topic"], document["partition"], document["offset"]) == ("Events-TypeB", 1, 99)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, CONFIG.max_record_bytes - 40), min_size=1, max_size=5),
    st.integers(1, 1024),
)
def test_any_aggregate_fits_and_keeps_what_it_can(part_bytes, id_length):
    output = _aggregate(part_bytes, transaction="t" * id_length)
    fitted = _fit(output)
    assert size(fitted) <= LIMIT
    document = json.loads(fitted.value)
    if fitted is output:
        assert "omitted" not in document
    else:
        assert document["omitted"]["fields"][0] == "parts"
        assert set(document["omitted"]["parts_at"]) == set(document["arrival_order"])


@settings(max_examples=60, deadline=None)
@given(st.integers(0, CONFIG.max_record_bytes))
def test_any_dead_letter_up_to_the_record_limit_fits(length):
    raw = bytes(length)
    letter = parse(raw, Source("Events-TypeA", 0, 1, 1), CONFIG.type_of, CONFIG.max_record_bytes)
    fitted = _fit(Output(Outcome.DEAD_LETTER, None, letter.to_json()))
    assert size(fitted) <= LIMIT
    document = json.loads(fitted.value)
    if document["value_base64"] is not None:
        assert base64.b64decode(document["value_base64"]) == raw


def test_the_limit_cannot_be_set_below_what_an_output_without_copies_needs():
    from job.config import MIN_OUTPUT_BYTES, parse_args

    with pytest.raises(SystemExit):
        parse_args(["--max-output-bytes", str(MIN_OUTPUT_BYTES - 1)])
    assert parse_args(["--max-output-bytes", str(MIN_OUTPUT_BYTES)]).max_output_bytes == 65_536


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.text(), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))
def test_no_output_can_carry_a_lone_surrogate(document):
    """`to_json` writes every output: whatever a hook, the reference data or an option put
    in a document, its text is strict JSON, or it raises (the caller's dead letter)."""
    try:
        text = to_json(document)
    except ValueError:
        return
    text.encode("ascii")
    json.dumps(json.loads(text), ensure_ascii=False).encode("utf-8")  # no lone surrogate


def test_a_kind_too_long_to_name_in_every_output_is_a_dead_letter():
    from job.records import BAD_KIND, MAX_KIND_BYTES, DeadLetter

    source = Source("Events-TypeA", 0, 1, 1)
    for kind in ("k" * (MAX_KIND_BYTES + 1), "中" * 100, "a\x00b"):
        raw = json.dumps({"transaction": "t", "kind": kind}).encode()
        letter = parse(raw, source, CONFIG.type_of, CONFIG.max_record_bytes, "kind")
        assert isinstance(letter, DeadLetter) and letter.reason == BAD_KIND, kind
    raw = json.dumps({"transaction": "t", "kind": "k" * MAX_KIND_BYTES}).encode()
    assert parse(raw, source, CONFIG.type_of, CONFIG.max_record_bytes, "kind").kind


def test_an_output_too_large_without_its_copies_is_cut_to_what_and_where():
    output = _aggregate([10])
    record = json.loads(output.value)
    record["kind"] = "\u4e2d" * 400_000  # no kind the parser accepts, but fit must hold anyway
    big = Output(output.kind, output.key, to_json(record), record)
    fitted = _fit(big)
    document = json.loads(fitted.value)
    assert size(fitted) <= LIMIT
    assert document["transaction"] == "tx-1" and document["types"] == ["TypeA"]
    assert "kind" in document["omitted"]["fields"] and "parts" in document["omitted"]["fields"]
