"""The correlation rules: when a transaction is complete, expired, late or duplicated.

Plain Python with no Flink imports, so every rule is unit-tested in milliseconds. The Flink
`KeyedProcessFunction` in `job.correlate` keeps the state these functions read and acts on
the verdict they return.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

from job.records import Event

COMPLETE = "complete"
EXPIRED = "expired"


class Verdict(Enum):
    OPENED = "opened"  # first part of a transaction: start its timeout
    HELD = "held"  # another part, still incomplete
    COMPLETED = "completed"  # the last missing part: emit now
    DUPLICATE = "duplicate"  # a type already held: keep the first, dead-letter this one
    LATE = "late"  # the transaction was already emitted


@dataclass(frozen=True)
class Part:
    """One type's record as held in state until its transaction closes."""

    seq: int  # arrival order within the transaction, 0-based
    event_time: int
    value: str


def classify(
    event_type: str,
    held: Collection[str],
    closed_status: str | None,
    expected: Collection[str],
) -> Verdict:
    if closed_status is not None:
        return Verdict.LATE
    if event_type in held:
        return Verdict.DUPLICATE
    if set(held) | {event_type} >= set(expected):
        return Verdict.COMPLETED
    return Verdict.OPENED if not held else Verdict.HELD


def expiry_deadline(first_event_time: int, timeout_ms: int) -> int:
    """Event time at which a partial expires: its first part plus the timeout."""
    return first_event_time + timeout_ms


def build_aggregate(
    transaction: str,
    parts: Mapping[str, Part],
    expected: Collection[str],
    status: str,
    emitted_at: int,
) -> dict:
    """The output record for a complete or expired transaction."""
    times = [p.event_time for p in parts.values()]
    arrival = sorted(parts, key=lambda t: parts[t].seq)
    return {
        "transaction": transaction,
        "status": status,
        "types": [t for t in expected if t in parts],
        "missing": [t for t in expected if t not in parts],
        "parts": {t: json.loads(parts[t].value) for t in arrival},
        "arrival_order": arrival,
        "first_event_time": min(times),
        "last_event_time": max(times),
        "duration_ms": max(times) - min(times),
        "emitted_at": emitted_at,
    }


def late_record(event: Event, final_status: str) -> dict:
    """What goes to the late topic: the record and the status its transaction closed with."""
    return {
        "transaction": event.transaction,
        "type": event.type,
        "final_status": final_status,
        "topic": event.source.topic,
        "partition": event.source.partition,
        "offset": event.source.offset,
        "timestamp": event.source.timestamp,
        "value": json.loads(event.value),
    }


def kafka_key(transaction: str | None) -> str | None:
    """Outputs are keyed like the original producer's records: a JSON-quoted string."""
    return None if transaction is None else json.dumps(transaction)
