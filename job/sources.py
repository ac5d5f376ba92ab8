"""The input: one Kafka source over the type topics, as a DataStream of raw records.

The source is declared in Flink SQL (`sql/input_records.sql`) because the SQL connector
exposes what the Python DataStream connector hides: each record's topic, partition, offset
and timestamp. Watermarks are generated per partition inside the Java source, so no Python
timestamp assigner sits in the chain.
"""

from __future__ import annotations

from pyflink.common import Types
from pyflink.datastream import DataStream, KeyedStream
from pyflink.java_gateway import get_gateway
from pyflink.table import StreamTableEnvironment, TableEnvironment

from job.config import JobConfig
from job.sql import render, render_options, sql_text, with_client_properties

# What the correlator receives per record, in order (sql/keyed_records.sql).
KEYED_RECORD = Types.ROW_NAMED(
    ["k", "payload", "topic", "partition", "offset", "event_ms"],
    [Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.STRING(), Types.INT(),
     Types.LONG(), Types.LONG()],
)  # fmt: skip


REFERENCE_IDLE_TIMEOUT = "1 s"

# The input source's fetches, as Kafka property names, beside Kafka's defaults for the same
# names (the benchmark's variants run those again; tests pin that ours are used).
# `--kafka-properties` can still set each of them.
#
# max.partition.fetch.bytes, 64 KiB (Kafka: 1 MiB, several thousand records here): the
# correlator closes a transaction only once every type topic has delivered its part, and the
# Kafka consumer hands out a partition's whole fetch before the next. With 1 MiB a backlog is
# read topic by topic, nearly every transaction stays open until the last topic's turn, and
# the first outputs wait for a whole round over the 15 partitions; 64 KiB keeps the topics
# within a few hundred records of each other. On 50,000 pre-loaded transactions the first
# output came at 25 s instead of 41 s (medians of 3 runs; the whole run was within the
# spread, docs/benchmark.md 2026-12-03).
#
# fetch.min.bytes 64 KiB, fetch.max.wait.ms 20 (Kafka: 1 byte, 500 ms): how long the broker
# may hold a fetch to fill it. With 1 byte a trickle of records comes back one fetch per few
# records, and each fetch wakes the fetcher and the task thread. At-least-once at 50% load
# (1,750-1,975 records/s) this took the p99 latency from 1,354 to 349 ms and the
# TaskManager's CPU from 0.48 to 0.37 s per 1,000 records (medians of 3 runs,
# docs/benchmark.md 2026-12-04). A backlog fills 64 KiB at once; only a quiet input waits.
SOURCE_FETCH = {
    "max.partition.fetch.bytes": 64 * 1024,
    "fetch.min.bytes": 64 * 1024,
    "fetch.max.wait.ms": 20,
}
KAFKA_DEFAULT_FETCH = {
    "max.partition.fetch.bytes": 1024 * 1024,
    "fetch.min.bytes": 1,
    "fetch.max.wait.ms": 500,
}

# Event times the job accepts from a value's field: 1970-01-01 up to 9999-12-31, epoch ms.
MAX_EVENT_TIME_MS = 253_402_300_799_999


def event_time_expression(config: JobConfig) -> str:
    """The SQL for a record's event time: its Kafka timestamp, or with `--timestamp-field`
    that field of the value when it holds epoch milliseconds in range (a number or a numeric
    string; a fraction is truncated); anything else there (text, a huge or negative number,
    an object, no JSON at all) falls back to the Kafka timestamp instead of failing the
    source."""
    if not config.timestamp_field:
        return "`kafka_time`"
    field = config.timestamp_field.replace("'", "''")
    millis = f"TRY_CAST(JSON_VALUE(CAST(`payload` AS STRING), '$.{field}') AS BIGINT)"
    in_range = f"CASE WHEN {millis} BETWEEN 0 AND {MAX_EVENT_TIME_MS} THEN {millis} END"
    return f"COALESCE(TO_TIMESTAMP_LTZ({in_range}, 3), `kafka_time`)"


