"""The correlation rules: when a transaction is complete, expired, late or duplicated.

Plain Python with no Flink imports, so every rule is unit- and property-tested in
milliseconds. The rules read and write one transaction's state through the small
`TransactionState` interface; the Flink `KeyedProcessFunction` in `job.correlate` implements
it over `MapState`/`ValueState` and adds the timers, a test implements it over a dict.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Protocol

from job.records import DUPLICATE, DeadLetter, Event, printable, to_json
from job.rules import Rule, RuleSet


class Outcome(StrEnum):
    """Where a record ends up; the job maps each to its configured topic. The first two are
    also the `status` of an aggregate, and what a closed transaction remembers."""

    COMPLETE = "complete"  # the aggregated topic
    EXPIRED = "expired"  # the expired topic: a partial
    DEAD_LETTER = "dead_letter"
    LATE = "late"
    OPEN = "open"  # the progress topic: an open transaction so far (`status` "open")


# Which timer closed a partial (the `expired_by` field).
BY_EVENT_TIME = "event_time"
BY_WALL_CLOCK = "wall_clock"
# An event-time timer that fired because a bounded input ended (`stack recompute`): event
# time jumps to the end of time and every open partial expires at once.
BY_END_OF_INPUT = "end_of_input"
END_OF_TIME = 2**63 - 1  # Flink's watermark once a bounded input has ended


def expired_by(timer: str | None, watermark: int) -> str | None:
    """The `expired_by` of a partial its timer closes: the end of input, where event time
    jumped to the end of time, names itself."""
    if timer == BY_EVENT_TIME and watermark >= END_OF_TIME:
        return BY_END_OF_INPUT
    return timer


class Verdict(Enum):
    OPENED = "opened"  # first part of a transaction: start its timeout
    HELD = "held"  # another part, still incomplete
    COMPLETE = "complete"  # the last missing part: emit now
    DUPLICATE = "duplicate"  # a type already held: keep the first, dead-letter this one
    LATE = "late"  # the transaction was already emitted
    AMENDED = "amended"  # late-policy amend: a new part for an expired partial, emitted again


@dataclass(frozen=True)
class Closed:
    """What a closed transaction remembers until its retention ends."""

    status: str
    kind: str | None = None
    amends: int = 0  # how often its partial was amended (late-policy amend)


@dataclass(frozen=True)
class Part:
    """One type's record as held in state until its transaction closes."""

    seq: int  # arrival order within the transaction, 0-based
    event_time: int
    value: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Output:
    kind: Outcome
    key: str | None  # the JSON-quoted transaction id
    value: str | None  # a JSON document; None: a tombstone (the progress topic is compacted)
    record: dict | None = None  # an aggregate or partial as emitted, for the metrics


@dataclass(frozen=True)
class Step:
    verdict: Verdict
    output: Output | None


class TransactionState(Protocol):
    """One transaction's state: the parts and kind held while open, what it closed with
    once closed (and, with late-policy amend, the parts of an expired partial)."""

    def held_types(self) -> list[str]: ...  # of an open transaction; [] once closed
    def kind(self) -> str | None: ...  # of an open transaction, once a part named it
    def add_part(self, record_type: str, part: Part, kind: str | None) -> None: ...
    def parts(self) -> dict[str, Part]: ...
    def clear_parts(self) -> None: ...
    def closed(self) -> Closed | None: ...
    def mark_closed(self, closed: Closed) -> None: ...


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
        return Verdict.COMPLETE
    return Verdict.OPENED if not held else Verdict.HELD


Enricher = Callable[[dict], dict]


def _unchanged(record: dict) -> dict:
    return record


