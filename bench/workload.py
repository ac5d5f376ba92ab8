"""The benchmark's input: transactions in the original proof of concept's record format.

Every system under test reads the same records: value `{"transaction", "log"}`, key the
JSON-quoted id, partition at random, each transaction's parts sent one after another.

A throughput run's backlog is a `Workload`, planned from a seed so it can be recomputed:
about 10% of its transactions miss one or more types (they must come out as partials on the
expired topic) and about 1% of its records are malformed (not JSON, JSON without
`transaction`, a `transaction` that is not a string: dead letters for our job, skipped by
the peers). Every incomplete transaction sits in the backlog's head (its first 20%), and the
rest is sent only once the broker's clock has moved past the head's expiry deadlines, so the
partials expire by event time while the backlog is read, in every system, instead of after
it through a wall-clock fallback that would dominate the run.

Pre-loading the topics before a system starts means the producer cannot be the bottleneck
of a throughput run; the paced sender runs in its own process so its work does not share a
GIL with the consumer that watches the outputs.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kafka import KafkaProducer

from generator.transactions import record_value

# An aggregate's `status` (the output contract every correlating system follows).
COMPLETE, EXPIRED = "complete", "expired"


def _producer(bootstrap: str, linger_ms: int = 20) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, batch_size=256 * 1024
    )


def _send_transaction(
    producer: KafkaProducer,
    prefix: str,
    transaction: str,
    types: Sequence[str],
    rng: random.Random,
    partitions: int,
) -> None:
    key = json.dumps(transaction).encode()
    for record_type in types:
        value = json.dumps(record_value(transaction, record_type)).encode()
        producer.send(
            prefix + record_type, key=key, value=value, partition=rng.randrange(partitions)
        )


@dataclass(frozen=True)
class Malformed:
    """A record no system can correlate; our job dead-letters it with `reason`."""

    record_type: str  # the type topic it is sent to
    value: bytes
    reason: str  # the dead-letter reason job/records.py gives it


def malformed_record(kind: int, record_type: str, tag: str, index: int) -> Malformed:
    """Three kinds in turn: no JSON at all, JSON without `transaction`, a null `transaction`."""
    log = f"{record_type} handled nothing ({tag} #{index})"
    kinds = (
        (f"not json: {log}".encode(), "not_json"),
        (json.dumps({"log": log}).encode(), "no_transaction"),
        (json.dumps({"transaction": None, "log": log}).encode(), "bad_transaction"),
    )
    value, reason = kinds[kind % len(kinds)]
    return Malformed(record_type, value, reason)


@dataclass(frozen=True)
class Workload:
    """A backlog: which types each transaction sends and where malformed records go.

    Transaction `i` is `f"{tag}-{i}"`; `sent[i]` are its types in the configured order
    (sent in that order); `malformed` lists (after which transaction, record).
    """

    tag: str
    types: tuple[str, ...]
    sent: tuple[tuple[str, ...], ...]
    malformed: tuple[tuple[int, Malformed], ...] = ()
    head: int = 0  # transactions [0, head) hold every incomplete one
    _by_index: dict[int, list[Malformed]] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for index, record in self.malformed:
            self._by_index.setdefault(index, []).append(record)

    def transaction(self, index: int) -> str:
        return f"{self.tag}-{index}"

    @property
    def count(self) -> int:
        return len(self.sent)

    @property
    def incomplete(self) -> int:
        return sum(1 for s in self.sent if len(s) < len(self.types))

    @property
    def complete(self) -> int:
        return self.count - self.incomplete

    @property
    def records(self) -> int:
        """Every input record: the transactions' parts and the malformed records."""
        return sum(len(s) for s in self.sent) + len(self.malformed)

    def malformed_after(self, index: int) -> list[Malformed]:
        return self._by_index.get(index, [])

    def expected(self) -> dict[str, tuple[str, ...]]:
        """Transaction id -> the types it sent: its expected outcome (all types: complete)."""
        return {self.transaction(i): s for i, s in enumerate(self.sent)}


def plan(
    count: int,
    types: Sequence[str],
    tag: str,
    seed: int = 7,
    incomplete: float = 0.10,
    malformed: float = 0.01,
    head_share: float = 0.2,
) -> Workload:
    """`count` transactions, `incomplete` of them (a share) missing 1..len(types)-1 types,
    and malformed records making up `malformed` of all records. The same arguments give the
    same workload."""
    types = tuple(types)
    rng = random.Random(seed)
    missing = round(count * incomplete) if len(types) > 1 else 0
    head = max(missing, math.ceil(count * head_share)) if missing else 0
    sent: list[tuple[str, ...]] = [types] * count
    for index in sorted(rng.sample(range(head), missing)):
        keep = rng.randint(1, len(types) - 1)
        chosen = set(rng.sample(types, keep))
        sent[index] = tuple(t for t in types if t in chosen)
    parts = sum(len(s) for s in sent)
    bad = round(parts * malformed / (1 - malformed)) if malformed < 1 else 0
    records = tuple(
        (rng.randrange(count), malformed_record(k, rng.choice(types), tag, k)) for k in range(bad)
    )
    return Workload(tag, types, tuple(sent), tuple(sorted(records, key=lambda r: r[0])), head)


