"""The original proof of concept's approach, rebuilt with faust-streaming for the benchmark.

Like the PoC: one agent per type topic, a faust Table with one entry per open transaction
(type -> part), the aggregate emitted as soon as every type is held, and a periodic timer
that expires partials by wall clock. Inputs are partitioned at random, so each type agent
first re-keys its records by the value's `transaction` onto an internal topic; one
correlator agent reads that topic and owns the table (in memory, backed by faust's
changelog topic). faust lets only the stream that owns a table partition write to it, so
the timer scans the table and sends an expiry marker for each overdue transaction through
the same internal topic; the correlator then deletes the entry and emits it. No
exactly-once: faust commits offsets at least once. Peer for the benchmark only.

Configured by environment variables, so a harness can start it as a subprocess:

    PEER_BOOTSTRAP_SERVERS=127.0.0.1:9092 PEER_APP_ID=faust-peer \\
        .cache/faust-venv/bin/python bench/peers/faust_app.py worker -l warning

PEER_TOPIC_PREFIX (Events-), PEER_TYPES (TypeA,...,TypeE), PEER_AGGREGATED_TOPIC
(Events_Aggregated), PEER_EXPIRED_TOPIC (Events_Expired), PEER_TIMEOUT_S (5),
PEER_SCAN_INTERVAL_S (1), PEER_DATA_DIR (.run/bench/faust-<app id>), PEER_WEB_PORT (unset:
no web server). The app id is also the consumer group and the prefix of faust's own topics
(`<id>-by-transaction`, `<id>-open-transactions-changelog`), which faust creates itself.
Output records match `job.aggregate.build_aggregate`, keyed by the JSON-quoted id.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import faust

env = os.environ.get
# The job's topics, always given by the benchmark (bench/systems.py, from its JobConfig).
BOOTSTRAP = os.environ["PEER_BOOTSTRAP_SERVERS"]
PREFIX = os.environ["PEER_TOPIC_PREFIX"]
TYPES = os.environ["PEER_TYPES"].split(",")
AGGREGATED = os.environ["PEER_AGGREGATED_TOPIC"]
EXPIRED = os.environ["PEER_EXPIRED_TOPIC"]
TIMEOUT_S = float(env("PEER_TIMEOUT_S", "5"))
SCAN_S = float(env("PEER_SCAN_INTERVAL_S", "1"))
APP_ID = env("PEER_APP_ID", "faust-peer")
DATA_DIR = env("PEER_DATA_DIR", f".run/bench/faust-{APP_ID}")
WEB_PORT = env("PEER_WEB_PORT")

log = logging.getLogger("faust_peer")
malformed = 0

app = faust.App(
    APP_ID,
    broker=",".join(f"kafka://{server}" for server in BOOTSTRAP.split(",")),
    datadir=DATA_DIR,
    store="memory://",
    consumer_auto_offset_reset="earliest",
    topic_partitions=3,
    topic_replication_factor=1,
    topic_allow_declare=True,
    web_enabled=WEB_PORT is not None,
    web_port=int(WEB_PORT or 6066),
    web_bind="127.0.0.1",
)

# Internal: faust creates it (3 partitions), keyed by transaction so that every part of a
# transaction reaches the same partition, and so the same correlator and table partition.
by_transaction = app.topic(f"{APP_ID}-by-transaction", internal=True, key_type=str)
aggregated = app.topic(AGGREGATED, key_serializer="raw", value_serializer="raw")
expired = app.topic(EXPIRED, key_serializer="raw", value_serializer="raw")

# transaction -> {"first_seen": wall-clock s, "parts": {type: part}}; its changelog topic is
# co-partitioned with `by_transaction`.
open_transactions = app.Table("open-transactions", key_type=str, partitions=3)
expiring: set[str] = set()  # markers sent by the timer, not yet handled by the correlator


def forwarder(record_type: str):
    """One agent per type topic: parse, tag with the type and Kafka metadata, re-key."""

    async def forward(stream):
        global malformed
        async for event in stream.events():
            try:
                value = json.loads(event.value)
                transaction = value["transaction"]
                if not isinstance(transaction, str):
                    raise TypeError(transaction)
            except (ValueError, KeyError, TypeError):
                malformed += 1  # skipped, counted, logged at shutdown
                continue
            message = event.message
            part = {
                "type": record_type,
                "value": value,
                "timestamp": round(message.timestamp * 1000),  # faust gives seconds
                "partition": message.partition,
                "offset": message.offset,
            }
            await by_transaction.send(key=transaction, value=part)

    source = app.topic(PREFIX + record_type, key_serializer="raw", value_serializer="raw")
    app.agent(source, name=f"forward-{record_type}")(forward)


for _type in TYPES:
    forwarder(_type)


async def emit(transaction: str, entry: dict, status: str) -> None:
    """Sends a closed transaction, shaped like `job.aggregate.build_aggregate`'s output."""
    parts = entry["parts"]
    arrival = sorted(parts, key=lambda t: parts[t]["seq"])
    times = [p["timestamp"] for p in parts.values()]
    first = min(times)
    record = {
        "transaction": transaction,
        "status": status,
        "types": [t for t in TYPES if t in parts],
        "missing": [t for t in TYPES if t not in parts],
        "parts": {t: parts[t]["value"] for t in arrival},
        "sources": {
            t: {"partition": parts[t]["partition"], "offset": parts[t]["offset"]} for t in arrival
        },
        "arrival_order": arrival,
        "part_count": len(parts),
        "offsets_ms": {t: parts[t]["timestamp"] - first for t in arrival},
        "first_event_time": first,
        "last_event_time": max(times),
        "duration_ms": max(times) - first,
        "emitted_at": int(time.time() * 1000),
    }
    topic = aggregated if status == "complete" else expired
    await topic.send(key=json.dumps(transaction).encode(), value=json.dumps(record).encode())


@app.agent(by_transaction, name="correlate")
async def correlate(stream):
    async for transaction, part in stream.items():
        entry = open_transactions.get(transaction)
        if part.get("expire"):  # the timer's marker: expire it if still open and overdue
            expiring.discard(transaction)
            if entry and entry["first_seen"] < time.time() - TIMEOUT_S:
                del open_transactions[transaction]
                await emit(transaction, entry, "expired")
            continue
        entry = entry or {"first_seen": time.time(), "parts": {}}
        parts = entry["parts"]
        if part["type"] in parts:
            continue  # a duplicate: the first part is kept
        parts[part.pop("type")] = {**part, "seq": len(parts)}
        if len(parts) == len(TYPES):
            open_transactions.pop(transaction, None)  # held only if it had earlier parts
            await emit(transaction, entry, "complete")
        else:
            open_transactions[transaction] = entry  # reassign: faust logs sets, not mutations


@app.timer(interval=SCAN_S)
async def expire_partials():
    cutoff = time.time() - TIMEOUT_S
    overdue = [t for t, e in open_transactions.items() if e["first_seen"] < cutoff]
    for transaction in overdue:
        if transaction not in expiring:
            expiring.add(transaction)
            await by_transaction.send(key=transaction, value={"expire": True})


@app.on_before_shutdown.connect
async def report_malformed(sender, **kwargs):
    if malformed:
        log.warning("skipped %d malformed records", malformed)


if __name__ == "__main__":
    # The worker command turns faust's web server on unless told otherwise, and its -l takes
    # "warn", not "warning".
    if "worker" in sys.argv and WEB_PORT is None and "--with-web" not in sys.argv:
        sys.argv.append("--without-web")
    sys.argv = ["warn" if a == "warning" else a for a in sys.argv]
    app.main()
