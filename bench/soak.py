"""`python -m bench soak`: the whole product for a long time under a realistic load, with
faults if asked, then checked output by output.

    python -m bench soak --minutes 120 --load 50            # steady
    python -m bench soak --minutes 120 --load 50 --faults   # a fault every few minutes

Its own platform on ports of its own (Kafka :29192, Flink :28181 with the supervisor,
PostgreSQL :25532; apart from the benchmark's and the tests', so CI can run beside a soak),
started from empty. Both jobs run as the runbook submits them. The
generator sends `--load` percent of `--max-tx-per-s` transactions a second in the
generator's realistic mix: 10% incomplete, 2% with their missing parts sent after the
timeout (late records), 1% malformed records, and about 300 hostile records every 10 minutes.

Every minute it samples: TaskManager RSS, the correlator's last checkpoint (size, duration),
open transactions, consumer lag, each job's restarts, rows stored against the writer's
backlog. With `--faults` it injects one fault every 3 to 6 minutes, at random: a
TaskManager `kill -9` (the supervisor replaces it), a broker restart (20 s away), a
PostgreSQL outage (30 to 90 s), a burst of hostile records.

At the end it stops the load, waits for every partial to expire and the writer to catch up,
then checks every transaction: exactly one final output in Kafka with exactly the parts
delivered, and a row in PostgreSQL exactly as emitted. Results: `.bench/soak-<time>/`
(soak.json, soak.md, soak.png).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.procs import rss_bytes
from generator.hostile import hostile_values
from generator.transactions import load_plans, record_value
from generator.verify import stored_as_emitted
from job.config import JobConfig, WriterConfig
from job.offsets import behind, stored_offsets, writer_topics
from stack.flink import FlinkCluster
from stack.kafka import KafkaBroker, consumer_lag, create_job_topics
from stack.paths import ROOT
from stack.postgres import PostgresServer
from stack.submit import submit_correlator, submit_writer
from store import db

FAULTS = ("taskmanager_kill", "broker_restart", "postgres_outage", "hostile_burst")


@dataclass
class SoakSettings:
    minutes: float = 120.0
    load: float = 50.0  # percent of max_tx_per_s
    # The platform's maximum with both jobs on this 2-core machine, transactions of five
    # records a second (docs/benchmark.md, "Soak").
    max_tx_per_s: float = 600.0
    faults: bool = False
    seed: int = 1
    timeout_s: float = 30.0
    out: Path = ROOT / ".bench"

    @property
    def rate(self) -> float:
        return self.max_tx_per_s * self.load / 100


def parse_args(argv: list[str] | None) -> SoakSettings:
    defaults = SoakSettings()
    parser = argparse.ArgumentParser(
        prog="python -m bench soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=defaults.minutes)
    parser.add_argument("--load", type=float, default=defaults.load, help="percent of the maximum")
    parser.add_argument("--max-tx-per-s", type=float, default=defaults.max_tx_per_s)
    parser.add_argument("--faults", action="store_true", help="inject a fault every 3-6 minutes")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--out", type=Path, default=defaults.out)
    args = parser.parse_args(argv)
    return SoakSettings(minutes=args.minutes, load=args.load, max_tx_per_s=args.max_tx_per_s,
                        faults=args.faults, seed=args.seed, out=args.out)  # fmt: skip


@dataclass
class Platform:
    broker: KafkaBroker = field(
        default_factory=lambda: KafkaBroker(port=29192, controller_port=29193, heap="1g")
    )
    postgres: PostgresServer = field(default_factory=lambda: PostgresServer(port=25532))
    cluster: FlinkCluster = field(
        default_factory=lambda: FlinkCluster(
            rest_port=28181, rpc_port=26223, taskmanagers=2,
            settings={"metrics.fetcher.update-interval": "1000"},
        )
    )  # fmt: skip

    @contextlib.contextmanager
    def running(self):
        services = (self.cluster, self.broker, self.postgres)
        for service in services:
            service.stop()
            shutil.rmtree(service.home, ignore_errors=True)
        try:
            self.broker.start()
            self.postgres.start()
            db.migrate(self.postgres.url)
            self.cluster.start()
            self.cluster.start_supervisor()
            yield self
        finally:
            for service in services:
                service.stop()


class Sender:
    """The load, in a thread: plans at a steady rate, late parts, malformed and hostile
    records. Remembers what Kafka acknowledged, per transaction and type."""

    def __init__(self, config: JobConfig, settings: SoakSettings):
        self.config, self.settings = config, settings
        self.rng = random.Random(settings.seed)
        self.producer = KafkaProducer(
            bootstrap_servers=config.bootstrap_servers, linger_ms=5, acks="all",
            max_request_size=1_100_000, delivery_timeout_ms=600_000, request_timeout_ms=30_000,
        )  # fmt: skip
        self.delivered: dict[str, set[str]] = {}  # transaction -> types Kafka acknowledged
        self.late: dict[str, set[str]] = {}  # transaction -> types sent after its timeout
        self.malformed = 0  # acknowledged malformed and hostile records
        self.failed = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None  # what ended the load early
        self.thread = threading.Thread(target=self._guarded, daemon=True)
        self._pending_late: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()

    def _ack(self, transaction: str, record_type: str):
        def done(_):
            with self._lock:
                self.delivered.setdefault(transaction, set()).add(record_type)

        return done

    def _fail(self, _error) -> None:
        self.failed += 1

    def send_part(self, transaction: str, record_type: str) -> None:
        value = json.dumps(record_value(transaction, record_type)).encode()
        self.producer.send(
            self.config.topic_of(record_type), key=json.dumps(transaction).encode(), value=value,
        ).add_callback(self._ack(transaction, record_type)).add_errback(self._fail)  # fmt: skip

    def send_raw(self, value: bytes | None) -> None:
        topic = self.config.topic_of(self.rng.choice(self.config.types))

        def done(_):
            with self._lock:
                self.malformed += 1

        # A record with neither key nor value is one kafka-python will not send: a null
        # value (a tombstone, one of the hostile records) goes with a key.
        key = None if value is not None else b'"hostile"'
        self.producer.send(topic, key=key, value=value).add_callback(done).add_errback(self._fail)

    def hostile_burst(self) -> None:
        for value in hostile_values(self.rng):
            self.send_raw(value)

    def _guarded(self) -> None:
        """The load; an error ends it and the soak with it (a soak without load proves
        nothing)."""
        try:
            self._run()
        except BaseException as error:
            self.error = error
            raise

    def _run(self) -> None:
        started = time.monotonic()
        sent = 0
        last_burst = started
        while not self.stop.is_set():
            plans = load_plans(100, self.config.types, 0.10, 0.5, self.rng, prefix="soak")
            for tx in plans:
                with self._lock:
                    self.delivered.setdefault(tx.id, set())
                for record_type in tx.sent_types:
                    self.send_part(tx.id, record_type)
                if tx.omitted and self.rng.random() < 0.2:  # 2% of all: parts after timeout
                    due = time.monotonic() + self.settings.timeout_s + 20
                    self.late[tx.id] = set(tx.omitted)
                    self._pending_late += [(due, tx.id, t) for t in tx.omitted]
                if self.rng.random() < 0.05:  # about 1% of the records
                    self.send_raw(self.rng.randbytes(self.rng.randint(1, 300)))
                sent += 1
                ahead = sent / self.settings.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            now = time.monotonic()
            for _due, transaction, record_type in [p for p in self._pending_late if p[0] <= now]:
                self.send_part(transaction, record_type)
            self._pending_late = [p for p in self._pending_late if p[0] > now]
            if now - last_burst > 600:
                self.hostile_burst()
                last_burst = now
        while self._pending_late:  # the last late parts, each when due (after its timeout)
            now = time.monotonic()
            for _due, transaction, record_type in [p for p in self._pending_late if p[0] <= now]:
                self.send_part(transaction, record_type)
            self._pending_late = [p for p in self._pending_late if p[0] > now]
            time.sleep(0.5)
        self.producer.flush()


def inject(fault: str, platform: Platform, sender: Sender, rng: random.Random) -> str:
    """One fault; returns what was done."""
    if fault == "taskmanager_kill":
        victim = rng.choice(platform.cluster.running_taskmanagers())
        os.kill(victim, signal.SIGKILL)
        return f"kill -9 TaskManager {victim}"
    if fault == "broker_restart":
        platform.broker.stop()
        time.sleep(20)
        platform.broker.start()
        return "broker away 20 s"
    if fault == "postgres_outage":
        away = rng.uniform(30, 90)
        platform.postgres.stop()
        time.sleep(away)
        platform.postgres.start()
        return f"PostgreSQL away {away:.0f} s"
    sender.hostile_burst()
    return "300 hostile records"


def sample(platform: Platform, config: JobConfig, writer: WriterConfig, jobs: dict) -> dict:
    """One minute's figures; what cannot be read (a dependency away) is None."""
    api = platform.cluster.api
    figures: dict = {"t": time.time(), "taskmanager_rss_mb": None}
    with contextlib.suppress(Exception):
        pids = platform.cluster.running_taskmanagers()
        figures["taskmanager_rss_mb"] = [round(rss_bytes([p]) / 2**20) for p in pids]
    for role, job_id in jobs.items():
        with contextlib.suppress(Exception):
            values = api.rest(f"/jobs/{job_id}/metrics?get=numRestarts")
            figures[f"{role}_restarts"] = int(float(values[0]["value"]))
    with contextlib.suppress(Exception):
        latest = api.rest(f"/jobs/{jobs['correlator']}/checkpoints")["latest"]["completed"]
        figures["checkpoint_mb"] = round(latest["state_size"] / 2**20, 1)
        figures["checkpoint_ms"] = latest["end_to_end_duration"]
    with contextlib.suppress(Exception):
        metrics = api.operator_metrics(jobs["correlator"], "correlate", "correlate_transactions.")
        figures["open_transactions"] = int(metrics.get("transactions_in_flight", 0))
    with contextlib.suppress(Exception):
        lag = consumer_lag(config.bootstrap_servers, config.group_id, config.input_topics)
        figures["consumer_lag"] = sum(n or 0 for n in lag.values())
    with contextlib.suppress(Exception):
        stored = stored_offsets(writer.database_url, writer.database_user, None, writer.group_id)
        figures["writer_behind"] = behind(writer.bootstrap_servers, writer_topics(writer), stored)
        with db.connect(writer.database_url) as conn:
            figures["rows_stored"] = conn.execute(
                "SELECT count(*) AS n FROM transactions WHERE status <> 'open'"
            ).fetchone()["n"]
    return figures


