"""The parser: every record becomes an event or a dead letter with a reason, never an error."""

import base64
import json

import pytest

from job import records
from job.config import JobConfig
from job.records import DeadLetter, Event, Source, parse

CONFIG = JobConfig()
SOURCE = Source("Events-TypeB", 1, 7, 1_700_000_000_000)


def _parse(raw, source=SOURCE, max_bytes=1000):
    return parse(raw, source, CONFIG.type_of, max_bytes)


def test_original_format_parses_to_event_of_the_topics_type():
    raw = b'{"transaction": "tx-1", "log": "hello"}'
    event = _parse(raw)
    assert isinstance(event, Event)
    assert (event.transaction, event.type) == ("tx-1", "TypeB")
    assert event.value == raw.decode()
    assert event.source == SOURCE


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json{", records.NOT_JSON),
        (b"\xff\xfe", records.NOT_JSON),
        (None, records.NOT_JSON),
        (b"[1, 2]", records.NOT_OBJECT),
        (b'"tx-1"', records.NOT_OBJECT),
        (b'{"log": "x"}', records.NO_TRANSACTION),
        (b'{"transaction": ""}', records.BAD_TRANSACTION),
        (b'{"transaction": 42}', records.BAD_TRANSACTION),
        (b'{"transaction": null}', records.BAD_TRANSACTION),
        (b'{"transaction": "x", "pad": "' + b"a" * 2000 + b'"}', records.TOO_LARGE),
    ],
)
def test_bad_input_becomes_a_dead_letter_with_its_reason(raw, reason):
    letter = _parse(raw)
    assert isinstance(letter, DeadLetter)
    assert letter.reason == reason
    assert letter.raw == raw


def test_unknown_topic_is_a_dead_letter():
    letter = _parse(b'{"transaction": "tx"}', Source("Events-TypeZ", 0, 0, 0))
    assert isinstance(letter, DeadLetter) and letter.reason == records.UNKNOWN_TOPIC


def test_dead_letter_json_keeps_the_original_bytes_and_origin():
    raw = b"\x00\x01binary"
    letter = _parse(raw)
    doc = json.loads(letter.to_json())
    assert base64.b64decode(doc["value_base64"]) == raw
    assert (doc["topic"], doc["partition"], doc["offset"]) == ("Events-TypeB", 1, 7)
    assert doc["timestamp"] == SOURCE.timestamp
    assert doc["reason"] == records.NOT_JSON
