"""`--timestamp-field`: the SQL that picks each record's event time, run by Flink itself.

A batch query over literal rows evaluates the source's event-time expression exactly as the
Kafka source would: an epoch-millis number in the field (or a numeric string; a fraction is
truncated) is the event time; anything else (text, out-of-range numbers, objects, invalid JSON
or UTF-8, no field, no value) falls back to the Kafka timestamp and never fails the query.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from job.config import JobConfig
from job.sources import MAX_EVENT_TIME_MS, event_time_expression

pytestmark = pytest.mark.flink

KAFKA_MS = 1_764_000_000_000
CASES = [
    (b'{"transaction": "t", "ts": 1764000123456}', 1_764_000_123_456),
    (b'{"transaction": "t", "ts": "1764000123456"}', 1_764_000_123_456),  # a numeric string
    (b'{"transaction": "t", "ts": 0}', 0),
    (b'{"transaction": "t", "ts": %d}' % MAX_EVENT_TIME_MS, MAX_EVENT_TIME_MS),
    (b'{"transaction": "t", "ts": %d}' % (MAX_EVENT_TIME_MS + 1), KAFKA_MS),
    (b'{"transaction": "t", "ts": "not a number"}', KAFKA_MS),
    (b'{"transaction": "t", "ts": 1764000123456.7}', 1_764_000_123_456),  # truncated
    (b'{"transaction": "t", "ts": 1.5e300}', KAFKA_MS),
    (b'{"transaction": "t", "ts": 9223372036854775807}', KAFKA_MS),
    (b'{"transaction": "t", "ts": 99999999999999999999999}', KAFKA_MS),
    (b'{"transaction": "t", "ts": -9223372036854775808}', KAFKA_MS),
    (b'{"transaction": "t", "ts": {"nested": 1}}', KAFKA_MS),
    (b'{"transaction": "t", "ts": null}', KAFKA_MS),
    (b'{"transaction": "t"}', KAFKA_MS),
    (b'{"ts": ' + b"[" * 2000 + b"]" * 2000 + b"}", KAFKA_MS),
    (b"\xff\xfe not utf-8", KAFKA_MS),
    (b"not json", KAFKA_MS),
    (None, KAFKA_MS),
]


def _event_times(config: JobConfig) -> list[int]:
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("table.local-time-zone", "UTC")
    rows = ", ".join(
        f"({'CAST(NULL AS BYTES)' if raw is None else 'X' + repr(raw.hex())}, {index})"
        for index, (raw, _) in enumerate(CASES)
    )
    query = (
        f"SELECT i, CAST({event_time_expression(config)} AS STRING) FROM (SELECT payload, i, "
        f"TO_TIMESTAMP_LTZ({KAFKA_MS}, 3) AS kafka_time FROM (VALUES {rows}) AS t(payload, i))"
    )
    with t_env.execute_sql(query).collect() as results:
        by_index = {row[0]: row[1] for row in results}
    return [_epoch_ms(by_index[i]) for i in range(len(CASES))]


def _epoch_ms(text: str) -> int:
    """'2025-11-24 16:00:00.123' (UTC, as the session's time zone prints it) -> epoch ms."""
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return round(moment.timestamp() * 1000)


def test_timestamp_field_is_used_when_it_holds_epoch_millis_and_falls_back_otherwise():
    got = _event_times(JobConfig(timestamp_field="ts"))
    assert got == [expected for _, expected in CASES]


def test_without_timestamp_field_the_kafka_timestamp_is_the_event_time():
    assert event_time_expression(JobConfig()) == "`kafka_time`"