def on_event(
    state: TransactionState,
    event: Event,
    rules: RuleSet,
    now_ms: int,
    enricher: Enricher = _unchanged,
    amend: bool = False,
) -> Step:
    """Applies one record to its transaction; the caller starts or moves timers on OPENED
    and HELD.

    The transaction's kind is the first one a part names (later parts naming another kind
    do not change it); until a part names one, the default rule applies. Each decision
    uses the rules in force at that moment.
    """
    held = state.held_types()
    # A transaction holding parts is open: one state read saved for every record but a
    # transaction's first.
    closed = None if held else state.closed()
    if closed is not None and amend and closed.status == Outcome.EXPIRED:
        return _amend(state, event, closed, rules, now_ms, enricher)
    kind = state.kind() if held else None
    kind = kind or event.kind
    rule = rules.rule(kind)
    verdict = classify(event.type, held, closed and closed.status, rule.required)
    if verdict is Verdict.LATE:
        return Step(
            verdict,
            Output(Outcome.LATE, kafka_key(event.transaction), late_record(event, closed.status)),
        )
    if verdict is Verdict.DUPLICATE:
        return Step(verdict, _duplicate(event))
    part = _part(event, len(held))
    if verdict is Verdict.COMPLETE:  # the last part never goes to state: it closes at once
        output = close(
            state, event.transaction, rule.required, Outcome.COMPLETE, now_ms, enricher,
            part, event.type, kind=kind, rule_version=rules.version,
        )  # fmt: skip
        return Step(verdict, output)
    state.add_part(event.type, part, kind)
    return Step(verdict, None)


def _part(event: Event, seq: int) -> Part:
    s = event.source
    return Part(seq, s.timestamp, event.value, s.partition, s.offset)


def _duplicate(event: Event) -> Output:
    letter = DeadLetter(
        DUPLICATE,
        f"type {event.type} already held for this transaction; the first is kept",
        event.value.encode(),
        event.source,
        event.transaction,
    )
    return Output(Outcome.DEAD_LETTER, kafka_key(event.transaction), letter.to_json())


def _amend(
    state: TransactionState,
    event: Event,
    closed: Closed,
    rules: RuleSet,
    now_ms: int,
    enricher: Enricher,
) -> Step:
    """Late-policy amend: a new part for an expired partial emits it again, complete if the
    part completes it (its final record), else as an updated partial; `amends` counts the
    amendments, so the latest record of a transaction is the one with the highest count."""
    parts = state.parts()
    if not parts:  # expired while the policy was route: nothing kept to amend
        late = late_record(event, closed.status)
        return Step(Verdict.LATE, Output(Outcome.LATE, kafka_key(event.transaction), late))
    if event.type in parts:
        return Step(Verdict.DUPLICATE, _duplicate(event))
    kind = closed.kind or event.kind
    rule = rules.rule(kind)
    parts[event.type] = _part(event, len(parts))
    status = Outcome.COMPLETE if rule.is_complete(parts) else Outcome.EXPIRED
    record = build_aggregate(event.transaction, parts, rule.required, status, now_ms)
    record.update(kind=kind, rule_version=rules.version, amends=closed.amends + 1)
    record, value = render_aggregate(record, enricher)
    if status == Outcome.COMPLETE:
        state.clear_parts()  # complete is final: later parts are late
    else:
        state.add_part(event.type, parts[event.type], kind)
    state.mark_closed(Closed(status, kind, closed.amends + 1))
    return Step(Verdict.AMENDED, Output(status, kafka_key(event.transaction), value, record))


def close(
    state: TransactionState,
    transaction: str,
    expected: Collection[str],
    status: str,
    now_ms: int,
    enricher: Enricher = _unchanged,
    last: Part | None = None,
    last_type: str = "",
    expired_by: str | None = None,
    kind: str | None = None,
    rule_version: int = 0,
    keep_parts: bool = False,
) -> Output:
    """Emits the transaction (with `last`, a part not in state yet), then drops its parts
    (unless `keep_parts`: late-policy amend keeps an expired partial's) and remembers how
    it closed.

    The state changes only after the output exists: if anything before raises, the
    transaction is as it was and the caller's dead letter accounts for the record.
    """
    parts = state.parts()
    if last is not None:
        parts[last_type] = last
    record = build_aggregate(transaction, parts, expected, status, now_ms)
    record.update(kind=kind, rule_version=rule_version)
    if expired_by is not None:
        record["expired_by"] = expired_by
    record, value = render_aggregate(record, enricher)
    if not keep_parts:
        state.clear_parts()
    state.mark_closed(Closed(status, kind))
    return Output(Outcome(status), kafka_key(transaction), value, record)


