"""The Flink functions: a thin shell that keeps state, timers and metrics for the rules.

`ParseRecords` runs before `key_by` and splits off dead letters. `Correlate` (a keyed
process function that also receives the broadcast reference data) runs per transaction: the
rules in `job.aggregate` decide, this class stores the parts in a `MapState` (type -> part),
enriches what it emits (`job.enrich`) and keeps two timers per open transaction: an
event-time timer at first event + timeout, and a processing-time fallback that expires a
partial even when every producer has gone quiet and event time stands still. A closed
transaction keeps only its status, until a processing-time timer forgets it after the
retention.
"""

from __future__ import annotations

import json
import time
from dataclasses import astuple

from pyflink.common import Row, Types
from pyflink.datastream import (
    KeyedBroadcastProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
    TimeDomain,
)
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from job import aggregate, enrich
from job.aggregate import Outcome, Output, Part, TimerAction, Verdict
from job.config import JobConfig
from job.records import INTERNAL_ERROR, DeadLetter, Event, Source, internal_error, parse, to_json
from job.sinks import OUTPUT_TYPE

_STR, _INT, _LONG = Types.STRING(), Types.INT(), Types.LONG()

# A parsed event on its way from the parser to the correlator.
EVENT_TYPE = Types.ROW_NAMED(
    ["transaction", "type", "value", "topic", "partition", "offset", "timestamp"],
    [_STR, _STR, _STR, _STR, _INT, _LONG, _LONG],
)
DEAD_LETTERS = OutputTag("dead-letters", OUTPUT_TYPE)

# State layout; names and types are part of the savepoint format, change them with care.
PARTS = MapStateDescriptor(
    "parts", _STR, Types.TUPLE([_INT, _LONG, _STR, _INT, _LONG])
)  # type -> (seq, event time, value, partition, offset)
CLOSED = ValueStateDescriptor("closed", _STR)  # status of a closed transaction
DEADLINES = ValueStateDescriptor("deadlines", Types.TUPLE([_LONG, _LONG]))  # event, wall clock
REFERENCE = MapStateDescriptor("reference", _STR, _STR)  # broadcast: type -> JSON object


def output_topics(config: JobConfig) -> dict[Outcome, str]:
    """Each outcome's topic; every function builds it once, in `open()`."""
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


class ParseRecords(ProcessFunction):
    def __init__(self, config: JobConfig):
        self.config = config

    def open(self, runtime_context: RuntimeContext):
        self.topics = output_topics(self.config)
        group = runtime_context.get_metrics_group()
        self.dead_letters = group.counter("dead_letters")
        self.internal_errors = group.counter("internal_errors")

    def process_element(self, row, ctx: ProcessFunction.Context):
        source = Source(row[1], row[2], row[3], ctx.timestamp())
        try:
            result = parse(row[0], source, self.config.type_of, self.config.max_record_bytes)
        except Exception as error:  # noqa: BLE001 - no record may restart the job
            self.internal_errors.inc()
            result = internal_error(error, row[0], source)
        if isinstance(result, DeadLetter):
            self.dead_letters.inc()
            output = Output(Outcome.DEAD_LETTER, None, result.to_json())
            yield DEAD_LETTERS, output_row(self.topics, output)
        else:
            s = result.source
            yield Row(
                result.transaction, result.type, result.value,
                s.topic, s.partition, s.offset, s.timestamp,
            )  # fmt: skip


class _FlinkTransactionState:
    """`aggregate.TransactionState` over the function's keyed state (current key)."""

    def __init__(self, parts, closed):
        self._parts, self._closed = parts, closed

    def held_types(self) -> list[str]:
        return list(self._parts.keys())

    def add_part(self, record_type: str, part: Part) -> None:
        self._parts.put(record_type, part_to_state(part))

    def parts(self) -> dict[str, Part]:
        return {t: part_from_state(p) for t, p in self._parts.items()}

    def clear_parts(self) -> None:
        self._parts.clear()

    def closed_status(self) -> str | None:
        return self._closed.value()

    def mark_closed(self, status: str) -> None:
        self._closed.update(status)