def source_options(config: JobConfig) -> dict[str, str]:
    options = {
        "connector": "kafka",
        "topic": ";".join(config.input_topics),
        "properties.bootstrap.servers": config.bootstrap_servers,
        "properties.group.id": config.group_id,
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": "group-offsets",
        "value.format": "raw",
    }
    if config.bounded:
        options["scan.bounded.mode"] = "latest-offset"
        options["scan.startup.mode"] = "earliest-offset"
    if config.read_from_ms:
        options["scan.startup.mode"] = "timestamp"
        options["scan.startup.timestamp-millis"] = str(config.read_from_ms)
    if config.read_until_ms:
        options["scan.bounded.mode"] = "timestamp"
        options["scan.bounded.timestamp-millis"] = str(config.read_until_ms)
    return with_client_properties(options, SOURCE_FETCH, config.kafka_client_properties())


def declare_input_records(t_env: TableEnvironment, config: JobConfig) -> None:
    """Registers the `input_records` table (also used by the benchmark's SQL copy job)."""
    ddl = render(
        "input_records.sql",
        event_time=event_time_expression(config),
        out_of_orderness=f"{config.out_of_orderness_s:.3f}",
        options=render_options(source_options(config)),
    )
    t_env.execute_sql(ddl)


def keyed_input_records(t_env: StreamTableEnvironment, config: JobConfig) -> KeyedStream:
    """The input records keyed by transaction id, with no Python before the shuffle.

    `DataStream.key_by` always adds a Python operator (its key selector) in front of the
    shuffle, which in thread mode shares the TaskManager's one GIL with the correlator. Here
    the key is a column computed in SQL, and the stream is keyed in Java exactly as
    `key_by` keys it after its selector: rows of (key, record) partitioned by field 0 with
    PyFlink's own `KeyByKeySelector`, so the keyed Python function receives the record.
    `tests/test_keyed_source.py` pins this use of PyFlink's internals.
    """
    declare_input_records(t_env, config)
    return keyed_rows(t_env, sql_text("keyed_records.sql"), KEYED_RECORD)


def keyed_rows(t_env: StreamTableEnvironment, query: str, record_type) -> KeyedStream:
    """A query's rows of (`k` STRING, `record` ROW) as a stream of records keyed by `k`,
    keyed in Java: the Python function after it receives the record, as after `key_by`."""
    table = t_env.sql_query(query)
    # A RowTypeInfo, as the keyed Python operator requires of its (key, record) input.
    rows = t_env.to_append_stream(
        table, Types.ROW_NAMED(["k", "record"], [Types.STRING(), record_type])
    )
    key_type = Types.ROW([Types.STRING()]).get_java_type_info()
    j_keyed = rows._j_data_stream.keyBy(get_gateway().jvm.KeyByKeySelector(), key_type)
    return KeyedStream(j_keyed, record_type, rows)


def reference_options(config: JobConfig) -> dict[str, str]:
    options = {
        "connector": "kafka",
        "topic": config.reference_topic,
        "properties.bootstrap.servers": config.bootstrap_servers,
        "properties.group.id": f"{config.group_id}-reference",
        # The whole compacted topic on every fresh start; restores use checkpointed offsets.
        "scan.startup.mode": "earliest-offset",
        "key.format": "raw",
        "key.fields": "k",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        # Mostly silent: idle after a second, so it never holds back the event time of the
        # transactions (with the job's idleness, 30 s by default, every partial of a job's
        # first 30 s expired by the wall-clock fallback instead).
        "scan.watermark.idle-timeout": REFERENCE_IDLE_TIMEOUT,
    }
    if config.bounded or config.read_until_ms:  # a job that ends reads the rules it has
        options["scan.bounded.mode"] = "latest-offset"
    return with_client_properties(options, config.kafka_client_properties())


def reference_records(t_env: StreamTableEnvironment, config: JobConfig) -> DataStream:
    """(key bytes, value bytes) of the reference topic, in order per partition."""
    t_env.execute_sql(
        render("reference_services.sql", options=render_options(reference_options(config)))
    )
    return t_env.to_data_stream(t_env.sql_query("SELECT k, v, kafka_time FROM reference_services"))
