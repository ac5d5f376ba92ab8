"""The Flink function: a thin shell that keeps state, timers and metrics for the rules.

`Correlate` is the job's one Python operator. Records reach it already keyed by their
transaction id, which Flink SQL read in Java (`sql/input_records.sql`, `job.sources`), so no
Python runs before the shuffle and this is the only busy Python thread of a TaskManager (in
thread mode all Python of a TaskManager shares one GIL). It parses each record
(`job.records`: an event or a dead letter), lets the rules in `job.aggregate` decide, stores
the parts in a `MapState` (type -> part), enriches what it emits (`job.enrich`) and keeps two
timers per open transaction: an event-time timer at first event + timeout, and a
processing-time fallback that expires a partial even when every producer has gone quiet and
event time stands still. With `--progress-interval-s` a third, event-time, timer reports an
open transaction on the progress topic (what it has and lacks), and the close deletes that
report with a tombstone. A closed transaction keeps only its status, until a
processing-time timer forgets it after the retention.

Every call into Flink's state, timers and metrics crosses into Java and re-takes the GIL, so
the shell makes few: the held types and both deadlines live in one `ValueState` read once per
record (no `MapState.keys()` iteration), the parts are read back only when a transaction
closes (one `get` per held type, no `items()` iteration) and removed with one `remove`
each (no `clear()`, which iterates too), the clock is Python's
(`time.time()`, which is what Flink's processing time is), and counters are summed in Python
and flushed in batches (`job.metrics`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import NamedTuple

from pyflink.common import Row, Types
from pyflink.datastream import KeyedBroadcastProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from job import aggregate, enrich, metrics
from job.aggregate import Closed, Outcome, Output, Part, TimerAction, Verdict, kafka_key
from job.config import AMEND, JobConfig
from job.metrics import (
    CLOSED_MARKERS,
    COMPLETION,
    DEAD_LETTERS,
    ENRICH_ERRORS,
    EXPIRED,
    IN_FLIGHT,
    INTERNAL_ERRORS,
    LATE_OF_TYPE,
    MISSING,
    PROGRESS,
    RECORDS_IN,
    REFERENCE_ERRORS,
    Tally,
    arrival_offset,
    counter_names,
    counter_path,
    late_age,
)
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
from job.rules import RULES_KEY, SINCE_LAST, RulesError, newer
from job.sizes import fit

_STR, _INT, _LONG = Types.STRING(), Types.INT(), Types.LONG()

# State layout; names and types are part of the savepoint format, change them with care.
PARTS = MapStateDescriptor(
    "parts", _STR, Types.TUPLE([_INT, _LONG, _STR, _INT, _LONG])
)  # type -> (seq, event time, value, partition, offset)
CLOSED = ValueStateDescriptor("closed", _STR)  # "status@retention end" of a closed transaction
DEADLINES = ValueStateDescriptor("deadlines", Types.PICKLED_BYTE_ARRAY())  # an `Open`, as a tuple
REFERENCE = MapStateDescriptor("reference", _STR, _STR)  # broadcast: type -> JSON object
# Broadcast state keys of the job's own, never a type's: the rules in force (job.rules), and
# what this instance holds (`Held`). Reference records whose key starts with "@" are refused.
HELD_KEY = "@held"

# How often counted metrics reach Flink; a timer makes them exact when input stops.
METRICS_EVERY_MS = 1_000


class Open(NamedTuple):
    """An open transaction, stored in `deadlines` as a plain tuple in this field order (part
    of the savepoint format). Tuples are pickled in thread mode, so the shorter tuples of
    earlier versions still read (`from_state`): (event_at, wall_at) with the held types
    taken from the MapState's keys, then + held, then + kind and the event-time span."""

    event_at: int  # event-time deadline
    wall_at: int  # wall-clock fallback deadline
    held: tuple[str, ...] = ()  # in arrival order
    kind: str | None = None
    first: int | None = None  # event-time span of the parts; None: opened by a version
    last: int | None = None  # that did not store it (its deadlines never move)
    progress_at: int = 0  # event time its progress timer fires at; 0: none pending
    reported: int = 0  # parts in its last progress record; 0: never reported

    @classmethod
    def from_state(cls, stored: tuple, parts) -> Open:
        if len(stored) == 2:
            return cls(*stored, tuple(parts.keys()))
        return cls(*stored)

    @property
    def span(self) -> tuple[int, int] | None:
        return None if self.first is None else (self.first, self.last)