def send(
    bootstrap: str,
    prefix: str,
    workload: Workload,
    pause_s: float = 0.0,
    partitions: int = 3,
    seed: int = 7,
) -> None:
    """Sends the workload as fast as the broker takes it; between the head and the rest,
    waits `pause_s` (the timeout plus the out-of-orderness and a margin), so every record
    after the head has a Kafka timestamp past every head transaction's expiry deadline."""
    rng = random.Random(seed)
    producer = _producer(bootstrap)
    for index, types in enumerate(workload.sent):
        if index == workload.head and index > 0 and pause_s > 0:
            producer.flush()  # appended (and so timestamped) before the pause starts
            time.sleep(pause_s)
        _send_transaction(producer, prefix, workload.transaction(index), types, rng, partitions)
        for record in workload.malformed_after(index):
            producer.send(
                prefix + record.record_type, value=record.value, partition=rng.randrange(partitions)
            )
    producer.flush()
    producer.close()


def preload(
    bootstrap: str,
    prefix: str,
    types: Sequence[str],
    count: int,
    tag: str,
    partitions: int = 3,
    seed: int = 7,
) -> None:
    """`count` transactions with every type in `types`, as fast as the broker takes them
    (the memory runs: nothing held in a list, so a million transactions are fine)."""
    rng = random.Random(seed)
    producer = _producer(bootstrap)
    for index in range(count):
        _send_transaction(producer, prefix, f"{tag}-{index}", types, rng, partitions)
    producer.flush()
    producer.close()


def check(workload: Workload, values: Iterable[bytes]) -> dict:
    """Compares a correlating system's outputs with what the workload must produce.

    Each transaction must come out exactly once: complete with every type, or expired with
    exactly the types it sent (`types`, `missing`, the keys and values of `parts`).
    """
    expected = workload.expected()
    seen: set[str] = set()
    counts = {COMPLETE: 0, EXPIRED: 0}
    expired_by: dict[str, int] = {}  # our job says which timer expired a partial
    wrong = duplicates = unexpected = unreadable = 0
    examples: list[str] = []
    for raw in values:
        try:
            doc = json.loads(raw)
            transaction = doc["transaction"]
        except (ValueError, KeyError, TypeError):
            unreadable += 1
            continue
        if transaction not in expected:
            unexpected += 1
            continue
        if transaction in seen:
            duplicates += 1
            continue
        seen.add(transaction)
        status = doc.get("status")
        if status in counts:
            counts[status] += 1
        if status == EXPIRED and "expired_by" in doc:
            by = str(doc["expired_by"])
            expired_by[by] = expired_by.get(by, 0) + 1
        problem = _problem(transaction, doc, expected[transaction], workload.types)
        if problem:
            wrong += 1
            if len(examples) < 5:
                examples.append(f"{transaction}: {problem}")
    absent = len(expected) - len(seen)
    result = {
        "complete": counts[COMPLETE],
        "expired": counts[EXPIRED],
        "expected_complete": workload.complete,
        "expected_expired": workload.incomplete,
        "wrong": wrong,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "unreadable": unreadable,
        "absent": absent,
        "expired_by": expired_by,
        "examples": examples,
    }
    result["ok"] = not (wrong or duplicates or unexpected or unreadable or absent)
    return result


def dead_letter_reason(value: bytes) -> str:
    """The `reason` of one of our job's dead letters ("unreadable" if it has none)."""
    try:
        reason = json.loads(value)["reason"]
    except (ValueError, KeyError, TypeError):
        return "unreadable"
    return reason if isinstance(reason, str) else "unreadable"


def _problem(transaction: str, doc: dict, sent: tuple[str, ...], types: tuple[str, ...]) -> str:
    """What is wrong with one output, or "" if it is what the workload must produce."""
    want = COMPLETE if len(sent) == len(types) else EXPIRED
    if doc.get("status") != want:
        return f"status {doc.get('status')!r}, expected {want!r}"
    if doc.get("types") != list(sent):
        return f"types {doc.get('types')}, expected {list(sent)}"
    if doc.get("missing") != [t for t in types if t not in sent]:
        return f"missing {doc.get('missing')}, expected {[t for t in types if t not in sent]}"
    parts = doc.get("parts")
    if not isinstance(parts, dict) or set(parts) != set(sent):
        return f"parts of {sorted(parts) if isinstance(parts, dict) else parts}"
    for record_type in sent:
        if parts[record_type] != record_value(transaction, record_type):
            return f"part {record_type} is {parts[record_type]!r}"
    return ""


def paced_count(rate: float, seconds: float, types: Sequence[str]) -> int:
    """How many transactions `send_paced` sends."""
    return max(1, round(seconds * rate / len(types)))


def _paced(
    bootstrap: str, prefix: str, types: list[str], rate: float, seconds: float, tag: str
) -> None:
    rng = random.Random(11)
    producer = _producer(bootstrap, linger_ms=1)  # latency is measured from send time
    interval = len(types) / rate  # seconds between transactions
    started = time.monotonic()
    for index in range(paced_count(rate, seconds, types)):
        ahead = started + index * interval - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        _send_transaction(producer, prefix, f"{tag}-{index}", types, rng, 3)
    producer.flush()
    producer.close()


def send_paced(
    bootstrap: str, prefix: str, types: Sequence[str], rate: float, seconds: float, tag: str
) -> multiprocessing.Process:
    """Starts sending `rate` records/s for `seconds` in a child process; join it to wait."""
    process = multiprocessing.get_context("spawn").Process(
        target=_paced, args=(bootstrap, prefix, list(types), rate, seconds, tag), daemon=True
    )
    process.start()
    return process
