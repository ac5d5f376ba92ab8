"""The records of the savepoint-compatibility scenario: what a released version saw before
its savepoint was taken, and what the current version gets after restoring it.

A released version's job ran on the records `before()` (`tests/savepoints/make.py`) and was
stopped with a savepoint; the savepoint, and the records it saw, are kept in
`tests/savepoints/<version>/`. The current version restores it and gets `after()`: a
transaction it was holding completes with the parts from the savepoint, a held type sent
again is a duplicate, a part of a transaction closed before the savepoint is late. (Records
of different types are on different topics, read in no fixed order: a duplicate is sent
only to a transaction that stays open.)

The released version ran with a timeout and a closed retention of ten years, so none of
the restored timers fires while a test runs, however long after the fixture was made: what
the test sees depends on the state, not on the clock. (Event time is the records' Kafka
timestamps, taken when they are sent: a broker refuses timestamps more than an hour ahead.)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

TYPES = ("TypeA", "TypeB", "TypeC", "TypeD", "TypeE")
TEN_YEARS_S = 10 * 365 * 86_400
PARTITIONS = 3

# transaction -> (types sent before the savepoint, types sent after the restore)
HELD = {
    "sp-held-ab": (("TypeA", "TypeB"), ("TypeC", "TypeD", "TypeE")),
    "sp-held-a": (("TypeA",), ("TypeA",)),  # A again while open: a duplicate
    "sp-held-abcd": (("TypeA", "TypeB", "TypeC", "TypeD"), ("TypeE",)),
    "sp-stays-open": (("TypeA", "TypeC"), ()),
}
CLOSED = {"sp-closed": (TYPES, ("TypeC",))}  # complete before the savepoint; C again: late


@dataclass(frozen=True)
class Sent:
    """One input record: where it goes and what it is."""

    type: str
    partition: int
    key: str
    value: str

    @property
    def transaction(self) -> str:
        return json.loads(self.value)["transaction"]

    def to_json(self) -> dict:
        return asdict(self)


def _record(transaction: str, record_type: str, when: str, n: int) -> Sent:
    value = {"transaction": transaction, "log": f"{when} {record_type}"}
    return Sent(record_type, n % PARTITIONS, json.dumps(transaction), json.dumps(value))


def _records(when: str, offset: int) -> list[Sent]:
    side = 0 if when == "before" else 1
    ordered = [(t, types[side]) for t, types in {**HELD, **CLOSED}.items()]
    sent: list[Sent] = []
    for transaction, types in ordered:
        for record_type in types:
            sent.append(_record(transaction, record_type, when, offset + len(sent)))
    return sent


def before() -> list[Sent]:
    """What the released version saw before its savepoint."""
    return _records("before", 0)


def after() -> list[Sent]:
    """What the restored version gets."""
    return _records("after", 1_000)


def tag(version: str) -> str:
    """The topic prefix, group and transactional ids of a fixture: the savepoint names the
    topics it read, so the test recreates them under the same names."""
    return f"sp{version}"
