"""What a team writes first: one kafka-python consumer loop with the open transactions in a
dict, emitting an aggregate as soon as the last type arrives and scanning for expired ones
every second. No checkpoints, no exactly-once: state is lost on a crash and records read
but not emitted then are lost too (offsets auto-commit). Peer for the benchmark only.

Builds the same aggregate documents as the Flink job (`job.aggregate.build_aggregate`), so
the outputs are comparable record for record.
"""

from __future__ import annotations

import argparse
import json
import signal
import time

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer

from job.aggregate import Outcome, Part, build_aggregate, kafka_key
from job.config import JobConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    job = JobConfig()  # the job's topics and timeout are the peer's defaults
    parser = argparse.ArgumentParser(prog="python -m bench.peers.dict_loop")
    parser.add_argument("--bootstrap-servers", default=job.bootstrap_servers)
    parser.add_argument("--types", default=",".join(job.types))
    parser.add_argument("--topic-prefix", default=job.topic_prefix)
    parser.add_argument("--aggregated-topic", default=job.aggregated_topic)
    parser.add_argument("--expired-topic", default=job.expired_topic)
    parser.add_argument("--timeout-s", type=float, default=job.timeout_s)
    parser.add_argument("--group-id", default="dict-loop")
    return parser.parse_args(argv)


class _Assigned(ConsumerRebalanceListener):
    """Says in the log when the group gave this consumer its partitions."""

    def on_partitions_assigned(self, assigned) -> None:
        print(f"assigned {len(assigned)} partitions", flush=True)

    def on_partitions_revoked(self, revoked) -> None:
        pass


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)  # before anything slow: a stop must never be lost
    types = args.types.split(",")
    topic_type = {args.topic_prefix + t: t for t in types}
    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap_servers,
        group_id=args.group_id,
        auto_offset_reset="earliest",
        max_poll_records=2000,
    )
    consumer.subscribe(list(topic_type), listener=_Assigned())
    producer = KafkaProducer(bootstrap_servers=args.bootstrap_servers, linger_ms=5)
    open_parts: dict[str, dict[str, Part]] = {}
    opened_at: dict[str, float] = {}  # wall clock, for the expiry scan
    print(f"started: group {args.group_id}, topics {list(topic_type)}", flush=True)

    def emit(transaction: str, status: str) -> None:
        parts = open_parts.pop(transaction)
        opened_at.pop(transaction)
        record = build_aggregate(transaction, parts, types, status, int(time.time() * 1000))
        topic = args.aggregated_topic if status == Outcome.COMPLETE else args.expired_topic
        producer.send(
            topic, key=kafka_key(transaction).encode(), value=json.dumps(record).encode()
        ).add_errback(lambda error: print(f"send failed: {error!r}", flush=True))

    last_scan = time.monotonic()
    while running:
        for records in consumer.poll(timeout_ms=200).values():
            for r in records:
                try:
                    transaction = json.loads(r.value)["transaction"]
                except (ValueError, KeyError, TypeError):
                    continue  # a first version drops what it cannot read
                parts = open_parts.setdefault(transaction, {})
                opened_at.setdefault(transaction, time.monotonic())
                record_type = topic_type[r.topic]
                if record_type not in parts:
                    value = r.value.decode()
                    parts[record_type] = Part(len(parts), r.timestamp, value, r.partition, r.offset)
                if len(parts) == len(types):
                    emit(transaction, Outcome.COMPLETE)
        if time.monotonic() - last_scan >= 1.0:
            last_scan = time.monotonic()
            cutoff = last_scan - args.timeout_s
            for transaction in [t for t, at in opened_at.items() if at < cutoff]:
                emit(transaction, Outcome.EXPIRED)
    producer.flush(timeout=20)
    consumer.close()
    producer.close()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
