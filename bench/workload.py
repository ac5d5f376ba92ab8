"""The benchmark's input: transactions in the original proof of concept's record format.

Every system under test reads the same records: value `{"transaction", "log"}`, key the
JSON-quoted id, partition at random, each transaction's parts sent one after another.
Pre-loading the topics before a system starts means the producer cannot be the bottleneck
of a throughput run; the paced sender runs in its own process so its work does not share a
GIL with the consumer that watches the outputs.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from collections.abc import Sequence

from kafka import KafkaProducer

from generator.transactions import record_value


def _producer(bootstrap: str, linger_ms: int = 20) -> KafkaProducer:
    return KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, batch_size=256 * 1024
    )


def _send_transaction(
    producer: KafkaProducer,
    prefix: str,
    transaction: str,
    types: Sequence[str],
    rng: random.Random,
    partitions: int,
) -> None:
    key = json.dumps(transaction).encode()
    for record_type in types:
        value = json.dumps(record_value(transaction, record_type)).encode()
        producer.send(
            prefix + record_type, key=key, value=value, partition=rng.randrange(partitions)
        )


def preload(
    bootstrap: str,
    prefix: str,
    types: Sequence[str],
    count: int,
    tag: str,
    partitions: int = 3,
    seed: int = 7,
) -> None:
    """`count` transactions with every type in `types`, as fast as the broker takes them."""
    rng = random.Random(seed)
    producer = _producer(bootstrap)
    for index in range(count):
        _send_transaction(producer, prefix, f"{tag}-{index}", types, rng, partitions)
    producer.flush()
    producer.close()


def paced_count(rate: float, seconds: float, types: Sequence[str]) -> int:
    """How many transactions `send_paced` sends."""
    return max(1, round(seconds * rate / len(types)))


def _paced(
    bootstrap: str, prefix: str, types: list[str], rate: float, seconds: float, tag: str
) -> None:
    rng = random.Random(11)
    producer = _producer(bootstrap, linger_ms=1)  # latency is measured from send time
    interval = len(types) / rate  # seconds between transactions
    started = time.monotonic()
    for index in range(paced_count(rate, seconds, types)):
        ahead = started + index * interval - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        _send_transaction(producer, prefix, f"{tag}-{index}", types, rng, 3)
    producer.flush()
    producer.close()


def send_paced(
    bootstrap: str, prefix: str, types: Sequence[str], rate: float, seconds: float, tag: str
) -> multiprocessing.Process:
    """Starts sending `rate` records/s for `seconds` in a child process; join it to wait."""
    process = multiprocessing.get_context("spawn").Process(
        target=_paced, args=(bootstrap, prefix, list(types), rate, seconds, tag), daemon=True
    )
    process.start()
    return process
