"""Sends transaction plans to the type topics in the original proof of concept's format.

Value `{"transaction": ..., "log": ...}` as JSON, key the JSON-quoted transaction id, and a
partition chosen at random, so the job can rely on nothing but the value's `transaction`.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Sequence

from kafka import KafkaProducer

from generator.transactions import Transaction, plan, record_value
from job.clients import kafka_settings


class TransactionProducer:
    def __init__(
        self,
        bootstrap_servers: str,
        topic_prefix: str,
        rng: random.Random,
        kafka_properties: str = "",
    ):
        self.topic_prefix = topic_prefix
        self.rng = rng
        self.producer = KafkaProducer(
            **kafka_settings(bootstrap_servers, kafka_properties), linger_ms=5, acks="all"
        )
        self._partitions: dict[str, list[int]] = {}
        self.failed: list[Exception] = []  # deliveries the client gave up on

    def __enter__(self) -> TransactionProducer:
        return self

    def __exit__(self, *exc) -> None:
        self.producer.flush()
        self.producer.close()
        if self.failed and exc[0] is None:
            raise RuntimeError(f"{len(self.failed)} records not delivered: {self.failed[0]!r}")

    def _random_partition(self, topic: str) -> int:
        if topic not in self._partitions:
            self._partitions[topic] = sorted(self.producer.partitions_for(topic) or [0])
        return self.rng.choice(self._partitions[topic])

    def send_record(self, record_type: str, value: dict, timestamp_ms: int | None = None) -> None:
        topic = self.topic_prefix + record_type
        self.producer.send(
            topic,
            key=json.dumps(value.get("transaction")).encode(),
            value=json.dumps(value).encode(),
            partition=self._random_partition(topic),
            timestamp_ms=timestamp_ms,
        ).add_errback(self.failed.append)

    def send_raw(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        """Bytes as they are: for malformed input in tests and demos. A null value (a
        tombstone) goes with a key: kafka-python sends no record with neither."""
        if value is None and key is None:
            key = b'"tombstone"'
        self.producer.send(
            topic, value=value, key=key, partition=self._random_partition(topic)
        ).add_errback(self.failed.append)

    def send_all(
        self,
        plans: Sequence[Transaction],
        rate: float = 1000.0,
        max_delay: float = 0.0,
        progress: bool = False,
    ) -> None:
        """Sends plans at `rate` transactions per second; `max_delay` sleeps between records."""
        started = time.monotonic()
        for index, tx in enumerate(plans, 1):
            for record_type in tx.sent_types:
                self.send_record(record_type, record_value(tx.id, record_type, tx.kind))
                if max_delay:
                    time.sleep(self.rng.uniform(0, max_delay))
            ahead = index / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
            if progress and (index % 100 == 0 or index == len(plans)):
                _progress_bar(index, len(plans), time.monotonic() - started)
        self.producer.flush()
        if progress:
            print(file=sys.stderr)


class Traffic:
    """Complete transactions at a steady rate in a background thread, as services that keep
    running send them: event time moves on, so event-time timers (expiry, progress) fire.
    Types put in `silent` are left out from then on, as a service that stopped sending."""

    def __init__(self, bootstrap_servers: str, topic_prefix: str, types: Sequence[str],
                 rate: float = 5.0, prefix: str = "traffic") -> None:  # fmt: skip
        self.args = (bootstrap_servers, topic_prefix, random.Random())
        self.types, self.pause, self.prefix = list(types), 1 / rate, prefix
        self.sent = 0
        self.silent: set[str] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Traffic:
        self._thread.start()
        return self

    __enter__ = start

    def _run(self) -> None:
        with TransactionProducer(*self.args) as producer:
            rng = self.args[2]
            while not self._done.wait(self.pause):
                sending = [t for t in self.types if t not in self.silent]
                producer.send_all([plan(sending, rng, prefix=self.prefix)])
                self.sent += 1

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def __exit__(self, *exc) -> None:
        self.stop()


def _progress_bar(done: int, total: int, elapsed: float) -> None:
    width = 40
    filled = width * done // total
    rate = done / elapsed if elapsed else 0.0
    bar = "#" * filled + "." * (width - filled)
    print(f"\r[{bar}] {done}/{total} tx, {rate:,.0f} tx/s", end="", file=sys.stderr, flush=True)
