"""The original proof of concept's approach, rebuilt with faust-streaming for the benchmark.

Like the PoC: one agent per type topic, a faust Table with one entry per open transaction
(type -> part), the aggregate emitted as soon as every type is held, and a periodic timer
that expires partials. Inputs are partitioned at random, so each type agent first re-keys
its records by the value's `transaction` onto an internal topic; one correlator agent reads
that topic and owns the table (in memory, backed by faust's changelog topic). faust lets
only the stream that owns a table partition write to it, so the timer scans the table and
sends an expiry marker for each overdue transaction through the same internal topic; the
correlator then deletes the entry and emits it. No exactly-once: faust commits offsets at
least once. Records it cannot read (no JSON, no string `transaction`) are skipped and
counted. Peer for the benchmark only.

Expiry follows the Flink job's rule, not the PoC's wall clock (which, on a backlog, expires
complete transactions whose parts are re-keyed seconds apart): a transaction is overdue once
the watermark, the lowest of the input partitions' latest Kafka timestamps as read by the
type agents, minus the out-of-orderness, passes its first part's timestamp plus the
timeout; or, when no input arrived for the grace period, `timeout + grace` after the
correlator opened it. A type agent records a timestamp only after re-keying the record, so
the marker of an overdue transaction always travels behind its parts.

Configured by environment variables, so a harness can start it as a subprocess:

    PEER_BOOTSTRAP_SERVERS=127.0.0.1:9092 PEER_APP_ID=faust-peer \\
        .cache/faust-venv/bin/python bench/peers/faust_app.py worker -l warning

PEER_TOPIC_PREFIX (Events-), PEER_TYPES (TypeA,...,TypeE), PEER_AGGREGATED_TOPIC
(Events_Aggregated), PEER_EXPIRED_TOPIC (Events_Expired), PEER_TIMEOUT_S (5),
PEER_OUT_OF_ORDERNESS_S (1), PEER_EXPIRY_GRACE_S (5), PEER_SCAN_INTERVAL_S (1),
PEER_DATA_DIR (.run/bench/faust-<app id>), PEER_WEB_PORT (unset: no web server). The app id
is also the consumer group and the prefix of faust's own topics (`<id>-by-transaction`,
`<id>-open-transactions-changelog`), which faust creates itself. Output records match
`job.aggregate.build_aggregate`, keyed by the JSON-quoted id.
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
OUT_OF_ORDERNESS_MS = round(float(env("PEER_OUT_OF_ORDERNESS_S", "1")) * 1000)
GRACE_S = float(env("PEER_EXPIRY_GRACE_S", "5"))
SCAN_S = float(env("PEER_SCAN_INTERVAL_S", "1"))
APP_ID = env("PEER_APP_ID", "faust-peer")
DATA_DIR = env("PEER_DATA_DIR", f".run/bench/faust-{APP_ID}")
WEB_PORT = env("PEER_WEB_PORT")

log = logging.getLogger("faust_peer")
malformed = 0
SOURCES = {PREFIX + t for t in TYPES}
latest: dict[tuple[str, int], int] = {}  # (input topic, partition) -> latest timestamp, ms
last_input = time.time()

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

# transaction -> {"first_seen": wall-clock s, "deadline": event time ms, "parts": {type: part}};
# its changelog topic is co-partitioned with `by_transaction`.
open_transactions = app.Table("open-transactions", key_type=str, partitions=3)
expiring: set[str] = set()  # markers sent by the timer, not yet handled by the correlator


def forwarder(record_type: str):
    """One agent per type topic: parse, tag with the type and Kafka metadata, re-key."""

    async def forward(stream):
        global malformed, last_input
        async for event in stream.events():
            message = event.message
            timestamp = round(message.timestamp * 1000)  # faust gives seconds
            last_input = time.time()
            try:
                value = json.loads(event.value)
                transaction = value["transaction"]
                if not isinstance(transaction, str) or not transaction:
                    raise TypeError(transaction)
            except (ValueError, KeyError, TypeError):
                malformed += 1  # skipped, counted, logged at shutdown
            else:
                part = {
                    "type": record_type,
                    "value": value,
                    "timestamp": timestamp,
                    "partition": message.partition,
                    "offset": message.offset,
                }
                await by_transaction.send(key=transaction, value=part)
            position = (message.topic, message.partition)
            latest[position] = max(latest.get(position, timestamp), timestamp)

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
        if part.get("expire"):  # the timer's marker: the transaction was overdue
            expiring.discard(transaction)
            if entry:  # not completed since
                del open_transactions[transaction]
                await emit(transaction, entry, "expired")
            continue
        entry = entry or {
            "first_seen": time.time(),
            "deadline": part["timestamp"] + round(TIMEOUT_S * 1000),
            "parts": {},
        }
        parts = entry["parts"]
        if part["type"] in parts:
            continue  # a duplicate: the first part is kept
        parts[part.pop("type")] = {**part, "seq": len(parts)}
        if len(parts) == len(TYPES):
            open_transactions.pop(transaction, None)  # held only if it had earlier parts
            await emit(transaction, entry, "complete")
        else:
            open_transactions[transaction] = entry  # reassign: faust logs sets, not mutations


def watermark() -> int | None:
    """Event time every assigned input partition has passed; None until each has a record."""
    assigned = [tp for tp in app.consumer.assignment() if tp.topic in SOURCES]
    if not assigned or any((tp.topic, tp.partition) not in latest for tp in assigned):
        return None
    return min(latest[tp.topic, tp.partition] for tp in assigned) - OUT_OF_ORDERNESS_MS


@app.timer(interval=SCAN_S)
async def expire_partials():
    now = time.time()
    event_time = watermark()
    quiet = now - last_input >= GRACE_S
    overdue = [
        t
        for t, e in open_transactions.items()
        if (event_time is not None and e["deadline"] <= event_time)
        or (quiet and e["first_seen"] + TIMEOUT_S + GRACE_S <= now)
    ]
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
