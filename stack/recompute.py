"""`python -m stack recompute --from T1 --until T2 [--into NAME] [-- job options]`: what the
outcomes of a past time range would be with other rules or fixed code, beside the live ones.

The same correlator code runs as a bounded Flink job (a local minicluster, a JVM of its own,
so it takes no slot of the live cluster) over the type topics:

- it reads from record timestamp T1 minus the longest life a transaction can have under the
  rules (`margin_ms`), so a transaction that began just before T1 is whole, up to T2 plus
  that margin, so one that began just before T2 is whole too; then the input ends, event
  time jumps to the end of time, and every partial still open expires (by event time, as
  the end of input says, not by the wall clock);
- it writes to topics of its own, named after NAME (`NAME-Events-Aggregated`, ...), with a
  consumer group and transactional ids NAME, and the writer's code stores its outputs in
  the PostgreSQL schema NAME (the live tables' layout). The live job's topics, group and
  tables are never written;
- it ends by itself and prints a summary: records read, seconds, records/s, outcomes.

`python -m store diff --live --against NAME` then lists the transactions of [T1, T2) whose
outcome differs. docs/concepts.md, "Recompute", says what a bounded run decides and why.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from kafka import KafkaConsumer, TopicPartition

from job.clients import kafka_settings
from job.config import JobConfig, WriterConfig
from job.database import Database
from job.rules import SINCE_FIRST, RuleSet
from job.storage import Coordinates
from stack.flink import run_local
from stack.kafka import create_job_topics, existing_topics
from store import db

CHUNK = 1000  # records per database transaction, as the writer's chunks


def instant_ms(text: str) -> int:
    """An ISO 8601 instant (UTC unless it names a zone) as epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def margin_ms(rules: RuleSet, types: int, out_of_orderness_ms: int) -> int:
    """The longest a transaction can take from its first part to its last under these
    rules, plus the out-of-orderness: since-first, its timeout; since-last, its cap, or
    one timeout per type when it has none."""
    lives = []
    for rule in (rules.default, *rules.kinds.values()):
        if rule.mode == SINCE_FIRST:
            lives.append(rule.timeout_ms)
        else:
            lives.append(rule.max_duration_ms or rule.timeout_ms * types)
    return max(lives) + out_of_orderness_ms


@dataclass(frozen=True)
class Plan:
    """A recompute's range and the correlator configuration that runs it."""

    name: str
    from_ms: int
    until_ms: int
    job: JobConfig

    @property
    def writer(self) -> WriterConfig:
        return WriterConfig.for_job(self.job, database_schema=self.name)


def plan(live: JobConfig, from_ms: int, until_ms: int, name: str) -> Plan:
    """The live job's options, reading [from - margin, until + margin) of the type topics
    and the reference topic, writing only to topics, a group and ids named after `name`."""
    if until_ms <= from_ms:
        raise ValueError("--until must be after --from")
    # A closed transaction's late parts count for it (routed or amending) for the retention
    # after it closed: read that much further on both sides, so a late part just inside the
    # range finds its transaction, and one just after it is not missed.
    margin = margin_ms(live.rules(), len(live.types), int(live.out_of_orderness_s * 1000))
    margin += int(live.closed_retention_s * 1000)
    job = replace(
        live,
        **live.writing_as(name),
        job_name=f"recompute-{name}",
        progress_interval_s=0.0,
        read_from_ms=max(from_ms - margin, 0),
        read_until_ms=until_ms + margin,
        bounded=False,
    )
    return Plan(db.schema_name(name), from_ms, until_ms, job)


def records_in_range(job: JobConfig) -> int:
    """How many records of the type topics have a timestamp in the job's read range."""
    consumer = KafkaConsumer(**kafka_settings(job.bootstrap_servers, job.kafka_properties))
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in job.input_topics
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        ends = consumer.end_offsets(partitions)

        def at(ms: int) -> dict:
            found = consumer.offsets_for_times({tp: ms for tp in partitions})
            return {tp: (found[tp].offset if found[tp] else ends[tp]) for tp in partitions}

        start, stop = at(job.read_from_ms), at(job.read_until_ms)
        return sum(stop[tp] - start[tp] for tp in partitions)
    finally:
        consumer.close()


def store_outputs(plan_: Plan, database_url: str, user: str, password: str | None) -> int:
    """The recompute's committed outputs (aggregated and expired topics), stored in its
    schema by the writer's own code (`job.database`), chunk by chunk; returns how many
    records were read."""
    writer = replace(plan_.writer, database_url=database_url)
    database = Database(database_url, user, password, writer.group_id, writer.database_schema)
    consumer = KafkaConsumer(
        isolation_level="read_committed",
        enable_auto_commit=False,
        **kafka_settings(writer.bootstrap_servers, writer.kafka_properties),
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in (writer.aggregated_topic, writer.expired_topic)
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        read = 0
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            batch = [
                (Coordinates(r.topic, r.partition, r.offset), r.value)
                for records in consumer.poll(timeout_ms=500, max_records=CHUNK).values()
                for r in records
            ]
            if batch:
                database.write(batch)
                read += len(batch)
        return read
    finally:
        consumer.close()
        database.close()


def claim(plan_: Plan, database_url: str) -> None:
    """Creates the recompute's own topics and schema; refuses a name already used (its
    outputs would mix with the earlier run's). Only the recompute's topics are created:
    never an input or reference topic of the live job."""
    taken = sorted(set(plan_.job.sink_topics) & existing_topics(plan_.job))
    if taken or db.schema_exists(database_url, plan_.name):
        raise ValueError(
            f"{plan_.name!r} is taken ({', '.join(taken) or 'its schema exists'}): choose "
            f"another --into, or drop it (DROP SCHEMA {plan_.name} CASCADE, delete its topics)"
        )
    create_job_topics(plan_.job, only=plan_.job.sink_topics)
    db.migrate(database_url, plan_.name)


def run(plan_: Plan, database_url: str, user: str, password: str | None) -> dict:
    """Runs the recompute to its end; returns its summary (also kept in its schema)."""
    job = plan_.job
    claim(plan_, database_url)
    records = records_in_range(job)
    started = time.monotonic()
    result = run_local(job.to_args(), timeout=24 * 3600)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(
            f"the recompute job failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    outputs = store_outputs(plan_, database_url, user, password)
    outcomes = db.outcomes(database_url, plan_.name, plan_.from_ms, plan_.until_ms)
    summary = {
        "name": plan_.name,
        "from": _iso(plan_.from_ms),
        "until": _iso(plan_.until_ms),
        "read_from": _iso(job.read_from_ms),
        "read_until": _iso(job.read_until_ms),
        "records_read": records,
        "job_seconds": round(seconds, 1),
        "records_per_s": round(records / seconds) if seconds else None,
        "outputs_stored": outputs,
        "transactions_in_range": len(outcomes),
        "complete": sum(1 for o in outcomes.values() if o["status"] == "complete"),
        "expired": sum(1 for o in outcomes.values() if o["status"] == "expired"),
    }
    db.record_recompute(database_url, plan_.name, plan_.from_ms, plan_.until_ms, summary)
    return summary


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def default_name(now: float | None = None) -> str:
    return "recompute_" + datetime.fromtimestamp(now or time.time(), UTC).strftime("%Y%m%d_%H%M%S")


def password_for(env: str) -> str | None:
    return os.environ.get(env) or os.environ.get("PGPASSWORD")
