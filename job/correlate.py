"""The Flink function: a thin shell that keeps state, timers and metrics for the rules.

`Correlate` is the job's one Python operator. Records reach it already keyed by their
transaction id, which Flink SQL read in Java (`sql/input_records.sql`, `job.sources`), so no
Python runs before the shuffle and this is the only busy Python thread of a TaskManager (in
thread mode all Python of a TaskManager shares one GIL). It parses each record
(`job.records`: an event or a dead letter), lets the rules in `job.aggregate` decide, stores
the parts in a `MapState` (type -> part), enriches what it emits (`job.enrich`) and keeps two
timers per open transaction: an event-time timer at first event + timeout, and a
processing-time fallback that expires a partial even when every producer has gone quiet and
event time stands still. A closed transaction keeps only its status, until a
processing-time timer forgets it after the retention.

Every call into Flink's state, timers and metrics crosses into Java and re-takes the GIL, so
the shell makes few: the held types and both deadlines live in one `ValueState` read once per
record (no `MapState.keys()` iteration), the parts are read back only when a transaction
closes, the clock is Python's (`time.time()`, which is what Flink's processing time is),
and counters are summed in Python and flushed in batches (`job.metrics`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import astuple

from pyflink.common import Row, Types
from pyflink.datastream import KeyedBroadcastProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from job import aggregate, enrich
from job.aggregate import Outcome, Output, Part, TimerAction, Verdict
from job.config import JobConfig
from job.metrics import Tally
from job.records import (
    INTERNAL_ERROR,
    DeadLetter,
    Event,
    Source,
    internal_error,
    keyed,
    parse,
    to_json,
)

_STR, _INT, _LONG = Types.STRING(), Types.INT(), Types.LONG()

# State layout; names and types are part of the savepoint format, change them with care.
PARTS = MapStateDescriptor(
    "parts", _STR, Types.TUPLE([_INT, _LONG, _STR, _INT, _LONG])
)  # type -> (seq, event time, value, partition, offset)
CLOSED = ValueStateDescriptor("closed", _STR)  # "status@retention end" of a closed transaction
# An open transaction: (event-time deadline, wall-clock deadline, held types in arrival
# order). Tuples are pickled in thread mode, so state written before the held types were
# stored here, a 2-tuple, still reads (its held types come from the MapState's keys).
DEADLINES = ValueStateDescriptor("deadlines", Types.PICKLED_BYTE_ARRAY())
REFERENCE = MapStateDescriptor("reference", _STR, _STR)  # broadcast: type -> JSON object

# How often counted metrics reach Flink; a timer makes them exact when input stops.
METRICS_EVERY_MS = 1_000


def output_topics(config: JobConfig) -> dict[Outcome, str]:
    """Each outcome's topic; the function builds it once, in `open()`."""
    return {
        Outcome.COMPLETE: config.aggregated_topic,
        Outcome.EXPIRED: config.expired_topic,
        Outcome.DEAD_LETTER: config.dead_letter_topic,
        Outcome.LATE: config.late_topic,
    }


def output_row(topics: dict[Outcome, str], output: Output) -> Row:
    return Row(topics[output.kind], output.key, output.value)


def part_to_state(part: Part) -> tuple:
    """A part as the `parts` MapState stores it: the dataclass's fields in their order, which
    is part of the savepoint format (tests/test_correlate_state.py pins it)."""
    return astuple(part)


def part_from_state(values) -> Part:
    return Part(*values)