def render_aggregate(record: dict, enricher: Enricher) -> tuple[dict, str]:
    """The enriched record and its JSON; if enriching fails or yields no strict JSON, the
    record as built, with `enrichment_error` saying why. The aggregate is never lost."""
    try:
        enriched = enricher(record)
        return enriched, to_json(enriched)
    except Exception as error:  # noqa: BLE001 - enrichment must never cost the aggregate
        plain = {**record, "enrichment_error": printable(f"{type(error).__name__}: {error}")[:500]}
        return plain, to_json(plain)


class TimerAction(Enum):
    IGNORE = "ignore"  # a timer of a transaction that no longer needs it
    FORGET = "forget"  # the closed marker's retention is over: forget the transaction
    REPORT = "report"  # an open transaction's progress timer (event time): report its progress
    DEFER = "defer"  # the wall-clock fallback while input still flows: look again later
    EXPIRE = "expire"  # emit the partial


@dataclass(frozen=True)
class TimerDecision:
    action: TimerAction
    again_at: int | None = None  # DEFER: when the fallback looks again
    expired_by: str | None = None  # EXPIRE: BY_EVENT_TIME or BY_WALL_CLOCK


def on_timer(
    fired_at: int,
    wall_clock: bool,
    open_deadlines: tuple[int, int] | None,
    closed_until: int | None,
    now_ms: int,
    last_input_ms: int,
    grace_ms: int,
    progress_at: int = 0,
) -> TimerDecision:
    """What a firing timer does to its transaction; the Flink shell only carries it out.

    A timer acts only if the transaction's state names it: an open transaction stores its two
    deadlines (`open_deadlines`: event time, wall clock) and, when its progress is due on the
    progress topic, that event time (`progress_at`, 0 for none); a closed one the end of its
    retention (`closed_until`; 0 for a marker written before it was stored, which any
    wall-clock timer ends). Any other firing is stale (a timer of a transaction that has
    closed since, a deferred fallback's earlier time, the metrics' flush timer) and ignored.
    """
    if open_deadlines is not None:
        event_at, wall_at = open_deadlines
        if not wall_clock:
            if fired_at == event_at:
                return TimerDecision(TimerAction.EXPIRE, expired_by=BY_EVENT_TIME)
            if progress_at and fired_at == progress_at:
                return TimerDecision(TimerAction.REPORT)
            return TimerDecision(TimerAction.IGNORE)
        if fired_at != wall_at:
            return TimerDecision(TimerAction.IGNORE)
        later = deferred_fallback(now_ms, last_input_ms, grace_ms)
        if later is not None:
            return TimerDecision(TimerAction.DEFER, again_at=later)
        return TimerDecision(TimerAction.EXPIRE, expired_by=BY_WALL_CLOCK)
    if closed_until is not None and wall_clock and fired_at >= closed_until:
        return TimerDecision(TimerAction.FORGET)
    return TimerDecision(TimerAction.IGNORE)


def closed_marker(closed: Closed, until_ms: int) -> str:
    """What a closed transaction keeps in state: `status@retention end[@amends@kind]`
    (the short form when there is neither, as most transactions)."""
    if not closed.amends and closed.kind is None:
        return f"{closed.status}@{until_ms}"
    return f"{closed.status}@{until_ms}@{closed.amends}@{closed.kind or ''}"


def read_closed_marker(marker: str) -> tuple[Closed, int]:
    """(what the transaction closed with, retention end) of a closed marker. Markers of
    earlier versions read too: `status@until` (no amendments, no kind) and `status`
    (retention end 0, which the next wall-clock timer ends)."""
    status, until, amends, kind = (marker.split("@", 3) + ["", "", ""])[:4]
    return Closed(status, kind or None, int(amends or 0)), int(until or 0)


