"""What the microservices would send: plans of records per transaction, no Kafka involved.

A plan is a list of (type, record value) in send order; the producer module sends it. Kept
apart so tests can build the exact same plans and know what to expect from the job.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Transaction:
    id: str
    sent_types: tuple[str, ...]  # in send order
    omitted: tuple[str, ...] = field(default=())
    kind: str | None = None  # named by every part (rules per kind), or by none

    @property
    def complete(self) -> bool:
        return not self.omitted


def new_id(prefix: str = "tx") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def record_value(transaction: str, record_type: str, kind: str | None = None) -> dict:
    """The original proof of concept's record: the transaction id and a log line (and the
    transaction's kind, for rules per kind)."""
    value = {"transaction": transaction, "log": f"{record_type} handled {transaction}"}
    return value if kind is None else {**value, "kind": kind}


def plan(
    types: Sequence[str],
    rng: random.Random,
    shuffle: bool = False,
    omit: int = 0,
    prefix: str = "tx",
    kind: str | None = None,
) -> Transaction:
    """One transaction: all `types`, optionally shuffled, with `omit` random types left out."""
    chosen = list(types)
    omitted = tuple(rng.sample(chosen, omit)) if omit else ()
    sent = [t for t in chosen if t not in omitted]
    if shuffle:
        rng.shuffle(sent)
    omitted = tuple(t for t in types if t in omitted)
    return Transaction(new_id(prefix), tuple(sent), omitted, kind)


def load_plans(
    count: int,
    types: Sequence[str],
    omit_probability: float,
    shuffle_probability: float,
    rng: random.Random,
    prefix: str = "tx",
    kinds: Mapping[str | None, Sequence[str]] | None = None,
) -> list[Transaction]:
    """N transactions; a fraction leaves out 1..len-1 types, a fraction arrives shuffled.

    With `kinds` (kind -> the types it sends, `None` for no kind) each transaction is of a
    kind chosen at random, and sends that kind's types instead of `types`."""
    plans = []
    for _ in range(count):
        kind, sent = pick_kind(kinds, types, rng)
        omitting = rng.random() < omit_probability and len(sent) > 1
        omit = rng.randint(1, len(sent) - 1) if omitting else 0
        shuffle = rng.random() < shuffle_probability
        plans.append(plan(sent, rng, shuffle=shuffle, omit=omit, prefix=prefix, kind=kind))
    return plans


def pick_kind(
    kinds: Mapping[str | None, Sequence[str]] | None, types: Sequence[str], rng: random.Random
) -> tuple[str | None, Sequence[str]]:
    """A kind chosen at random and the types it sends; no kinds: no kind, every type."""
    if not kinds:
        return None, types
    kind = rng.choice(list(kinds))
    return kind, kinds[kind]
