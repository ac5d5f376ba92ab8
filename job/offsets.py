"""Where the writer is: the last offset of each output partition stored in PostgreSQL.

The writer stores, with each chunk of rows, the offset each partition reached
(`writer_offsets`, sql/migrations/004). Two things read it against Kafka:
- a fresh start of the writer rewinds its consumer group to it (`rewind_group`), so records
  that were only in the buffer of a cancelled writer are read again;
- `stack status` counts the records of the output topics not in PostgreSQL yet (`behind`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError

from job.clients import kafka_settings
from job.config import WriterConfig
from job.database import CONNECTION, libpq_url, user_for

Partition = tuple[str, int]


def stored_offsets(url: str, user: str, password: str | None, group: str) -> dict[Partition, int]:
    """The last offset per (topic, partition) that the writer of `group` stored."""
    settings = {k: v for k, v in CONNECTION.items() if k != "application_name"}
    login = {"user": user_for(url, user), "password": password}
    with psycopg.connect(libpq_url(url), **login, **settings) as conn:
        rows = conn.execute(
            'SELECT topic, "partition", "offset" FROM writer_offsets WHERE group_id = %s',
            (group,),
        ).fetchall()
    return {(topic, partition): offset for topic, partition, offset in rows}


def writer_topics(config: WriterConfig) -> list[str]:
    return [config.aggregated_topic, config.expired_topic, config.progress_topic]


def partitions(consumer: KafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]


def rewind_group(config: WriterConfig, password: str | None) -> dict[Partition, int]:
    """Moves the writer group's committed offsets back to just after what PostgreSQL holds
    (to the beginning for a partition it holds nothing of), where they are ahead of it;
    returns the partitions moved and their new offsets."""
    stored = stored_offsets(config.database_url, config.database_user, password, config.group_id)
    settings = kafka_settings(config.bootstrap_servers, config.kafka_properties)
    admin = KafkaAdminClient(**settings)
    consumer = KafkaConsumer(**settings)
    try:
        group = config.group_id
        committed = _retrying(lambda: admin.list_group_offsets(group)).get(group, {})
        targets = {}
        for tp in partitions(consumer, writer_topics(config)):
            done = committed.get(tp)
            if done is None or done.offset < 0:
                continue  # nothing committed: the source starts from the beginning anyway
            after = stored.get((tp.topic, tp.partition))
            if after is None:
                targets[tp] = OffsetSpec.EARLIEST
            elif done.offset > after + 1:
                targets[tp] = after + 1
        if not targets:
            return {}
        result = _retrying(lambda: _reset(admin, group, targets))
        return {(tp.topic, tp.partition): r["offset"] for tp, r in result.items()}
    finally:
        consumer.close()
        admin.close()


def _reset(admin: KafkaAdminClient, group: str, targets: dict) -> dict:
    """The group's offsets reset; raises the first partition's error (kafka-python answers
    errors per partition rather than raising)."""
    result = admin.reset_group_offsets(group, targets)
    for tp, answer in result.items():
        error = answer.get("error")
        if error is not None and getattr(error, "errno", 0):
            raise error(f"resetting {tp.topic}/{tp.partition} of group {group}")
    return result


def _retrying(call, seconds: float = 30):
    """`call()`, again while Kafka answers with a retriable error (a group coordinator not
    available yet, the first time a broker sees a group)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except KafkaError as error:
            if not getattr(error, "retriable", False) or time.monotonic() > deadline:
                raise
            time.sleep(1)


@dataclass(frozen=True)
class Backlog:
    """A partition's committed records after the last one the writer stored."""

    records: int  # an upper bound (its offsets) when the gap is over the reading cap
    oldest_ms: int | None  # the Kafka timestamp of the first of them; None: none waits


def backlog(
    bootstrap: str,
    topics: list[str],
    stored: dict[Partition, int],
    cap: int = 10_000,
    kafka_properties: str = "",
    **client,
) -> dict[Partition, Backlog]:
    """What the writer has yet to store, per partition of `topics`: the committed records
    after the last stored offset (all of a partition with none stored), and how old the
    first of them is. Transaction markers take offsets but are no records, so records are
    counted by reading, up to `cap` offsets per partition."""
    consumer = KafkaConsumer(
        **kafka_settings(bootstrap, kafka_properties, **client),
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    try:
        found = {}
        tps = partitions(consumer, topics)
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        for tp in tps:
            first = max(stored.get((tp.topic, tp.partition), -1) + 1, starts[tp])
            if ends[tp] > first:
                found[(tp.topic, tp.partition)] = _read_gap(consumer, tp, first, ends[tp], cap)
        return found
    finally:
        consumer.close()


def _read_gap(consumer, tp: TopicPartition, first: int, end: int, cap: int) -> Backlog:
    consumer.assign([tp])
    consumer.seek(tp, first)
    count, oldest = 0, None
    deadline = time.monotonic() + 5
    # Markers and aborted records advance the position without being returned.
    while consumer.position(tp) < min(end, first + cap) and time.monotonic() < deadline:
        for record in consumer.poll(timeout_ms=500).get(tp, []):
            if record.offset < end:
                count += 1
                oldest = record.timestamp if oldest is None else oldest
    if end - first > cap:
        count = end - first
    return Backlog(count, oldest)


def behind(bootstrap: str, topics: list[str], stored: dict[Partition, int], **options) -> int:
    """How many records the writer has yet to store, over all partitions of `topics`."""
    return sum(b.records for b in backlog(bootstrap, topics, stored, **options).values())
