"""The Flink functions: a thin shell that keeps state and timers for the rules.

`ParseRecords` runs before `key_by` and splits off dead letters; `Correlate` runs per
transaction with a `MapState` (type -> part) and two timers: an event-time timer at first
event + timeout, and a processing-time fallback that expires a partial even when every
producer has gone quiet and event time stands still.
"""

from __future__ import annotations

import json
import time

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, ProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from job import aggregate
from job.aggregate import COMPLETE, EXPIRED, Part, Verdict
from job.config import JobConfig
from job.records import DUPLICATE, DeadLetter, Event, Source, parse
from job.sinks import OUTPUT_TYPE

# A parsed event on its way from the parser to the correlator.
_STR, _INT, _LONG = Types.STRING(), Types.INT(), Types.LONG()
EVENT_TYPE = Types.ROW_NAMED(
    ["transaction", "type", "value", "topic", "partition", "offset", "timestamp"],
    [_STR, _STR, _STR, _STR, _INT, _LONG, _LONG],
)
DEAD_LETTERS = OutputTag("dead-letters", OUTPUT_TYPE)

# State layout; names and types are part of the savepoint format, change them with care.
PART_TYPE = Types.TUPLE([Types.INT(), Types.LONG(), Types.STRING()])  # seq, event time, value
PARTS = MapStateDescriptor("parts", Types.STRING(), PART_TYPE)
DEADLINES = ValueStateDescriptor("deadlines", Types.TUPLE([Types.LONG(), Types.LONG()]))
CLOSED = ValueStateDescriptor("closed", Types.TUPLE([Types.STRING(), Types.LONG()]))


def dead_letter_row(config: JobConfig, letter: DeadLetter) -> Row:
    return Row(config.dead_letter_topic, aggregate.kafka_key(letter.transaction), letter.to_json())


class ParseRecords(ProcessFunction):
    def __init__(self, config: JobConfig):
        self.config = config

    def process_element(self, row, ctx: ProcessFunction.Context):
        source = Source(row[1], row[2], row[3], ctx.timestamp())
        result = parse(row[0], source, self.config.type_of, self.config.max_record_bytes)
        if isinstance(result, DeadLetter):
            yield DEAD_LETTERS, dead_letter_row(self.config, result)
        else:
            s = result.source
            yield Row(
                result.transaction,
                result.type,
                result.value,
                s.topic,
                s.partition,
                s.offset,
                s.timestamp,
            )


class Correlate(KeyedProcessFunction):
    def __init__(self, config: JobConfig):
        self.config = config
        self.timeout_ms = int(config.timeout_s * 1000)
        self.fallback_ms = int((config.timeout_s + config.expiry_grace_s) * 1000)
        self.retention_ms = int(config.closed_retention_s * 1000)

    def open(self, runtime_context: RuntimeContext):
        self.parts = runtime_context.get_map_state(PARTS)
        self.deadlines = runtime_context.get_state(DEADLINES)
        self.closed = runtime_context.get_state(CLOSED)

    def process_element(self, row, ctx: KeyedProcessFunction.Context):
        event = Event(row[0], row[1], row[2], Source(row[3], row[4], row[5], row[6]))
        held = list(self.parts.keys())
        closed = self.closed.value()
        verdict = aggregate.classify(
            event.type, held, None if closed is None else closed[0], self.config.types
        )
        if verdict is Verdict.LATE:
            late = aggregate.late_record(event, closed[0])
            yield Row(
                self.config.late_topic, aggregate.kafka_key(event.transaction), json.dumps(late)
            )
            return
        if verdict is Verdict.DUPLICATE:
            letter = DeadLetter(
                DUPLICATE, f"type {event.type} already held", event.value.encode(), event.source,
                event.transaction,
            )  # fmt: skip
            yield dead_letter_row(self.config, letter)
            return
        self.parts.put(event.type, (len(held), event.source.timestamp, event.value))
        if verdict is Verdict.OPENED:
            self._start_timers(ctx, event.source.timestamp)
        elif verdict is Verdict.COMPLETED:
            yield self._close(ctx, COMPLETE)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        if not self.parts.is_empty():
            yield self._close(ctx, EXPIRED)
            return
        closed = self.closed.value()
        if closed is not None and timestamp >= closed[1]:
            self.closed.clear()  # retention over: forget the transaction entirely

    def _start_timers(self, ctx, first_event_time: int) -> None:
        timers = ctx.timer_service()
        event_deadline = aggregate.expiry_deadline(first_event_time, self.timeout_ms)
        wall_deadline = timers.current_processing_time() + self.fallback_ms
        timers.register_event_time_timer(event_deadline)
        timers.register_processing_time_timer(wall_deadline)
        self.deadlines.update((event_deadline, wall_deadline))

    def _close(self, ctx, status: str) -> Row:
        """Emits the transaction, drops its parts and timers, remembers it for late records."""
        transaction = ctx.get_current_key()
        parts = {t: Part(*p) for t, p in self.parts.items()}
        record = aggregate.build_aggregate(
            transaction, parts, self.config.types, status, int(time.time() * 1000)
        )
        timers = ctx.timer_service()
        deadlines = self.deadlines.value()
        if deadlines is not None:
            timers.delete_event_time_timer(deadlines[0])
            timers.delete_processing_time_timer(deadlines[1])
        self.parts.clear()
        self.deadlines.clear()
        forget_at = timers.current_processing_time() + self.retention_ms
        self.closed.update((status, forget_at))
        timers.register_processing_time_timer(forget_at)
        topic = self.config.aggregated_topic if status == COMPLETE else self.config.expired_topic
        return Row(topic, aggregate.kafka_key(transaction), json.dumps(record))
