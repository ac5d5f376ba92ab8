"""What a team writes first: one kafka-python consumer loop with the open transactions in a
dict, emitting an aggregate as soon as the last type arrives and scanning for expired ones
every second. No checkpoints, no exactly-once: state is lost on a crash and records read
but not emitted then are lost too (offsets auto-commit). Peer for the benchmark only.

Builds the same aggregate documents as the Flink job (`job.aggregate.build_aggregate`), so
the outputs are comparable record for record, and expires partials by the same rule: by
event time (Kafka timestamps; the watermark is the lowest of the assigned partitions' latest
timestamps minus the out-of-orderness), or, when input has been quiet for the grace period,
by wall clock `timeout + grace` after the transaction opened. A wall-clock timeout alone
would expire complete transactions of a backlog whose parts are read seconds apart.
Records it cannot read (no JSON, no string `transaction`) are skipped and counted.
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
    parser.add_argument("--out-of-orderness-s", type=float, default=job.out_of_orderness_s)
    parser.add_argument("--expiry-grace-s", type=float, default=job.expiry_grace_s)
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
    # transaction -> (event-time deadline in ms, wall-clock fallback in monotonic s)
    deadlines: dict[str, tuple[int, float]] = {}
    latest: dict[tuple[str, int], int] = {}  # (topic, partition) -> latest timestamp, ms
    timeout_ms = round(args.timeout_s * 1000)
    out_of_orderness_ms = round(args.out_of_orderness_s * 1000)
    fallback_s = args.timeout_s + args.expiry_grace_s
    skipped = 0
    print(f"started: group {args.group_id}, topics {list(topic_type)}", flush=True)

    def emit(transaction: str, status: str) -> None:
        parts = open_parts.pop(transaction)
        deadlines.pop(transaction)
        record = build_aggregate(transaction, parts, types, status, int(time.time() * 1000))
        topic = args.aggregated_topic if status == Outcome.COMPLETE else args.expired_topic
        producer.send(
            topic, key=kafka_key(transaction).encode(), value=json.dumps(record).encode()
        ).add_errback(lambda error: print(f"send failed: {error!r}", flush=True))

    def watermark() -> int | None:
        """Event time every assigned partition has passed; None until each has a record."""
        assigned = consumer.assignment()
        if not assigned or any((tp.topic, tp.partition) not in latest for tp in assigned):
            return None
        return min(latest[tp.topic, tp.partition] for tp in assigned) - out_of_orderness_ms

    last_scan = last_input = time.monotonic()
    while running:
        batches = consumer.poll(timeout_ms=200)
        if batches:
            last_input = time.monotonic()
        for tp, records in batches.items():
            newest = max(r.timestamp for r in records)
            latest[tp.topic, tp.partition] = max(
                latest.get((tp.topic, tp.partition), newest), newest
            )
            for r in records:
                try:
                    transaction = json.loads(r.value)["transaction"]
                except (ValueError, KeyError, TypeError):
                    transaction = None
                if not isinstance(transaction, str) or not transaction:
                    skipped += 1  # a first version drops what it cannot read
                    continue
                parts = open_parts.setdefault(transaction, {})
                if not parts:
                    deadlines[transaction] = (r.timestamp + timeout_ms, last_input + fallback_s)
                record_type = topic_type[r.topic]
                if record_type not in parts:
                    value = r.value.decode()
                    parts[record_type] = Part(len(parts), r.timestamp, value, r.partition, r.offset)
                if len(parts) == len(types):
                    emit(transaction, Outcome.COMPLETE)
        now = time.monotonic()
        if now - last_scan >= 1.0:
            last_scan = now
            event_time = watermark()
            quiet = now - last_input >= args.expiry_grace_s
            overdue = [
                t
                for t, (deadline, fallback) in deadlines.items()
                if (event_time is not None and deadline <= event_time)
                or (quiet and fallback <= now)
            ]
            for transaction in overdue:
                emit(transaction, Outcome.EXPIRED)
    producer.flush(timeout=20)
    consumer.close()
    producer.close()
    print(f"stopped; skipped {skipped} records it could not read", flush=True)


if __name__ == "__main__":
    main()
