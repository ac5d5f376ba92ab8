"""`python -m generator.outputs`: reads the job's output topics as a downstream user would.

Uses `isolation.level=read_committed`, so it sees exactly what the exactly-once sink has
committed: nothing from aborted or still-open Kafka transactions.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from job.clients import kafka_settings
from job.config import JobConfig


@dataclass(frozen=True)
class OutputRecord:
    topic: str
    key: str | None  # decoded JSON; raw bytes with decode=False
    value: dict  # decoded JSON; raw bytes with decode=False
    partition: int
    offset: int
    timestamp: int = 0  # the Kafka record's, epoch ms


def read_topics(
    bootstrap_servers: str,
    topics: list[str],
    until: callable = None,
    timeout_s: float = 30.0,
    idle_s: float = 2.0,
    decode: bool = True,
    kafka_properties: str = "",
) -> list[OutputRecord]:
    """Reads the topics from the beginning.

    Stops when `until(records)` is true, or, without `until`, once the committed end of every
    partition is reached and nothing new arrived for `idle_s`; gives up after `timeout_s`.
    """
    consumer = KafkaConsumer(
        **kafka_settings(bootstrap_servers, kafka_properties),
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        partitions = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[OutputRecord] = []
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for tp, messages in batch.items():
                for m in messages:
                    key, value = m.key, m.value
                    if decode:
                        key = None if key is None else json.loads(key)
                        value = json.loads(value)
                    records.append(
                        OutputRecord(tp.topic, key, value, tp.partition, m.offset, m.timestamp)
                    )
            if batch:
                last_new = time.monotonic()
            if until is not None and until(records):
                break
            if until is None and time.monotonic() - last_new > idle_s:
                break
        return records
    finally:
        consumer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="generator.outputs", description=__doc__)
    job = JobConfig()  # the job's output topics
    parser.add_argument("--bootstrap-servers", default=job.bootstrap_servers)
    parser.add_argument(
        "--kafka-properties",
        default="",
        help="the Kafka client properties file the job gets (SASL, TLS)",
    )
    parser.add_argument("--topics", default=",".join(job.output_topics))
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--full", action="store_true", help="print whole records")
    args = parser.parse_args(argv)
    records = read_topics(
        args.bootstrap_servers, args.topics.split(","), timeout_s=args.timeout,
        kafka_properties=args.kafka_properties,
    )  # fmt: skip
    for r in records:
        if args.full:
            print(f"{r.topic:<18} {json.dumps(r.value)}")
        else:
            print(f"{r.topic:<18} {summarize(r.value)}")
    print(f"{len(records)} records")


def summarize(value: dict) -> str:
    """One line per output record, for the demo."""
    if "status" in value:
        missing = f" missing={','.join(value['missing'])}" if value["missing"] else ""
        kind = f" kind={value['kind']}" if value.get("kind") else ""
        amends = f" amends={value['amends']}" if value.get("amends") else ""
        types = ",".join(value["types"])
        return f"{value['transaction']} {value['status']} types={types}{missing}{kind}{amends}"
    if "reason" in value:
        return f"{value['reason']}: {value['detail']} ({value['topic']}@{value['offset']})"
    return f"{value.get('transaction')} late {value.get('type')} after {value.get('final_status')}"


if __name__ == "__main__":
    main()