class Held(NamedTuple):
    """How many open transactions and closed markers one instance holds in keyed state.

    Flink restores keyed state after a failure but not metrics, and a Python function cannot
    count keyed state on restore, so the instance keeps its two counts in its own copy of the
    broadcast state (`HELD_KEY`), written whenever they change: the checkpoint that holds
    the keyed state holds the counts that describe it, and the gauges start from them after
    a restore. At the same parallelism each instance gets its own copy back (Flink's
    repartitioning of broadcast state); after a rescale the copies no longer match the
    key groups, so the counts start again from zero and cannot go below it.
    """

    open: int = 0
    closed: int = 0
    index: int = 0  # the instance's subtask index ...
    parallelism: int = 1  # ... of this many: whose copy it is

    def to_text(self) -> str:
        return ",".join(map(str, self))

    @classmethod
    def from_text(cls, text: str | None, index: int, parallelism: int) -> Held:
        """The counts stored by this instance before a restore; zeros for any other's."""
        try:
            stored = cls(*map(int, (text or "").split(",")))
        except (TypeError, ValueError):
            return cls(0, 0, index, parallelism)
        if (stored.index, stored.parallelism) != (index, parallelism):
            return cls(0, 0, index, parallelism)
        return stored

    def add(self, open_: int = 0, closed: int = 0) -> Held:
        return self._replace(open=max(self.open + open_, 0), closed=max(self.closed + closed, 0))


def output_topics(config: JobConfig) -> dict[Outcome, str]:
    """Each outcome's topic; the function builds it once, in `open()`."""
    return {
        Outcome.COMPLETE: config.aggregated_topic,
        Outcome.EXPIRED: config.expired_topic,
        Outcome.DEAD_LETTER: config.dead_letter_topic,
        Outcome.LATE: config.late_topic,
        Outcome.OPEN: config.progress_topic,
    }


def output_row(topics: dict[Outcome, str], output: Output) -> Row:
    return Row(topics[output.kind], output.key, output.value)


def part_to_state(part: Part) -> tuple:
    """A part as the `parts` MapState stores it: the dataclass's fields in their order, which
    is part of the savepoint format (tests/test_correlate_state.py pins it). Spelled out:
    `dataclasses.astuple` deep-copies field by field, 3% of the job's busy time."""
    return (part.seq, part.event_time, part.value, part.partition, part.offset)


def part_from_state(values) -> Part:
    return Part(*values)