class Correlate(KeyedBroadcastProcessFunction):
    """Keyed input: parsed events; broadcast input: the reference topic's records."""

    def __init__(self, config: JobConfig):
        self.config = config
        self.timeout_ms = int(config.timeout_s * 1000)
        self.fallback_ms = int((config.timeout_s + config.expiry_grace_s) * 1000)
        self.retention_ms = int(config.closed_retention_s * 1000)
        self.grace_ms = int(config.expiry_grace_s * 1000)

    def open(self, runtime_context: RuntimeContext):
        self.topics = output_topics(self.config)
        self.parts = runtime_context.get_map_state(PARTS)
        self.closed = runtime_context.get_state(CLOSED)
        self.deadlines = runtime_context.get_state(DEADLINES)
        self.state = _FlinkTransactionState(self.parts, self.closed)
        self.hook = enrich.load_hook(self.config.enrich_hook)
        self._reference: dict[str, dict] | None = None  # cache of the broadcast state
        self.last_input_ms = _now_ms()  # a (re)start counts as input: a backlog may follow
        self._open_metrics(runtime_context.get_metrics_group())

    def _open_metrics(self, group) -> None:
        """Counters per outcome, and two up-down counts of what this instance holds.

        No Python gauges: Flink reads gauges from its metrics thread, and calling into the
        embedded interpreter from that thread crashed a TaskManager (SIGSEGV in take_gil)
        when a job was cancelled. Counters live in Java and are safe to read anywhere.
        """
        self.records_in = {
            t: group.add_group("type", t).counter("records_in") for t in self.config.types
        }
        self.outcomes = {v: group.counter(name) for v, name in _OUTCOME_COUNTERS.items()}
        self.expired = group.counter("expired")
        self.enrich_errors = group.counter("enrich_errors")
        self.internal_errors = group.counter("internal_errors")
        self.reference_errors = group.counter("reference_errors")
        self.in_flight = group.counter("transactions_in_flight")
        self.closed_markers = group.counter("closed_markers")
        # Distributions keep their numbers in Java, so reading them is as safe as counters.
        self.completion_ms = group.distribution("completion_duration_ms")
        self.expired_parts = group.distribution("parts_per_expired")

    def process_element(self, row, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext):
        event = Event(row[0], row[1], row[2], Source(row[3], row[4], row[5], row[6]))
        self.last_input_ms = _now_ms()
        try:
            output = self._on_event(event, ctx)
        except Exception as error:  # noqa: BLE001 - no record may restart the job
            # The rules change state only once their output exists, so the transaction is
            # as it was and this dead letter is the record's one place.
            self.internal_errors.inc()
            letter = internal_error(error, event.value.encode(), event.source, event.transaction)
            output = Output(Outcome.DEAD_LETTER, aggregate.kafka_key(event.transaction),
                            letter.to_json())  # fmt: skip
        if output is not None:
            yield output_row(self.topics, output)

    def _on_event(self, event: Event, ctx) -> Output | None:
        self.records_in[event.type].inc()
        step = aggregate.on_event(
            self.state, event, self.config.types, _now_ms(), self._enricher(ctx)
        )
        counter = self.outcomes.get(step.verdict)
        if counter is not None:
            counter.inc()
        if step.verdict is Verdict.OPENED:
            self.in_flight.inc()
            self._start_timers(ctx, event.source.timestamp)
        elif step.verdict is Verdict.COMPLETE:
            self._count_emitted(step.output)
            self._after_close(ctx)
        return step.output

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
            self.reference_errors.inc()
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
            self.enrich_errors.inc()
        if record["status"] == Outcome.EXPIRED:
            self.expired_parts.update(record["part_count"])
        else:
            self.completion_ms.update(record["duration_ms"])

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext):
        try:
            outputs = self._on_timer(ctx)
        except Exception as error:  # noqa: BLE001 - no timer may restart the job
            outputs = self._give_up(ctx, error)
        for output in outputs:
            yield output_row(self.topics, output)

    def _on_timer(self, ctx) -> list[Output]:
        holds_parts = not self.parts.is_empty()
        decision = aggregate.on_timer(
            holds_parts=holds_parts,
            closed=not holds_parts and self.closed.value() is not None,  # read only if needed
            wall_clock=ctx.time_domain() == TimeDomain.PROCESSING_TIME,
            now_ms=_now_ms(),
            last_input_ms=self.last_input_ms,
            grace_ms=self.grace_ms,
        )
        if decision.action is TimerAction.FORGET:
            self.closed.clear()
            self.closed_markers.dec()
        elif decision.action is TimerAction.DEFER:
            ctx.timer_service().register_processing_time_timer(decision.again_at)
            self.deadlines.update((self.deadlines.value()[0], decision.again_at))
        elif decision.action is TimerAction.EXPIRE:
            output = aggregate.close(
                self.state,
                ctx.get_current_key(),
                self.config.types,
                Outcome.EXPIRED,
                _now_ms(),
                self._enricher(ctx),
                expired_by=decision.expired_by,
            )
            self.expired.inc()
            self._count_emitted(output)
            self._after_close(ctx)
            return [output]
        return []

    def _give_up(self, ctx, error: Exception) -> list[Output]:
        """A timer that failed unexpectedly: each held part becomes an `internal_error` dead
        letter (its own coordinates and bytes, so it is accounted once), and the transaction
        closes with that status, so the timer does not fail again and again."""
        self.internal_errors.inc()
        key = ctx.get_current_key()
        parts = self.state.parts()
        letters = [
            internal_error(
                error,
                part.value.encode(),
                Source(
                    self.config.topic_prefix + record_type,
                    part.partition,
                    part.offset,
                    part.event_time,
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

    def _start_timers(self, ctx, first_event_time: int) -> None:
        timers = ctx.timer_service()
        event_deadline = aggregate.expiry_deadline(first_event_time, self.timeout_ms)
        wall_deadline = timers.current_processing_time() + self.fallback_ms
        timers.register_event_time_timer(event_deadline)
        timers.register_processing_time_timer(wall_deadline)
        self.deadlines.update((event_deadline, wall_deadline))

    def _after_close(self, ctx) -> None:
        """Cancels the expiry timers and schedules forgetting the closed marker."""
        timers = ctx.timer_service()
        deadlines = self.deadlines.value()
        if deadlines is not None:
            timers.delete_event_time_timer(deadlines[0])
            timers.delete_processing_time_timer(deadlines[1])
            self.deadlines.clear()
            self.in_flight.dec()
        timers.register_processing_time_timer(timers.current_processing_time() + self.retention_ms)
        self.closed_markers.inc()


_OUTCOME_COUNTERS = {
    Verdict.COMPLETE: "aggregated",
    Verdict.DUPLICATE: "duplicates",
    Verdict.LATE: "late",
}


def _now_ms() -> int:
    return int(time.time() * 1000)