class _FlinkTransactionState:
    """`aggregate.TransactionState` over the function's keyed state (current key).

    `load` reads the small state once per record or timer: an open transaction's deadlines
    and held types (`self.open`). The rules then ask for what they need; the shell writes the
    deadlines back once, after the rules have decided (`save_open`).
    """

    def __init__(self, parts, closed, deadlines, retention_ms: int):
        self._parts, self._closed, self._deadlines = parts, closed, deadlines
        self.retention_ms = retention_ms
        self.open: tuple | None = None  # (event deadline, wall deadline[, held types])
        self.held: tuple[str, ...] = ()
        self.closed_until = 0

    def load(self, now_ms: int) -> None:
        self.open = None  # not the previous key's, should the read below raise
        self.open = self._deadlines.value()
        if self.open is None:
            self.held = ()
        elif len(self.open) > 2:
            self.held = self.open[2]
        else:  # written before the held types were stored beside the deadlines
            self.held = tuple(self._parts.keys())
        self.closed_until = now_ms + self.retention_ms

    def held_types(self) -> list[str]:
        return list(self.held)

    def add_part(self, record_type: str, part: Part) -> None:
        self._parts.put(record_type, part_to_state(part))
        self.held = (*self.held, record_type)

    def save_open(self, event_at: int, wall_at: int) -> None:
        self._deadlines.update((event_at, wall_at, self.held))

    def parts(self) -> dict[str, Part]:
        return {t: part_from_state(p) for t, p in self._parts.items()}

    def clear_parts(self) -> None:
        self._parts.clear()
        self.held = ()

    def closed_status(self) -> str | None:
        marker = self._closed.value()
        return None if marker is None else aggregate.read_closed_marker(marker)[0]

    def closed_marker_until(self) -> int | None:
        marker = self._closed.value()
        return None if marker is None else aggregate.read_closed_marker(marker)[1]

    def mark_closed(self, status: str) -> None:
        self._closed.update(aggregate.closed_marker(status, self.closed_until))

    def forget(self) -> None:
        self._closed.clear()


# Counter names, as the web UI and Prometheus show them under `correlate_transactions`.
RECORDS_IN = "type.{}.records_in"
DEAD_LETTERS = "dead_letters"
IN_FLIGHT = "transactions_in_flight"
CLOSED_MARKERS = "closed_markers"
_OUTCOME_COUNTERS = {
    Verdict.COMPLETE: "aggregated",
    Verdict.DUPLICATE: "duplicates",
    Verdict.LATE: "late",
}
_COUNTERS = (
    DEAD_LETTERS,
    *_OUTCOME_COUNTERS.values(),
    "expired",
    "enrich_errors",
    "internal_errors",
    "reference_errors",
    IN_FLIGHT,
    CLOSED_MARKERS,
)