class _FlinkTransactionState:
    """`aggregate.TransactionState` over the function's keyed state (current key).

    `load` reads the small state once per record or timer: an open transaction's `Open`
    (`self.open`). The rules then ask for what they need; the shell writes the open state
    back once, after the rules have decided (`save_open`).
    """

    def __init__(self, parts, closed, deadlines, retention_ms: int):
        self._parts, self._closed, self._deadlines = parts, closed, deadlines
        self.retention_ms = retention_ms
        self.open: Open | None = None
        self.held: tuple[str, ...] = ()  # of the transaction as the rules leave it
        self.open_kind: str | None = None
        self.span: tuple[int, int] | None = None  # (first, last) event time of the parts
        self.closed_until = 0  # the retention end of a transaction closing now
        self.marker_until = 0  # the retention end of the marker read last

    def load(self, now_ms: int) -> None:
        self.open = None  # not the previous key's, should the read below raise
        stored = self._deadlines.value()
        self.open = None if stored is None else Open.from_state(stored, self._parts)
        if self.open is None:
            self.held, self.open_kind, self.span = (), None, None
        else:
            self.held, self.open_kind, self.span = self.open.held, self.open.kind, self.open.span
        self.closed_until = now_ms + self.retention_ms

    def held_types(self) -> list[str]:
        return list(self.held)

    def kind(self) -> str | None:
        return self.open_kind

    def add_part(self, record_type: str, part: Part, kind: str | None) -> None:
        self._parts.put(record_type, part_to_state(part))
        at = part.event_time
        if not self.held:
            self.span = (at, at)
        elif self.span is not None:  # None: opened by a version that did not store it
            self.span = (min(self.span[0], at), max(self.span[1], at))
        self.held = (*self.held, record_type)
        self.open_kind = kind

    def save_open(self, event_at: int, wall_at: int, progress_at: int | None = None,
                  reported: int | None = None) -> None:  # fmt: skip
        """Writes the open transaction back; progress fields not given stay as they were."""
        before = self.open or Open(0, 0)
        first, last = self.span or (None, None)
        self.open = Open(
            event_at, wall_at, self.held, self.open_kind, first, last,
            before.progress_at if progress_at is None else progress_at,
            before.reported if reported is None else reported,
        )  # fmt: skip
        self._deadlines.update(tuple(self.open))

    def parts(self) -> dict[str, Part]:
        """An open transaction's parts: one `get` per held type. Only an expired partial
        kept for amendments, whose types no open state names, is iterated: `items()` opens a
        RocksDB iterator and crosses into Java about four times per entry (step, entry, key,
        value)."""
        if self.open is None:
            return {t: part_from_state(p) for t, p in self._parts.items()}
        stored = ((t, self._parts.get(t)) for t in self.held)
        return {t: part_from_state(p) for t, p in stored if p is not None}

    def clear_parts(self) -> None:
        """An open transaction's parts: one `remove` per held type. `clear()` opens a RocksDB
        iterator over the key's entries and writes its own batch, which cost more than the
        removes; only a partial kept for amendments, whose types no open state names, is
        cleared that way. (`held` would not do: an amendment's `add_part` leaves it naming
        only the new part.)"""
        if self.open is None:
            self._parts.clear()
        else:
            for record_type in self.held:
                self._parts.remove(record_type)
        self.held = ()

    def closed_marker(self) -> tuple[Closed, int] | None:
        """(what it closed with, retention end) of a closed transaction; None otherwise."""
        marker = self._closed.value()
        if marker is None:
            return None
        closed, self.marker_until = aggregate.read_closed_marker(marker)
        return closed, self.marker_until

    def closed(self) -> Closed | None:
        marker = self.closed_marker()
        return None if marker is None else marker[0]

    def mark_closed(self, closed: Closed) -> None:
        """An amendment keeps the retention of the first close: state stays bounded."""
        until = self.marker_until if closed.amends else self.closed_until
        self._closed.update(aggregate.closed_marker(closed, until))

    def closed_at(self) -> int | None:
        """When the transaction whose marker was read last closed (first closed, if amended);
        None for a marker of a version that did not store its retention end."""
        return self.marker_until - self.retention_ms if self.marker_until else None

    def forget(self, parts_too: bool) -> None:
        self._closed.clear()
        if parts_too:
            self._parts.clear()


_OUTCOME_COUNTERS = {
    Verdict.COMPLETE: metrics.AGGREGATED,
    Verdict.DUPLICATE: metrics.DUPLICATES,
    Verdict.LATE: metrics.LATE,
    Verdict.AMENDED: metrics.AMENDED,
}


