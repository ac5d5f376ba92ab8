"""Turns one raw Kafka record into a typed event, or into a dead letter with its reason.

Plain Python with no Flink imports: the job calls `parse` once per record, before `key_by`,
and everything after it can trust the event. Nothing raises on input: bad bytes are data.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """Where a record came from, kept so every output can be traced back to its input."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # event time in epoch milliseconds


@dataclass(frozen=True)
class Event:
    transaction: str
    type: str
    value: str  # the record's JSON text exactly as received
    source: Source


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str
    raw: bytes | None
    source: Source
    transaction: str | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "reason": self.reason,
                "detail": self.detail,
                "transaction": self.transaction,
                "topic": self.source.topic,
                "partition": self.source.partition,
                "offset": self.source.offset,
                "timestamp": self.source.timestamp,
                "value_base64": None if self.raw is None else base64.b64encode(self.raw).decode(),
            }
        )


# Reason codes on the dead-letter topic, documented in the README.
UNKNOWN_TOPIC = "unknown_topic"
TOO_LARGE = "too_large"
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
NO_TRANSACTION = "no_transaction"
BAD_TRANSACTION = "bad_transaction"
DUPLICATE = "duplicate"


def parse(
    raw: bytes | None,
    source: Source,
    type_of: Callable[[str], str | None],
    max_bytes: int,
) -> Event | DeadLetter:
    """Classifies one record; the first failing check names the reason."""

    def dead(reason: str, detail: str) -> DeadLetter:
        return DeadLetter(reason, detail, raw, source)

    record_type = type_of(source.topic)
    if record_type is None:
        return dead(UNKNOWN_TOPIC, f"topic {source.topic!r} is not a configured type")
    if raw is None:
        return dead(NOT_JSON, "record has no value (tombstone)")
    if len(raw) > max_bytes:
        return dead(TOO_LARGE, f"{len(raw)} bytes > limit {max_bytes}")
    try:
        text = raw.decode("utf-8")
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError) as error:
        return dead(NOT_JSON, str(error)[:200])
    if not isinstance(value, dict):
        return dead(NOT_OBJECT, f"JSON {type(value).__name__}, expected an object")
    if "transaction" not in value:
        return dead(NO_TRANSACTION, "no 'transaction' field")
    transaction = value["transaction"]
    if not isinstance(transaction, str) or not transaction:
        return dead(
            BAD_TRANSACTION, f"'transaction' is {transaction!r}, expected a non-empty string"
        )
    return Event(transaction, record_type, text, source)
