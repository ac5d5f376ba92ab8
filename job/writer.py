"""Entry point of the writer job: `flink run -py job/writer.py [options]`.

Committed output of the correlator -> PostgreSQL, one row per transaction, and every record
the table cannot take diverted with its reason (`job.storage`). The job must never stop and
never take its TaskManager down, whatever it reads and however long the database is away:

- Records are read in Java (`sql/writer.sql`), keyed by topic and partition, and buffered in
  keyed state (`pending`), so a checkpoint holds every record that is read but not stored,
  and the Kafka offsets it commits never run ahead of what PostgreSQL or the buffer holds.
- A processing-time timer per partition writes the buffer in chunks, one database
  transaction each (`job.database`), with the offsets each chunk reached.
- While the database is away, a write changes nothing and the timer tries again with a
  backoff (`job.storage.backoff_ms`): no exception leaves the function, no task fails, no
  checkpoint waits on the database, and a cancel is never held up for long.
- A row PostgreSQL refuses is diverted, never retried forever.

It replaces Flink's JDBC sink, whose close() throws when its last flush fails: Flink calls
close() again while handling the task's failure, and an exception there is fatal to the
whole TaskManager (docs/persistence.md). Upserts by precedence (migration 003) make any
replay harmless, so a record stored twice is stored once.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402
from kafka.errors import KafkaError  # noqa: E402
from pyflink.common import Types  # noqa: E402
from pyflink.datastream import (  # noqa: E402
    KeyedProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors import Sink  # noqa: E402
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor  # noqa: E402
from pyflink.java_gateway import get_gateway  # noqa: E402
from pyflink.table import EnvironmentSettings, StreamTableEnvironment  # noqa: E402

from job.config import WriterConfig, parse_args, redacted  # noqa: E402
from job.database import Database, Unavailable  # noqa: E402
from job.sources import keyed_rows  # noqa: E402
from job.sql import render, render_options, with_client_properties  # noqa: E402
from job.storage import Coordinates, backoff_ms  # noqa: E402

log = logging.getLogger(__name__)

# What the writer's function receives per record, in order (sql/writer.sql).
EMITTED_RECORD = Types.ROW_NAMED(
    ["topic", "partition", "offset", "v"],
    [Types.STRING(), Types.INT(), Types.LONG(), Types.PRIMITIVE_ARRAY(Types.BYTE())],
)

# State layout: a partition's records not yet stored, by sequence number, and the range of
# sequence numbers in use ([head, tail)).
PENDING = MapStateDescriptor("pending", Types.LONG(), Types.PICKLED_BYTE_ARRAY())
SPAN = ValueStateDescriptor("span", Types.PICKLED_BYTE_ARRAY())

FLUSH_EVERY_MS = 500  # how long a record may wait in the buffer before it is written
CHUNK_RECORDS = 1_000  # records per database transaction
FLUSH_BUDGET_S = 1.0  # a timer writes chunks this long, then lets checkpoints through

# The writer's counters (web UI, REST, Prometheus under `store_transactions`).
ROWS_STORED = "rows_stored"
RECORDS_DIVERTED = "records_diverted"
RECORDS_SKIPPED = "records_skipped"  # progress tombstones
WRITE_FAILURES = "write_failures"  # writes the database could not take (it is retried)
COUNTERS = (ROWS_STORED, RECORDS_DIVERTED, RECORDS_SKIPPED, WRITE_FAILURES)


class StoreRecords(KeyedProcessFunction):
    """Keyed by topic and partition: buffers each record in state, writes the buffer from
    a timer. Emits nothing."""

    def __init__(self, config: WriterConfig, password: str | None):
        self.config = config
        self.password = password  # read where the job was submitted, if set there

    def open(self, runtime_context: RuntimeContext):
        self.pending = runtime_context.get_map_state(PENDING)
        self.span_state = runtime_context.get_state(SPAN)
        self.spans: dict[str, tuple[int, int]] = {}  # a cache of `span` per key
        self.armed: dict[str, int] = {}  # when each key's timer fires
        self.failures = 0  # failed writes in a row
        password = os.environ.get(self.config.database_password_env) or self.password
        config = self.config
        self.database = Database(
            config.database_url, config.database_user, password, config.group_id,
            config.database_schema,
        )  # fmt: skip
        group = runtime_context.get_metrics_group()
        self.counters = {name: group.counter(name) for name in COUNTERS}

    def close(self):
        self.database.close()

    def process_element(self, row, ctx: KeyedProcessFunction.Context):
        # (topic, partition, offset, value): EMITTED_RECORD; keyed by "topic/partition"
        key = f"{row[0]}/{row[1]}"
        head, tail = self._span(key)
        self.pending.put(tail, (row[0], row[1], row[2], row[3]))
        self._set_span(key, head, tail + 1)
        if key not in self.armed:
            self._arm(ctx, key, int(time.time() * 1000) + FLUSH_EVERY_MS)
        yield from ()

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        key = ctx.get_current_key()
        if self.armed.get(key) == timestamp:
            del self.armed[key]
        self._flush(key, ctx)
        yield from ()

    def _flush(self, key: str, ctx) -> None:
        """Writes the key's buffer, chunk by chunk, for at most FLUSH_BUDGET_S; arms the
        timer again for what is left, or after a backoff if the database is away."""
        head, tail = self._span(key)
        budget_ends = time.monotonic() + FLUSH_BUDGET_S
        while head < tail and time.monotonic() < budget_ends:
            sequence = range(head, min(tail, head + CHUNK_RECORDS))
            chunk = [self.pending.get(s) for s in sequence]
            records = [(Coordinates(t, p, o), None if v is None else bytes(v))
                       for t, p, o, v in chunk]  # fmt: skip
            try:
                written = self.database.write(records)
            except Exception as error:  # noqa: BLE001 - Unavailable, or anything unforeseen
                self._failed(key, ctx, error)
                return
            for s in sequence:
                self.pending.remove(s)
            head = sequence.stop
            self._set_span(key, head, tail)
            self._succeeded(written)
        if head < tail and key not in self.armed:
            self._arm(ctx, key, int(time.time() * 1000) + 1)

    def _failed(self, key: str, ctx, error: Exception) -> None:
        self.failures += 1
        self.counters[WRITE_FAILURES].inc()
        if self.failures == 1 or not isinstance(error, Unavailable):
            log.warning("writer: cannot write to PostgreSQL, will retry: %s", error)
        self.armed.pop(key, None)
        self._arm(ctx, key, int(time.time() * 1000) + backoff_ms(self.failures))

    def _succeeded(self, written) -> None:
        if self.failures:
            log.warning("writer: PostgreSQL takes writes again after %d failures", self.failures)
        self.failures = 0
        self.counters[ROWS_STORED].inc(written.rows)
        self.counters[RECORDS_DIVERTED].inc(written.diverted)
        self.counters[RECORDS_SKIPPED].inc(written.skipped)

    def _arm(self, ctx, key: str, at: int) -> None:
        ctx.timer_service().register_processing_time_timer(at)
        self.armed[key] = at

    def _span(self, key: str) -> tuple[int, int]:
        if key not in self.spans:
            stored = self.span_state.value()
            self.spans[key] = (0, 0) if stored is None else tuple(stored)
        return self.spans[key]

    def _set_span(self, key: str, head: int, tail: int) -> None:
        self.spans[key] = (head, tail)
        self.span_state.update((head, tail))


def source_options(config: WriterConfig) -> dict[str, str]:
    options = {
        "connector": "kafka",
        "topic": f"{config.aggregated_topic};{config.expired_topic};{config.progress_topic}",
        "properties.bootstrap.servers": config.bootstrap_servers,
        "properties.group.id": config.group_id,
        "properties.isolation.level": "read_committed",
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": "earliest-offset" if config.from_beginning else "group-offsets",
        "value.format": "raw",
    }
    return with_client_properties(options, config.kafka_client_properties())


def build(config: WriterConfig, password: str | None) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment.get_execution_environment()
    if config.parallelism:
        env.set_parallelism(config.parallelism)
    t_env = StreamTableEnvironment.create(env, EnvironmentSettings.in_streaming_mode())
    settings = t_env.get_config()
    settings.set("pipeline.name", config.job_name)
    if config.jars:
        settings.set("pipeline.jars", ";".join(f"file://{j}" for j in config.jars))
    query, ddl = _statements(config)
    t_env.execute_sql(ddl)
    (
        keyed_rows(t_env, query, EMITTED_RECORD)
        .process(StoreRecords(config, password))
        .name("store transactions")
        .uid("store-transactions")
        .sink_to(_discarding_sink())
        .name("no output")
        .uid("no-output")
    )
    return env


def _statements(config: WriterConfig) -> tuple[str, str]:
    """(the keyed query, the source's DDL) of sql/writer.sql."""
    text = render("writer.sql", source_options=render_options(source_options(config)))
    # Statements end with ";" at the end of a line; ";" inside values (topic lists) stays.
    ddl, query = (s.strip() for s in re.split(r";\s*$", text, flags=re.MULTILINE) if _has_sql(s))
    return query, ddl


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


def _discarding_sink() -> Sink:
    """The function emits nothing; a job needs a sink all the same."""
    sinks = get_gateway().jvm.org.apache.flink.streaming.api.functions.sink.v2
    return Sink(sinks.DiscardingSink())


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv, WriterConfig)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.info("txn-correlator writer configuration: %s", config.describe())
    password = os.environ.get(config.database_password_env)
    if not config.from_beginning:
        try:
            rewind(config, password)
        except (psycopg.Error, KafkaError) as error:
            where = f"{redacted(config.database_url)}, {config.bootstrap_servers}"
            message = " ".join(str(error).split())
            raise SystemExit(f"writer: cannot find where it stopped ({where}): {message}") from None
    build(config, password).execute(config.job_name)


def rewind(config: WriterConfig, password: str | None) -> None:
    """Before a fresh start: the group's committed offsets back to what PostgreSQL holds.

    The Kafka source commits its offsets at each checkpoint, when a record may still be in
    the writer's buffer (keyed state) rather than in PostgreSQL. A job restored from a
    checkpoint or savepoint gets that buffer back and ignores these offsets; a job started
    afresh would skip the buffered records. So a fresh start begins after the last record
    each partition has in PostgreSQL (`writer_offsets`), and replays the rest, which the
    upserts store once.
    """
    from job.offsets import rewind_group

    rewound = rewind_group(config, password)
    for (topic, partition), offset in sorted(rewound.items()):
        logging.info("writer: %s/%d starts at offset %d, after PostgreSQL's last", topic,
                     partition, offset)  # fmt: skip


if __name__ == "__main__":
    main()