class Correlate(KeyedBroadcastProcessFunction):
    """Keyed input: raw records, keyed by transaction; broadcast input: the reference
    topic's records."""

    def __init__(self, config: JobConfig, clock: Callable[[], int] | None = None):
        self.config = config
        self.clock = clock or _now_ms  # wall clock in epoch ms; tests pass a fake one
        self.retention_ms = int(config.closed_retention_s * 1000)
        self.grace_ms = int(config.expiry_grace_s * 1000)
        self.progress_ms = int(config.progress_interval_s * 1000)  # 0: no progress records
        self.amend = config.late_policy == AMEND
        self.max_output_bytes = config.max_output_bytes
        self.option_rules = config.option_rules()
        self.rules = config.rules()  # the rules file is read where the job is built

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
        self._restored = False  # rules and counts from broadcast state, read once per start
        self.last_input_ms = self.clock()  # a (re)start counts as input: a backlog may follow
        self.subtask = subtask_of(runtime_context)
        self.held = self._held_saved = Held(0, 0, *self.subtask)
        self._open_metrics(runtime_context.get_metrics_group())

    def _open_metrics(self, group) -> None:
        """Counters per outcome and per type, histograms as counters (`job.metrics`), and two
        up-down counts of what this instance holds.

        No Python gauges: Flink reads gauges from its metrics thread, and calling into the
        embedded interpreter from that thread crashed a TaskManager (SIGSEGV in take_gil)
        when a job was cancelled. Counters live in Java and are safe to read anywhere.
        """
        types = self.config.types
        counters = {}
        for name in counter_names(types):
            groups, leaf = counter_path(name, types)
            scope = group
            for key, value in groups:
                scope = scope.add_group(key, value)
            counters[name] = scope.counter(leaf)
        self.tally = Tally(counters, METRICS_EVERY_MS, self.clock())
        self._per_type = {
            name: {t: name.format(t) for t in types} for name in (RECORDS_IN, MISSING, LATE_OF_TYPE)
        }
        self._arrival = {t: arrival_offset(t) for t in types}
        self._late_age = {t: late_age(t) for t in types}
        self._flush_timer_at = 0
        # Distributions keep their numbers in Java, so reading them is as safe as counters.
        self.completion_ms = group.distribution("completion_duration_ms")
        self.expired_parts = group.distribution("parts_per_expired")

    def process_element(self, row, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext):
        # (key, payload, topic, partition, offset, event time): job.sources.KEYED_RECORD
        now = self.clock()
        self.last_input_ms = now
        source = Source(row[2], row[3], row[4], row[5])
        outputs = self._on_record(row[0], row[1], source, now, ctx)
        self._bookkeeping(self._count_later, now, ctx)
        yield from self._emit(outputs, ctx)

    def _emit(self, outputs: list[Output], ctx):
        """The rows of `outputs`, each fitted to the sink's size limit (`job.sizes`), after
        the counts of what this instance holds are saved with the state they describe."""
        self._bookkeeping(self._save_held, ctx)
        for output in outputs:
            yield output_row(self.topics, fit(output, self.max_output_bytes, self.topic_of))

    def topic_of(self, record_type: str) -> str:
        return self.config.topic_of(record_type)

    def _bookkeeping(self, call, *args) -> None:
        """Metrics, timers and counts once the rules have decided: their outputs exist and
        state says so, so a failure here must not cost them (nor restart the job). It is
        counted as an internal error; a timer left behind finds its transaction closed."""
        try:
            call(*args)
        except Exception:  # noqa: BLE001 - the outputs go out whatever fails here
            self.tally.add(INTERNAL_ERRORS)

    def _on_record(self, key: str, payload: bytes | None, source: Source, now: int, ctx):
        try:
            self._restore(ctx)
            config = self.config
            result = keyed(
                parse(payload, source, config.type_of, config.max_record_bytes, config.kind_field),
                key,
            )
        except Exception as error:  # noqa: BLE001 - no record may restart the job
            return [self._internal_error(error, payload, source, None)]
        if isinstance(result, DeadLetter):
            self.tally.add(DEAD_LETTERS)
            return [Output(Outcome.DEAD_LETTER, None, result.to_json())]
        try:
            return self._on_event(result, now, ctx)
        except Exception as error:  # noqa: BLE001 - no record may restart the job
            # The rules change state only once their output exists, so the transaction is
            # as it was and this dead letter is the record's one place.
            return [self._internal_error(error, payload, source, result.transaction)]

    def _internal_error(self, error, payload, source, transaction) -> Output:
        self.tally.add(INTERNAL_ERRORS)
        letter = internal_error(error, payload, source, transaction)
        return Output(Outcome.DEAD_LETTER, kafka_key(transaction), letter.to_json())

    def _on_event(self, event: Event, now: int, ctx) -> list[Output]:
        self.tally.add(self._per_type[RECORDS_IN][event.type])
        self.state.load(now)
        step = aggregate.on_event(
            self.state, event, self.rules, now, self._enricher(ctx), amend=self.amend
        )
        counter = _OUTCOME_COUNTERS.get(step.verdict)
        if counter is not None:
            self.tally.add(counter)
        if step.verdict is Verdict.OPENED:
            self._start_timers(ctx, event.source.timestamp, now)
        elif step.verdict is Verdict.HELD:
            self._keep_open(ctx, event.source.timestamp, now)
        elif step.verdict is Verdict.COMPLETE:
            return [step.output, *self._closing(ctx, step.output)]
        elif step.verdict is Verdict.AMENDED:
            self._bookkeeping(self._count_emitted, step.output, True)
        elif step.verdict is Verdict.LATE:
            self._bookkeeping(self._count_late, event.type, now)
        return [] if step.output is None else [step.output]

    def _closing(self, ctx, output: Output) -> list[Output]:
        """The bookkeeping of a transaction that just closed (its output exists, its state
        says closed): metrics, timers, the progress tombstone. A failure here costs at most
        the tombstone (the final row replaces the open one in PostgreSQL anyway)."""
        closing: list[Output] = []
        # Timers and state first: a failing metric must not leave them behind.
        self._bookkeeping(lambda: closing.extend(self._after_close(ctx)))
        self._bookkeeping(self._count_emitted, output)
        return closing

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
            if record_type == RULES_KEY:
                self._update_rules(fields, state)
            elif record_type.startswith("@"):
                raise ValueError(
                    f"reference key {record_type!r}: keys starting with @ are the job's"
                )
            elif fields is None:
                state.remove(record_type)
            else:
                state.put(record_type, to_json(fields))
            self._reference = None
        except Exception:  # noqa: BLE001 - a bad reference record is counted and skipped
            self.tally.add(REFERENCE_ERRORS)
        yield from ()

    def _update_rules(self, document: dict | None, state) -> None:
        """Rules from the reference topic: applied (and kept in broadcast state, so they
        survive restarts) if their version is above the rules in force. A tombstone is
        ignored: rules only move forward."""
        if document is None:
            return
        text = to_json(document)
        rules = newer(self.rules, self.option_rules, text, self.config.types)
        if rules is not None:
            self.rules = rules
            state.put(RULES_KEY, text)

    def _restore(self, ctx) -> None:
        """After a (re)start, what broadcast state kept, which a function can read only
        while handling a record: the counts of what this instance holds, and rules that
        came from the reference topic."""
        if self._restored:
            return
        self._restored = True
        state = ctx.get_broadcast_state(REFERENCE)
        self.held = self._held_saved = Held.from_text(state.get(HELD_KEY), *self.subtask)
        self._count_held(self.held.open, self.held.closed)
        text = state.get(RULES_KEY)
        if text is not None:
            try:
                self.rules = newer(self.rules, self.option_rules, text, self.config.types) or (
                    self.rules
                )
            except RulesError:
                self.tally.add(REFERENCE_ERRORS)

    def _enricher(self, ctx):
        """Enrichment with the reference data as of now (read from state only when needed)."""

        def enricher(record: dict) -> dict:
            if self._reference is None:
                state = ctx.get_broadcast_state(REFERENCE)
                self._reference = {
                    t: json.loads(v) for t, v in state.items() if not t.startswith("@")
                }
            return enrich.enrich(record, self._reference, self.hook)

        return enricher

    def _count_emitted(self, output: Output, amended: bool = False) -> None:
        """The metrics of an emitted aggregate or partial, where its outcome is decided: which
        types it lacked, how long after the first part each type arrived, how long a
        complete one took from its first part to its emission. An amendment counts only its
        enrichment: its transaction was counted when it first closed."""
        record = output.record
        if "enrichment_error" in record:
            self.tally.add(ENRICH_ERRORS)
        if amended:
            return
        for record_type, offset in record["offsets_ms"].items():
            if record_type in self._arrival:
                self.tally.observe(self._arrival[record_type], offset)
        if record["status"] == Outcome.EXPIRED:
            self.expired_parts.update(record["part_count"])
            for record_type in record["missing"]:
                self.tally.add(self._per_type[MISSING][record_type])
        else:
            self.completion_ms.update(record["duration_ms"])
            self.tally.observe(
                COMPLETION, max(record["emitted_at"] - record["first_event_time"], 0)
            )

    def _count_late(self, record_type: str, now: int) -> None:
        self.tally.add(self._per_type[LATE_OF_TYPE][record_type])
        closed_at = self.state.closed_at()
        if closed_at is not None:
            self.tally.observe(self._late_age[record_type], max(now - closed_at, 0))

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext):
        now = self.clock()
        try:
            outputs = self._on_timer(timestamp, now, ctx)
        except Exception as error:  # noqa: BLE001 - no timer may restart the job
            outputs = self._give_up(ctx, error, now)
        # Every timer flushes the counts: they are exact soon after input stops.
        self._bookkeeping(self.tally.flush, now)
        yield from self._emit(outputs, ctx)

    def _on_timer(self, timestamp: int, now: int, ctx) -> list[Output]:
        self._restore(ctx)
        self.state.load(now)
        open_ = self.state.open
        closed = None if open_ is not None else self.state.closed_marker()
        decision = aggregate.on_timer(
            fired_at=timestamp,
            wall_clock=ctx.time_domain() == TimeDomain.PROCESSING_TIME,
            open_deadlines=None if open_ is None else (open_.event_at, open_.wall_at),
            closed_until=None if closed is None else closed[1],
            now_ms=now,
            last_input_ms=self.last_input_ms,
            grace_ms=self.grace_ms,
            progress_at=0 if open_ is None else open_.progress_at,
        )
        if decision.action is TimerAction.FORGET:
            self.state.forget(parts_too=self.amend)
            self._hold(closed=-1)
        elif decision.action is TimerAction.DEFER:
            ctx.timer_service().register_processing_time_timer(decision.again_at)
            self.state.save_open(open_.event_at, decision.again_at)
        elif decision.action is TimerAction.REPORT:
            return self._report(ctx, now)
        elif decision.action is TimerAction.EXPIRE:
            kind = self.state.kind()
            rule = self.rules.rule(kind)
            # Rules changed since its last part may find it complete: then it is.
            complete = rule.is_complete(self.state.held)
            output = aggregate.close(
                self.state,
                ctx.get_current_key(),
                rule.required,
                Outcome.COMPLETE if complete else Outcome.EXPIRED,
                now,
                self._enricher(ctx),
                expired_by=None if complete else self._expired_by(decision, ctx),
                kind=kind,
                rule_version=self.rules.version,
                keep_parts=self.amend and not complete,
            )
            self.tally.add(metrics.AGGREGATED if complete else EXPIRED)
            return [output, *self._closing(ctx, output)]
        return []

    @staticmethod
    def _expired_by(decision, ctx) -> str | None:
        """Which timer expired a partial; the watermark is asked (one call into Java) only
        of an event-time timer, whose partial may have expired at the end of input."""
        if decision.expired_by != aggregate.BY_EVENT_TIME:
            return decision.expired_by
        return aggregate.expired_by(decision.expired_by, ctx.timer_service().current_watermark())

    def _report(self, ctx, now: int) -> list[Output]:
        """The progress timer: the open transaction as it stands, on the progress topic. The
        next part arms the timer again, so a transaction is reported at most once per
        progress interval of event time, and only when it changed."""
        open_ = self.state.open
        self.state.save_open(open_.event_at, open_.wall_at, progress_at=0, reported=len(open_.held))
        if open_.span is None or len(open_.held) == open_.reported:
            return []  # opened by a version without the span, or nothing new to say
        kind = open_.kind
        record = aggregate.progress_record(
            ctx.get_current_key(), open_.held, self.rules.rule(kind), open_.span,
            open_.event_at, now, kind, self.rules.version,
        )  # fmt: skip
        self.tally.add(PROGRESS)
        return [Output(Outcome.OPEN, kafka_key(record["transaction"]), to_json(record))]

    def _give_up(self, ctx, error: Exception, now: int) -> list[Output]:
        """A timer that failed unexpectedly: each held part becomes an `internal_error` dead
        letter (its own coordinates and bytes, so it is accounted once), and the transaction
        closes with that status, so the timer does not fail again and again."""
        self.tally.add(INTERNAL_ERRORS)
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
        self.state.mark_closed(Closed(INTERNAL_ERROR))
        closing = self._after_close(ctx)
        return [
            *(Output(Outcome.DEAD_LETTER, kafka_key(key), letter.to_json()) for letter in letters),
            *closing,
        ]

    def _start_timers(self, ctx, first_event_time: int, now: int) -> None:
        timers = ctx.timer_service()
        rule = self.rules.rule(self.state.kind())
        at = first_event_time
        event_at, wall_at = aggregate.deadlines(rule, at, at, at, now, self.grace_ms)
        timers.register_event_time_timer(event_at)
        timers.register_processing_time_timer(wall_at)
        progress_at = self._arm_progress(timers, first_event_time)
        self.state.save_open(event_at, wall_at, progress_at=progress_at)
        self._hold(open_=1)

    def _arm_progress(self, timers, part_ms: int) -> int:
        """Registers the progress timer one interval of event time after a part (0: no
        progress records).

        Event time, not the wall clock: reading a backlog, a transaction whose parts are all
        in it completes before the watermark passes its first part + interval (the watermark
        trails the slowest partition), so only transactions really waiting are reported. A
        wall-clock timer reported many complete ones there, and cost 38% of the throughput
        (docs/benchmark.md)."""
        if not self.progress_ms:
            return 0
        at = part_ms + self.progress_ms
        timers.register_event_time_timer(at)
        return at

    def _keep_open(self, ctx, part_ms: int, now: int) -> None:
        """After a part that did not complete its transaction: the deadlines move if the
        rule says so (since-last: every part; a kind learnt from this part: its timeout),
        and the progress timer is armed again if none is pending."""
        before = self.state.open
        event_at, wall_at = before.event_at, before.wall_at
        kind = self.state.kind()
        rule = self.rules.rule(kind)
        timers = ctx.timer_service()
        if self.state.span is not None and (rule.mode == SINCE_LAST or kind != before.kind):
            first, last = self.state.span
            moved = aggregate.deadlines(rule, first, last, part_ms, now, self.grace_ms)
            if moved[0] != event_at:
                timers.delete_event_time_timer(event_at)
                timers.register_event_time_timer(moved[0])
            if moved[1] != wall_at:
                timers.delete_processing_time_timer(wall_at)
                timers.register_processing_time_timer(moved[1])
            event_at, wall_at = moved
        progress_at = before.progress_at or self._arm_progress(timers, part_ms)
        self.state.save_open(event_at, wall_at, progress_at=progress_at)

    def _after_close(self, ctx) -> list[Output]:
        """Cancels the open transaction's timers, schedules forgetting the closed marker,
        and deletes its record from the progress topic if it had one (a tombstone).

        Deleting a timer costs one call; a stale timer left to fire would cost a call into
        Python and a state read when it fires."""
        timers = ctx.timer_service()
        open_ = self.state.open
        outputs = []
        if open_ is not None:
            timers.delete_event_time_timer(open_.event_at)
            timers.delete_processing_time_timer(open_.wall_at)
            if open_.progress_at:
                timers.delete_event_time_timer(open_.progress_at)
            if open_.reported:
                key = kafka_key(ctx.get_current_key())
                outputs.append(Output(Outcome.OPEN, key, None))
            self.deadlines.clear()
            self.state.open = None
            self._hold(open_=-1)
        self._hold(closed=1)
        timers.register_processing_time_timer(self.state.closed_until)
        return outputs

    def _hold(self, open_: int = 0, closed: int = 0) -> None:
        """Counts a change of what this instance holds (saved by `_save_held`)."""
        before = self.held
        self.held = before.add(open_, closed)
        self._count_held(self.held.open - before.open, self.held.closed - before.closed)

    def _count_held(self, open_: int, closed: int) -> None:
        if open_:
            self.tally.add(IN_FLIGHT, open_)
        if closed:
            self.tally.add(CLOSED_MARKERS, closed)

    def _save_held(self, ctx) -> None:
        """Writes the counts to this instance's copy of the broadcast state when they
        changed: one call per record or timer that opened or closed something."""
        if self.held != self._held_saved:
            writable(ctx.get_broadcast_state(REFERENCE)).put(HELD_KEY, self.held.to_text())
            self._held_saved = self.held


def subtask_of(runtime_context) -> tuple[int, int]:
    """(index, parallelism) of the instance. PyFlink 2.2's thread mode asks the Java context
    for methods that Flink 2 moved to its `TaskInfo`, so there they are read from it."""
    try:
        return (
            runtime_context.get_index_of_this_subtask(),
            runtime_context.get_number_of_parallel_subtasks(),
        )
    except Exception:  # noqa: BLE001 - pemja's AttributeError for the moved methods
        info = runtime_context._runtime_context.getTaskInfo()
        return info.getIndexOfThisSubtask(), info.getNumberOfParallelSubtasks()


def writable(broadcast_state):
    """The broadcast state itself, also where Flink hands the keyed side a read-only view.

    Flink forbids writing broadcast state from the keyed side because every instance must
    keep the same copy of what the broadcast side sent. The counts under `HELD_KEY` are each
    instance's own, and only that instance reads them back after a restore. In thread mode
    the read-only view wraps the operator's broadcast state (`_state`, the Java
    `BroadcastState`); `tests/test_counts_restore.py` pins this use of PyFlink's internals on
    the real cluster.
    """
    return broadcast_state if hasattr(broadcast_state, "put") else broadcast_state._state


def _now_ms() -> int:
    return int(time.time() * 1000)