def deferred_fallback(now_ms: int, last_input_ms: int, grace_ms: int) -> int | None:
    """When the wall-clock fallback fires: None to expire now, or the time to look again.

    The fallback exists for quiet times, when no input moves event time. While input still
    arrives (for instance a backlog read after a restore, when overdue wall-clock timers fire
    at once) event time is moving and decides; expiring then would cut off parts that are
    still on their way. So a partial expires by the fallback only after `grace_ms` without
    any input.
    """
    quiet_for = now_ms - last_input_ms
    return None if quiet_for >= grace_ms else now_ms + (grace_ms - quiet_for)


def deadlines(
    rule: Rule, first_ms: int, last_ms: int, part_ms: int, now_ms: int, grace_ms: int
) -> tuple[int, int]:
    """(event-time deadline, wall-clock fallback) of an open transaction after a part with
    event time `part_ms`; `first_ms` and `last_ms` are its parts' earliest and latest.

    The fallback fires `grace_ms` after the event-time deadline would be reached if event
    time kept pace with the wall clock from this part on: `timeout + grace` after a
    transaction's first part, and after each part in since-last mode.
    """
    event_at = rule.deadline(first_ms, last_ms)
    return event_at, now_ms + max(event_at - part_ms, 0) + grace_ms


def build_aggregate(
    transaction: str,
    parts: Mapping[str, Part],
    expected: Collection[str],
    status: str,
    emitted_at: int,
) -> dict:
    """The output record for a complete or expired transaction."""
    times = [p.event_time for p in parts.values()]
    first = min(times)
    arrival = sorted(parts, key=lambda t: parts[t].seq)
    return {
        "transaction": transaction,
        "status": status,
        **_held(expected, arrival),
        "parts": {t: json.loads(parts[t].value) for t in arrival},
        "sources": {
            t: {"partition": parts[t].partition, "offset": parts[t].offset} for t in arrival
        },
        "arrival_order": arrival,
        "part_count": len(parts),
        "offsets_ms": {t: parts[t].event_time - first for t in arrival},
        "first_event_time": first,
        "last_event_time": max(times),
        "duration_ms": max(times) - first,
        "emitted_at": emitted_at,
    }


def _held(expected: Collection[str], arrival: Sequence[str]) -> dict:
    """`types`: the expected types present, then any others in arrival order; `missing`:
    the expected types absent."""
    present = set(arrival)
    return {
        "types": [t for t in expected if t in present] + [t for t in arrival if t not in expected],
        "missing": [t for t in expected if t not in present],
    }


def progress_record(
    transaction: str,
    held: Sequence[str],
    rule: Rule,
    span: tuple[int, int],
    expires_at: int,
    now_ms: int,
    kind: str | None,
    rule_version: int,
) -> dict:
    """What the progress topic says of an open transaction: what it has and lacks so far,
    and when its partial expires (event time). The PostgreSQL writer stores it as a row with
    status `open` until the transaction's final record replaces it."""
    first, last = span
    return {
        "transaction": transaction,
        "status": Outcome.OPEN.value,
        **_held(rule.required, held),
        "arrival_order": list(held),
        "part_count": len(held),
        "first_event_time": first,
        "last_event_time": last,
        "duration_ms": last - first,
        "expires_at": expires_at,
        "emitted_at": now_ms,
        "kind": kind,
        "rule_version": rule_version,
    }


def late_record(event: Event, final_status: str) -> str:
    """What goes to the late topic: the record and the status its transaction closed with."""
    return to_json(
        {
            "transaction": event.transaction,
            "type": event.type,
            "final_status": final_status,
            "topic": event.source.topic,
            "partition": event.source.partition,
            "offset": event.source.offset,
            "timestamp": event.source.timestamp,
            "value": json.loads(event.value),
        }
    )


def kafka_key(transaction: str | None) -> str | None:
    """Outputs are keyed like the original producer's records: a JSON-quoted string."""
    return None if transaction is None else to_json(transaction)
