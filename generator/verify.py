"""Checks the job's output against what the generator sent: lost, duplicated, misplaced.

Shared by the integration tests, the fault-injection tests and the benchmark, so "correct"
means the same thing everywhere: every transaction exactly once, in the topic its
completeness calls for, with exactly the parts that were sent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from generator.outputs import OutputRecord
from generator.transactions import Transaction, record_value


def by_value(document):
    """A JSON document with its numbers as exact decimals, to compare an output with its
    row: jsonb keeps a number by its value and prints it so (`1.5e300` comes back as its
    301 digits, an int to Python, which a float of the same text does not equal)."""
    return json.loads(json.dumps(document), parse_float=Decimal, parse_int=Decimal)


def stored_as_emitted(row: dict | None, document: dict, text: str) -> bool:
    """A row holds an output exactly: its `aggregate_text` is the output's text (a record
    jsonb cannot hold), or its `aggregate` is the document, numbers by value."""
    if row is None:
        return False
    if row["aggregate_text"] is not None:
        return row["aggregate_text"] == text
    return by_value(row["aggregate"]) == by_value(document)


@dataclass
class Report:
    expected: int
    seen: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    wrong_topic: list[str] = field(default_factory=list)
    wrong_parts: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.lost or self.duplicated or self.wrong_topic or self.wrong_parts or self.unexpected
        )

    def summary(self) -> str:
        """Counts, and the first few transaction ids of each kind of error."""
        kinds = ("lost", "duplicated", "wrong_topic", "wrong_parts", "unexpected")
        examples = {k: getattr(self, k)[:3] for k in kinds if getattr(self, k)}
        return (
            f"expected={self.expected} seen={self.seen} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)} wrong_topic={len(self.wrong_topic)} "
            f"wrong_parts={len(self.wrong_parts)} unexpected={len(self.unexpected)}"
            + (f" e.g. {examples}" if examples else "")
        )


def verify(
    plans: Sequence[Transaction],
    records: Iterable[OutputRecord],
    aggregated_topic: str,
    expired_topic: str,
) -> Report:
    """Compares aggregates and partials with the plans; other topics are ignored."""
    by_id = {p.id: p for p in plans}
    outputs = [r for r in records if r.topic in (aggregated_topic, expired_topic)]
    counts = Counter(r.value["transaction"] for r in outputs)
    report = Report(expected=len(plans), seen=len(counts))
    report.lost = [tx for tx in by_id if tx not in counts]
    report.duplicated = [tx for tx, n in counts.items() if n > 1]
    report.unexpected = [tx for tx in counts if tx not in by_id]
    for record in outputs:
        plan = by_id.get(record.value["transaction"])
        if plan is None:
            continue
        wanted_topic = aggregated_topic if plan.complete else expired_topic
        if record.topic != wanted_topic or record.key != plan.id:
            report.wrong_topic.append(plan.id)
        if not _parts_match(plan, record.value):
            report.wrong_parts.append(plan.id)
    return report


def _parts_match(plan: Transaction, value: dict) -> bool:
    sent = {t: record_value(plan.id, t) for t in plan.sent_types}
    return (
        value["parts"] == sent
        and set(value["types"]) == set(plan.sent_types)
        and set(value["missing"]) == set(plan.omitted)
    )


Coordinate = tuple[str, int, int]  # topic, partition, offset of an input record


def account(records: Iterable[OutputRecord], config) -> Counter[Coordinate]:
    """Where each input record ended up: counts per input coordinate over every output topic.

    A part of an aggregate or partial is named by its `sources` entry; a dead letter and a
    late record carry their own coordinates. Exactly once means every count is 1.
    """
    seen: Counter[Coordinate] = Counter()
    for record in records:
        value = record.value
        if record.topic in (config.aggregated_topic, config.expired_topic):
            for record_type, source in value["sources"].items():
                seen[
                    (config.topic_prefix + record_type, source["partition"], source["offset"])
                ] += 1
        elif record.topic in (config.dead_letter_topic, config.late_topic):
            seen[(value["topic"], value["partition"], value["offset"])] += 1
    return seen
