"""What the writer does with each record of the output topics, decided in plain Python.

No Flink and no database here: the writer's Flink function (`job.writer`) and its database
client (`job.database`) carry these decisions out, and tests check them in milliseconds.

Every record the writer reads ends in exactly one place:
- a row: the transaction, upserted into `transactions` by precedence (the view
  `transaction_records`, sql/migrations/003);
- a diverted record, in `diverted_records` with its reason and its bytes, keyed by its topic,
  partition and offset (`python -m store diverted` lists them): whatever PostgreSQL could not
  store as a row, and anything on the topics that is no output of the correlator;
- nothing: a tombstone on the progress topic (the final record replaces the open row).

PostgreSQL's text holds no U+0000 and its jsonb neither U+0000 nor lone surrogates. The
correlator refuses ids it could not store (`job.records.id_problem`) and lone surrogates
anywhere (`job.records.to_json`), but a log line may hold U+0000. Such a record is stored
with every U+0000 read as U+FFFD in `aggregate` (so every query works on it) and exactly as
emitted in `aggregate_text`, which is null for every other row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from job.records import NotStrictJson, id_problem, printable, strict_loads

# Reasons of diverted records.
NOT_JSON = "not_json"  # not UTF-8 JSON
NOT_STRICT_JSON = "not_strict_json"  # NaN, Infinity, a lone surrogate, ...
NOT_AN_OUTPUT = "not_an_output"  # JSON, but not a record of the correlator
UNSTORABLE_ID = "unstorable_id"  # U+0000 in the id, or longer than the key can hold
REFUSED = "refused"  # PostgreSQL refused the row; the detail is its SQLSTATE and message
INTERNAL_ERROR = "internal_error"  # the writer could not place it (a bug): kept here

STATUSES = ("open", "complete", "expired")
_BIGINT = (-(2**63), 2**63 - 1)
_INT = (-(2**31), 2**31 - 1)
_NUL_ESCAPE = "\\u0000"  # how U+0000 appears in the correlator's ASCII JSON


@dataclass(frozen=True)
class Coordinates:
    """Where a record was read: enough to find it again while Kafka retains it."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Row:
    """A transaction as the view `transaction_records` takes it (JSON columns as text)."""

    transaction: str
    status: str
    present_types: str
    missing_types: str
    first_event_ms: int
    last_event_ms: int
    duration_ms: int
    emitted_at_ms: int
    kind: str | None
    amends: int
    aggregate: str  # jsonb: the record, every U+0000 read as U+FFFD
    aggregate_text: str | None  # the record exactly as emitted, where `aggregate` differs


@dataclass(frozen=True)
class Diverted:
    at: Coordinates
    reason: str
    detail: str
    value: bytes | None


def classify(value: bytes | None, at: Coordinates) -> Row | Diverted | None:
    """The place of one record: a row, a diversion, or None (a tombstone). Never raises: a
    record it cannot place (a bug) is diverted `internal_error`, so it holds nothing up."""
    try:
        return _classify(value, at)
    except Exception as error:  # noqa: BLE001 - no record may stop the writer
        detail = printable(f"{type(error).__name__}: {error}")[:200]
        return Diverted(at, INTERNAL_ERROR, detail, value)


def _classify(value: bytes | None, at: Coordinates) -> Row | Diverted | None:
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
        document = strict_loads(text)
    except NotStrictJson as error:
        return Diverted(at, NOT_STRICT_JSON, str(error), value)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        return Diverted(at, NOT_JSON, printable(f"{type(error).__name__}: {error}")[:200], value)
    problem = output_problem(document)
    if problem is not None:
        return Diverted(at, NOT_AN_OUTPUT, problem, value)
    problem = id_problem(document["transaction"])
    if problem is not None:
        return Diverted(at, UNSTORABLE_ID, problem, value)
    return to_row(document, text)


def output_problem(document: object) -> str | None:
    """Why a JSON document is no output record of the correlator (aggregate, partial or
    progress record) that the table can take, or None."""
    if not isinstance(document, dict):
        return f"JSON {type(document).__name__}, expected an object"
    transaction = document.get("transaction")
    if not isinstance(transaction, str) or not transaction:
        return "no 'transaction' string"
    if document.get("status") not in STATUSES:
        return f"'status' is not one of {', '.join(STATUSES)}"
    for name in ("types", "missing"):
        if not _strings(document.get(name)):
            return f"'{name}' is not a list of strings"
    for name, (low, high) in _NUMBERS.items():
        number = document.get(name, 0 if name in _OPTIONAL else None)
        if not isinstance(number, int) or isinstance(number, bool) or not low <= number <= high:
            return f"'{name}' is not an integer in [{low}, {high}]"
    if document.get("kind") is not None and not isinstance(document["kind"], str):
        return "'kind' is neither a string nor null"
    return None


_NUMBERS = {
    "first_event_time": _BIGINT,
    "last_event_time": _BIGINT,
    "duration_ms": _BIGINT,
    "emitted_at": _BIGINT,
    "amends": _INT,
}
_OPTIONAL = {"amends"}


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def to_row(document: dict, text: str) -> Row:
    """The row of an output record (checked by `output_problem`)."""
    storable, exact = document, None
    if _NUL_ESCAPE in text or "\x00" in text:
        storable = without_nul(document)
        exact = text if storable != document else None
    kind = storable.get("kind")
    return Row(
        transaction=document["transaction"],
        status=document["status"],
        present_types=json.dumps(storable["types"]),
        missing_types=json.dumps(storable["missing"]),
        first_event_ms=document["first_event_time"],
        last_event_ms=document["last_event_time"],
        duration_ms=document["duration_ms"],
        emitted_at_ms=document["emitted_at"],
        kind=kind if kind else None,
        amends=document.get("amends", 0),
        aggregate=text if exact is None else json.dumps(storable),
        aggregate_text=exact,
    )


def without_nul(value: object) -> object:
    """`value` with U+0000 read as U+FFFD in every string and key (jsonb holds no U+0000).
    Through JSON's own text, not recursion: the parser takes nesting that deep recursion in
    Python would not."""
    text = json.dumps(value)  # ASCII: U+0000 is the escape \u0000, a backslash before it
    return json.loads(re.sub(r"(?<!\\)((?:\\\\)*)\\u0000", r"\1\\ufffd", text))


# SQLSTATE classes of a row that PostgreSQL refuses: data exceptions (bad text, a character
# its encoding lacks, a number out of range), integrity violations, program limits (an index
# entry too large). Any other failure is the database's, not the row's (away, shutting down,
# full, a missing table or grant): the writer waits for it and tries the same rows again.
ROW_CLASSES = ("22", "23", "54")


def transient(sqlstate: str | None) -> bool:
    """Whether a failed write should wait and be tried again as it was (True), or the rows
    tried one by one to find the one PostgreSQL refuses (False). No SQLSTATE: no answer
    from the server at all."""
    return sqlstate is None or sqlstate[:2] not in ROW_CLASSES


def backoff_ms(failures: int, first_ms: int = 500, cap_ms: int = 5_000) -> int:
    """How long the writer waits after `failures` failed writes in a row before it tries
    again: doubling from `first_ms`, at most `cap_ms`, so a database that is back is used
    within seconds, however long it was away."""
    return min(first_ms * 2 ** max(failures - 1, 0), cap_ms)