def verify(config: JobConfig, writer: WriterConfig, sender: Sender) -> dict:
    """Output by output: lost, duplicated, wrong parts in Kafka; missing or different rows in
    PostgreSQL; dead letters and late records against what was sent. The outputs are read
    in a stream and checked against PostgreSQL in chunks, so hours of them fit in memory."""
    # What each transaction's output holds: its parts Kafka took, but those sent late.
    expected = {tx: types - sender.late.get(tx, set()) for tx, types in sender.delivered.items()}
    seen: set[str] = set()
    found = {"duplicated": [], "wrong": [], "unknown": [], "not_stored": [], "different": []}
    chunk: dict[str, tuple[dict, str]] = {}
    outputs = 0
    with db.connect(writer.database_url) as conn:
        results = [config.aggregated_topic, config.expired_topic]
        for value in committed_values(config.bootstrap_servers, results):
            outputs += 1
            text = value.decode()
            document = json.loads(text)
            tx = document["transaction"]
            if tx not in expected:
                # A hostile record's id: every burst sends the same ones again, each a new
                # transaction once the last one's closed retention ended; counted apart.
                found["unknown"].append(tx)
                continue
            if tx in seen:
                found["duplicated"].append(tx)
            seen.add(tx)
            if set(document["types"]) != expected[tx]:
                found["wrong"].append(tx)
            chunk[tx] = (document, text)
            if len(chunk) >= 5_000:
                _check_rows(conn, chunk, found)
                chunk = {}
        _check_rows(conn, chunk, found)
    lost = [tx for tx, types in expected.items() if types and tx not in seen]
    return {
        "transactions_sent": len(expected),
        "outputs": outputs,
        "lost": len(lost),
        "duplicated": len(found["duplicated"]),
        "wrong_parts": len(found["wrong"]),
        "unknown": len(found["unknown"]),
        "not_stored": len(found["not_stored"]),
        "stored_differently": len(found["different"]),
        "dead_letters": sum(
            1 for _ in committed_values(config.bootstrap_servers, [config.dead_letter_topic])
        ),  # fmt: skip
        "malformed_sent": sender.malformed,
        "late_records": sum(
            1 for _ in committed_values(config.bootstrap_servers, [config.late_topic])
        ),  # fmt: skip
        "late_parts_sent": sum(len(t) for t in sender.late.values()),
        "send_failures": sender.failed,
        "examples": {"lost": lost[:5], **{k: v[:5] for k, v in found.items()}},
    }