class Correlate(KeyedBroadcastProcessFunction):
    """Keyed input: raw records, keyed by transaction; broadcast input: the reference
    topic's records."""

    def __init__(self, config: JobConfig, clock: Callable[[], int] | None = None):
        self.config = config
        self.clock = clock or _now_ms  # wall clock in epoch ms; tests pass a fake one
        self.timeout_ms = int(config.timeout_s * 1000)
        self.fallback_ms = int((config.timeout_s + config.expiry_grace_s) * 1000)
        self.retention_ms = int(config.closed_retention_s * 1000)
        self.grace_ms = int(config.expiry_grace_s * 1000)

    def open(self, runtime_context: RuntimeContext):
        self.topics = output_topics(self.config)
        self.parts = runtime_context.get_map_state(PARTS)
        self.closed = runtime_context.get_state(CLOSED)
        self.deadlines = runtime_context.get_state(DEADLINES)
        self.state = _FlinkTransactionState(
            self.parts, self.closed, self.deadlines, self.retention_ms
        )
        self.hook = enrich.load_hook(self.config.enrich_hook)
        self._reference: dict[str, dict] | None = None  # cache of the broadcast state
        self.last_input_ms = self.clock()  # a (re)start counts as input: a backlog may follow
        self._open_metrics(runtime_context.get_metrics_group())

    def _open_metrics(self, group) -> None:
        """Counters per outcome, and two up-down counts of what this instance holds.

        No Python gauges: Flink reads gauges from its metrics thread, and calling into the
        embedded interpreter from that thread crashed a TaskManager (SIGSEGV in take_gil)
        when a job was cancelled. Counters live in Java and are safe to read anywhere.
        """
        counters = {name: group.counter(name) for name in _COUNTERS}
        for t in self.config.types:
            counters[RECORDS_IN.format(t)] = group.add_group("type", t).counter("records_in")
        self.tally = Tally(counters, METRICS_EVERY_MS, self.clock())
        self._records_in = {t: RECORDS_IN.format(t) for t in self.config.types}
        self._flush_timer_at = 0
        # Distributions keep their numbers in Java, so reading them is as safe as counters.
        self.completion_ms = group.distribution("completion_duration_ms")
        self.expired_parts = group.distribution("parts_per_expired")

    def process_element(self, row, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext):
        # (key, payload, topic, partition, offset, event time): job.sources.KEYED_RECORD
        now = self.clock()
        self.last_input_ms = now
        source = Source(row[2], row[3], row[4], row[5])
        output = self._on_record(row[0], row[1], source, now, ctx)
        self._count_later(now, ctx)
        if output is not None:
            yield output_row(self.topics, output)

    def _on_record(self, key: str, payload: bytes | None, source: Source, now: int, ctx):
        try:
            result = keyed(
                parse(payload, source, self.config.type_of, self.config.max_record_bytes), key
            )
        except Exception as error:  # noqa: BLE001 - no record may restart the job
            return self._internal_error(error, payload, source, None)
        if isinstance(result, DeadLetter):
            self.tally.add(DEAD_LETTERS)
            return Output(Outcome.DEAD_LETTER, None, result.to_json())
        try:
            return self._on_event(result, now, ctx)
        except Exception as error:  # noqa: BLE001 - no record may restart the job
            # The rules change state only once their output exists, so the transaction is
            # as it was and this dead letter is the record's one place.
            return self._internal_error(error, payload, source, result.transaction)

    def _internal_error(self, error, payload, source, transaction) -> Output:
        self.tally.add("internal_errors")
        letter = internal_error(error, payload, source, transaction)
        return Output(Outcome.DEAD_LETTER, aggregate.kafka_key(transaction), letter.to_json())

    def _on_event(self, event: Event, now: int, ctx) -> Output | None:
        self.tally.add(self._records_in[event.type])
        self.state.load(now)
        step = aggregate.on_event(self.state, event, self.config.types, now, self._enricher(ctx))
        counter = _OUTCOME_COUNTERS.get(step.verdict)
        if counter is not None:
            self.tally.add(counter)
        if step.verdict is Verdict.OPENED:
            self._start_timers(ctx, event.source.timestamp, now)
        elif step.verdict is Verdict.HELD:
            self.state.save_open(*self.state.open[:2])
        elif step.verdict is Verdict.COMPLETE:
            self._count_emitted(step.output)
            self._after_close(ctx)
        return step.output

    def _count_later(self, now: int, ctx) -> None:
        """Hands the counts to Flink when due; while some are pending, a processing-time
        timer makes sure they arrive even if no record and no other timer follows."""
        if self.tally.due(now):
            self.tally.flush(now)
        elif self.tally.pending and self._flush_timer_at < now:
            self._flush_timer_at = now + METRICS_EVERY_MS
            ctx.timer_service().register_processing_time_timer(self._flush_timer_at)

    def process_broadcast_element(self, row, ctx: KeyedBroadcastProcessFunction.Context):
        try:
            record_type, fields = enrich.parse_reference(row[0], row[1])
            state = ctx.get_broadcast_state(REFERENCE)
            if fields is None:
                state.remove(record_type)
            else:
                state.put(record_type, to_json(fields))
            self._reference = None
        except Exception:  # noqa: BLE001 - a bad reference record is counted and skipped
            self.tally.add("reference_errors")
        yield from ()

    def _enricher(self, ctx):
        """Enrichment with the reference data as of now (read from state only when needed)."""

        def enricher(record: dict) -> dict:
            if self._reference is None:
                state = ctx.get_broadcast_state(REFERENCE)
                self._reference = {t: json.loads(v) for t, v in state.items()}
            return enrich.enrich(record, self._reference, self.hook)

        return enricher

    def _count_emitted(self, output: Output) -> None:
        """The metrics of an emitted aggregate or partial, where its outcome is decided."""
        record = output.record
        if "enrichment_error" in record:
            self.tally.add("enrich_errors")
        if record["status"] == Outcome.EXPIRED:
            self.expired_parts.update(record["part_count"])
        else:
            self.completion_ms.update(record["duration_ms"])

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext):
        now = self.clock()
        try:
            outputs = self._on_timer(timestamp, now, ctx)
        except Exception as error:  # noqa: BLE001 - no timer may restart the job
            outputs = self._give_up(ctx, error, now)
        self.tally.flush(now)  # every timer: counts are exact soon after input stops
        for output in outputs:
            yield output_row(self.topics, output)

    def _on_timer(self, timestamp: int, now: int, ctx) -> list[Output]:
        self.state.load(now)
        open_ = self.state.open
        decision = aggregate.on_timer(
            fired_at=timestamp,
            wall_clock=ctx.time_domain() == TimeDomain.PROCESSING_TIME,
            open_deadlines=None if open_ is None else open_[:2],
            closed_until=None if open_ is not None else self.state.closed_marker_until(),
            now_ms=now,
            last_input_ms=self.last_input_ms,
            grace_ms=self.grace_ms,
        )
        if decision.action is TimerAction.FORGET:
            self.state.forget()
            self.tally.add(CLOSED_MARKERS, -1)
        elif decision.action is TimerAction.DEFER:
            ctx.timer_service().register_processing_time_timer(decision.again_at)
            self.state.save_open(open_[0], decision.again_at)
        elif decision.action is TimerAction.EXPIRE:
            output = aggregate.close(
                self.state,
                ctx.get_current_key(),
                self.config.types,
                Outcome.EXPIRED,
                now,
                self._enricher(ctx),
                expired_by=decision.expired_by,
            )
            self.tally.add("expired")
            self._count_emitted(output)
            self._after_close(ctx)
            return [output]
        return []

    def _give_up(self, ctx, error: Exception, now: int) -> list[Output]:
        """A timer that failed unexpectedly: each held part becomes an `internal_error` dead
        letter (its own coordinates and bytes, so it is accounted once), and the transaction
        closes with that status, so the timer does not fail again and again."""
        self.tally.add("internal_errors")
        key = ctx.get_current_key()
        self.state.load(now)
        parts = self.state.parts()
        letters = [
            internal_error(
                error,
                part.value.encode(),
                Source(
                    self.config.topic_of(record_type), part.partition, part.offset, part.event_time
                ),
                key,
            )  # fmt: skip
            for record_type, part in parts.items()
        ]
        self.state.clear_parts()
        self.state.mark_closed(INTERNAL_ERROR)
        self._after_close(ctx)
        return [
            Output(Outcome.DEAD_LETTER, aggregate.kafka_key(key), letter.to_json())
            for letter in letters
        ]

    def _start_timers(self, ctx, first_event_time: int, now: int) -> None:
        timers = ctx.timer_service()
        event_deadline = aggregate.expiry_deadline(first_event_time, self.timeout_ms)
        wall_deadline = now + self.fallback_ms
        timers.register_event_time_timer(event_deadline)
        timers.register_processing_time_timer(wall_deadline)
        self.state.save_open(event_deadline, wall_deadline)
        self.tally.add(IN_FLIGHT)

    def _after_close(self, ctx) -> None:
        """Cancels the expiry timers and schedules forgetting the closed marker.

        Deleting costs one call each; a stale timer left to fire would cost a call into
        Python and a state read when it fires."""
        timers = ctx.timer_service()
        open_ = self.state.open
        if open_ is not None:
            timers.delete_event_time_timer(open_[0])
            timers.delete_processing_time_timer(open_[1])
            self.deadlines.clear()
            self.state.open = None
            self.tally.add(IN_FLIGHT, -1)
        timers.register_processing_time_timer(self.state.closed_until)
        self.tally.add(CLOSED_MARKERS)


def _now_ms() -> int:
    return int(time.time() * 1000)
