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

import psycopg
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError

from job.clients import kafka_settings
from job.config import WriterConfig
from job.database import CONNECTION, libpq_url

Partition = tuple[str, int]


def stored_offsets(url: str, user: str, password: str | None, group: str) -> dict[Partition, int]:
    """The last offset per (topic, partition) that the writer of `group` stored."""
    settings = {k: v for k, v in CONNECTION.items() if k != "application_name"}
    with psycopg.connect(libpq_url(url), user=user, password=password, **settings) as conn:
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
        result = admin.reset_group_offsets(config.group_id, targets)
        return {(tp.topic, tp.partition): r["offset"] for tp, r in result.items()}
    finally:
        consumer.close()
        admin.close()


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


def behind(
    bootstrap: str,
    topics: list[str],
    stored: dict[Partition, int],
    cap: int = 10_000,
    kafka_properties: str = "",
) -> int:
    """Committed records on `topics` after the last stored offset of their partition (all
    of a partition with none stored): what the writer has yet to store. Transaction markers
    take offsets but are no records, so they are counted by reading: up to `cap` offsets
    per partition; a longer gap counts as its offsets, an upper bound."""
    consumer = KafkaConsumer(
        **kafka_settings(bootstrap, kafka_properties),
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    try:
        total = 0
        tps = partitions(consumer, topics)
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        for tp in tps:
            first = max(stored.get((tp.topic, tp.partition), -1) + 1, starts[tp])
            if ends[tp] - first > cap:
                total += ends[tp] - first
            elif ends[tp] > first:
                total += _records_between(consumer, tp, first, ends[tp])
        return total
    finally:
        consumer.close()


def _records_between(consumer: KafkaConsumer, tp: TopicPartition, first: int, end: int) -> int:
    consumer.assign([tp])
    consumer.seek(tp, first)
    count = 0
    deadline = time.monotonic() + 5
    # Markers and aborted records advance the position without being returned.
    while consumer.position(tp) < end and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=500).get(tp, [])
        count += sum(1 for r in batch if r.offset < end)
    return count