def committed_values(bootstrap: str, topics: list[str]):
    """Every committed record's value on the topics, up to their ends as of now (a stream)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed",
        enable_auto_commit=False, max_partition_fetch_bytes=4 * 2**20,
    )  # fmt: skip
    try:
        partitions = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        idle_since = time.monotonic()
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            batch = consumer.poll(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    yield record.value
            if batch:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > 60:
                break  # only markers left before the ends
    finally:
        consumer.close()


def _check_rows(conn, chunk: dict[str, tuple[dict, str]], found: dict[str, list]) -> None:
    """Each transaction of the chunk stored exactly as emitted."""
    rows = db.rows_of(conn, list(chunk))
    for tx, (document, text) in chunk.items():
        if tx not in rows:
            found["not_stored"].append(tx)
        elif not stored_as_emitted(rows[tx], document, text):
            found["different"].append(tx)


def run(settings: SoakSettings, platform: Platform) -> dict:
    tag = "soak" + datetime.datetime.now().strftime("%H%M%S")
    config = JobConfig(
        bootstrap_servers=platform.broker.bootstrap, timeout_s=settings.timeout_s,
        expiry_grace_s=10, job_name=f"{tag}-correlator",
    ).tagged(tag)  # fmt: skip
    writer = WriterConfig.for_job(config, database_url=platform.postgres.url)
    create_job_topics(config)
    jobs = {
        "correlator": submit_correlator(platform.cluster, config),
        "writer": submit_writer(platform.cluster, writer),
    }
    for job_id in jobs.values():
        platform.cluster.api.wait_until_running(job_id)
    sender = Sender(config, settings)
    rng = random.Random(settings.seed + 1)
    samples, faults = [], []
    started = time.monotonic()
    ends = started + settings.minutes * 60
    next_sample = started
    next_fault = started + rng.uniform(180, 360) if settings.faults else float("inf")
    sender.thread.start()
    while time.monotonic() < ends:
        if sender.error is not None:
            raise RuntimeError(f"the load stopped: {sender.error!r}") from sender.error
        if time.monotonic() >= next_sample:
            samples.append(sample(platform, config, writer, jobs))
            print(json.dumps(samples[-1]), flush=True)
            next_sample += 60
        if time.monotonic() >= next_fault:
            fault = rng.choice(FAULTS)
            at = time.time()
            faults.append({"t": at, "fault": fault, "what": inject(fault, platform, sender, rng)})
            print(f"fault: {faults[-1]}", flush=True)
            next_fault = time.monotonic() + rng.uniform(180, 360)
        time.sleep(1)
    sender.stop.set()
    sender.thread.join()
    # Every partial expires (timeout + grace), late parts arrive, the writer catches up.
    quiet_until = time.monotonic() + settings.timeout_s + 60
    while time.monotonic() < quiet_until or (samples[-1].get("writer_behind") or 0) > 0:
        time.sleep(10)
        samples.append(sample(platform, config, writer, jobs))
        if time.monotonic() > quiet_until + 900:
            break
    check = verify(config, writer, sender)
    return {
        "settings": {k: str(v) for k, v in asdict(settings).items()},
        "rate_tx_per_s": settings.rate,
        "samples": samples,
        "faults": faults,
        "check": check,
    }


def write(result: dict, out: Path) -> Path:
    folder = out / f"soak-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "soak.json").write_text(json.dumps(result, indent=1, default=str))
    (folder / "soak.md").write_text(markdown(result))
    with contextlib.suppress(ImportError):
        plot(result, folder / "soak.png")
    return folder


def markdown(result: dict) -> str:
    samples = result["samples"]
    check = result["check"]

    def span(name: str) -> str:
        values = [s[name] for s in samples if s.get(name) is not None]
        if values and isinstance(values[0], list):
            values = [max(v) for v in values if v]
        if not values:
            return "-"
        return f"{values[0]:,} / {min(values):,}..{max(values):,} / {values[-1]:,}"

    lines = [
        f"Soak: {result['settings']['minutes']} min at {result['rate_tx_per_s']:.0f} tx/s, "
        f"faults {result['settings']['faults']} ({len(result['faults'])} injected: "
        f"{dict(Counter(f['fault'] for f in result['faults']))})",
        "",
        "| figure | first / min..max / last |",
        "|---|---|",
        *(f"| {name} | {span(name)} |" for name in (
            "taskmanager_rss_mb", "checkpoint_mb", "checkpoint_ms", "open_transactions",
            "consumer_lag", "writer_behind", "correlator_restarts", "writer_restarts")),
        "",
        "| check | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in check.items() if k != "examples"),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t0 = samples[0]["t"]
    minutes = [(s["t"] - t0) / 60 for s in samples]
    panels = [("taskmanager_rss_mb", "TaskManager RSS, MB (max)"),
              ("checkpoint_mb", "checkpointed state, MB"), ("checkpoint_ms", "checkpoint, ms"),
              ("open_transactions", "open transactions"), ("consumer_lag", "consumer lag"),
              ("writer_behind", "writer behind, records")]  # fmt: skip
    figure, axes = plt.subplots(len(panels), 1, figsize=(9, 2.0 * len(panels)), sharex=True)
    for axis, (name, label) in zip(axes, panels, strict=True):
        values = [s.get(name) for s in samples]
        values = [max(v) if isinstance(v, list) and v else v for v in values]
        axis.plot(minutes, [float("nan") if v is None else v for v in values])
        axis.set_ylabel(label, fontsize=8)
        for fault in result["faults"]:
            axis.axvline((fault["t"] - t0) / 60, color="red", alpha=0.3)
    axes[-1].set_xlabel("minutes (red: a fault)")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    with Platform().running() as platform:
        result = run(settings, platform)
    folder = write(result, settings.out)
    print(markdown(result))
    print(f"written: {folder}")
    failed = [k for k in ("lost", "duplicated", "wrong_parts", "not_stored", "stored_differently")
              if result["check"][k]]  # fmt: skip
    raise SystemExit(1 if failed else 0)
