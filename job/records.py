"""Turns one raw Kafka record into a typed event, or into a dead letter with its reason.

Plain Python with no Flink imports: the job calls `parse` once per record, before `key_by`,
and everything after it can trust the event. Nothing raises on input: bad bytes are data.

The strictness rule (README, "Strict JSON"): an event's value is RFC 8259 JSON in UTF-8 that
every strict consumer accepts. `NaN`, `Infinity`, numbers beyond a double's range and lone
UTF-16 surrogates (`"\\ud800"`, which `json.loads` accepts) are not: such a record is a dead
letter `not_strict_json`, so no output ever carries them, and no string that cannot cross
into Java (a lone surrogate cannot) leaves Python. Every output is written by `to_json`.
"""

from __future__ import annotations

import base64
import json
import math
import re
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
    kind: str | None = None  # the transaction's kind, if this record names one


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    detail: str
    raw: bytes | None
    source: Source
    transaction: str | None = None

    def to_json(self) -> str:
        return to_json(
            {
                "reason": self.reason,
                "detail": printable(self.detail)[:DETAIL_CHARS],
                "transaction": None if self.transaction is None else printable(self.transaction),
                "topic": self.source.topic,
                "partition": self.source.partition,
                "offset": self.source.offset,
                "timestamp": self.source.timestamp,
                "value_base64": None if self.raw is None else base64.b64encode(self.raw).decode(),
            }
        )


DETAIL_CHARS = 500  # a dead letter's `detail` quotes input: bounded

# Reason codes on the dead-letter topic, documented in the README.
UNKNOWN_TOPIC = "unknown_topic"
TOO_LARGE = "too_large"
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
NO_TRANSACTION = "no_transaction"
BAD_TRANSACTION = "bad_transaction"
BAD_KIND = "bad_kind"  # a kind over MAX_KIND_BYTES, or with U+0000
NOT_STRICT_JSON = "not_strict_json"
DUPLICATE = "duplicate"
INTERNAL_ERROR = "internal_error"  # a bug or a failing hook: the job's fault, not the input's


def to_json(document: object) -> str:
    """Strict JSON for every output: NaN and Infinity raise ValueError, and the text is ASCII
    (non-ASCII escaped), so it crosses into Java and decodes as UTF-8 everywhere.

    A lone UTF-16 surrogate raises ValueError too: `json.dumps` would escape it (`\\ud800`)
    into text that strict consumers and PostgreSQL's jsonb refuse. Whatever a hook, the
    reference data or an option put into a document, no output can carry one.
    """
    text = json.dumps(document, allow_nan=False)
    if _SURROGATE_ESCAPE.search(text):  # pairs of astral characters, or a lone one
        try:
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a lone UTF-16 surrogate in an output string") from None
    return text


def printable(text: str) -> str:
    """`text` with lone surrogates spelled out (`\\ud800`), for messages that quote input."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# A JSON escape of a UTF-16 surrogate; only text that has one needs the full check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

# The longest transaction id the job correlates, in bytes of UTF-8, and no U+0000 in it: the
# id is the primary key of the PostgreSQL table, whose index entries hold at most about
# 2,700 bytes and whose text holds no U+0000. A longer id, or one with U+0000, is a dead
# letter `bad_transaction` with its bytes, at the door, instead of a row the store refuses.
MAX_ID_BYTES = 1024
# The longest kind name (`--kind-field`): every output names its transaction's kind, so a
# kind of any length would make outputs too large for Kafka (job/sizes.py).
MAX_KIND_BYTES = 256


def id_problem(transaction: str) -> str | None:
    """Why an id (a non-empty string) cannot be a transaction's key, or None."""
    if "\x00" in transaction:
        return "'transaction' contains U+0000, which PostgreSQL text cannot hold"
    size = len(transaction.encode("utf-8", "surrogatepass"))
    if size > MAX_ID_BYTES:
        return f"'transaction' is {size} bytes of UTF-8, over the limit of {MAX_ID_BYTES}"
    return None


class NotStrictJson(ValueError):
    """Valid for Python's json module, but not RFC 8259 JSON a strict consumer accepts."""


def _no_constant(name: str) -> float:
    raise NotStrictJson(f"{name} is not JSON")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise NotStrictJson(f"number {text[:40]} is beyond a double's range")
    return number


def strict_loads(text: str) -> object:
    """`json.loads` that accepts only strict JSON (see the module docstring).

    Raises NotStrictJson for NaN/Infinity, out-of-range numbers and lone surrogates, and
    ValueError or RecursionError (about 1,000 levels of nesting) for text that is no JSON.
    """
    value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    if _SURROGATE_ESCAPE.search(text):
        try:  # a surrogate pair encodes to UTF-8; a lone surrogate does not
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise NotStrictJson("a lone UTF-16 surrogate (\\uD800-\\uDFFF) in a string") from None
    return value


def parse(
    raw: bytes | None,
    source: Source,
    type_of: Callable[[str], str | None],
    max_bytes: int,
    kind_field: str = "",
) -> Event | DeadLetter:
    """Classifies one record; the first failing check names the reason. The kind is a
    non-empty string in `kind_field` (anything else there: no kind)."""

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
        value = strict_loads(text)
    except NotStrictJson as error:
        return dead(NOT_STRICT_JSON, str(error))
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        return dead(NOT_JSON, f"{type(error).__name__}: {error}"[:200])
    if not isinstance(value, dict):
        return dead(NOT_OBJECT, f"JSON {type(value).__name__}, expected an object")
    if "transaction" not in value:
        return dead(NO_TRANSACTION, "no 'transaction' field")
    transaction = value["transaction"]
    if not isinstance(transaction, str) or not transaction:
        shown = printable(repr(transaction))[:100]
        return dead(BAD_TRANSACTION, f"'transaction' is {shown}, expected a non-empty string")
    problem = id_problem(transaction)
    if problem is not None:
        return dead(BAD_TRANSACTION, problem)
    kind = value.get(kind_field) if kind_field else None
    kind = kind if isinstance(kind, str) and kind else None
    if kind is not None and (len(kind.encode("utf-8", "surrogatepass")) > MAX_KIND_BYTES
                             or "\x00" in kind):  # fmt: skip
        return dead(BAD_KIND, f"'{kind_field}' is no kind name: over {MAX_KIND_BYTES} bytes, "
                    "or with U+0000")  # fmt: skip
    return Event(transaction, record_type, text, source, kind)


def keyed(result: Event | DeadLetter, key: str) -> Event | DeadLetter:
    """The parsed record, checked against the key it was routed by.

    The job routes records by the transaction id that Flink's SQL `JSON_VALUE` reads (in Java,
    before any Python runs), then parses them here. The two agree on every record whose
    `transaction` this module accepts, except where Java's JSON reader refuses a document
    that Python's reads (a number of more than 1,000 digits, nesting near 1,000 levels): such
    a record reached the wrong transaction's state, so it is a dead letter, never correlated.
    """
    if isinstance(result, DeadLetter) or result.transaction == key:
        return result
    return DeadLetter(
        BAD_TRANSACTION,
        "the job's key extractor (Flink SQL JSON_VALUE) could not read 'transaction' as "
        f"{printable(result.transaction)[:100]!r}",
        result.value.encode(),
        result.source,
        result.transaction,
    )


def internal_error(error: BaseException, raw: bytes | None, source: Source, transaction=None):
    """The dead letter for an unexpected exception: the record is kept, the job goes on."""
    detail = f"{type(error).__name__}: {error}"[:500]
    return DeadLetter(INTERNAL_ERROR, detail, raw, source, transaction)
