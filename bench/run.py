"""The benchmark: our Flink job against its peers on the same records, in one run.

For each system, `--repeat` times (systems taking turns, so a slow minute of the machine
does not hit one system only): fresh topics, a backlog of N transactions pre-loaded (about
10% of them incomplete, about 1% of the records malformed), the system started, its
outputs (aggregates and partials) watched until every expected one is visible to a
`read_committed` consumer, and checked against the workload; then records sent at 50% and
90% of that system's own maximum rate (completion latency). Then our job alone with
transactions held in flight (TaskManager RSS and checkpointed state, before and after they
all close).

    python -m bench                      # the full run, its own Kafka and Flink cluster
    python -m bench --transactions 500 --latency-seconds 3 --in-flight 100 --repeat 1
    python -m bench profile              # where our job's Python time goes (py-spy)
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import datetime
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote

from bench import figures, report, workload
from bench.procs import rss_bytes
from bench.systems import (
    DictLoop,
    Faust,
    FlinkCorrelator,
    FlinkSqlCopy,
    PythonCeiling,
    Recompute,
    System,
)
from bench.watch import SystemGone, Watcher, read_topic
from job.config import AT_LEAST_ONCE, JobConfig
from job.metrics import AGGREGATED, CLOSED_MARKERS, IN_FLIGHT
from job.sinks import KAFKA_DEFAULT_LINGER
from job.sources import KAFKA_DEFAULT_FETCH
from stack.flink import FlinkCluster
from stack.kafka import KafkaBroker, create_job_topics
from stack.paths import ROOT, RUN

MB = 2**20


@dataclass
class Settings:
    transactions: int = 20_000
    latency_seconds: float = 20.0
    loads: tuple[int, ...] = (50,)
    in_flight: tuple[int, ...] = ()
    in_flight_systems: tuple[str, ...] = ("ours",)  # our job's variants held in flight
    settle_s: float = 15.0  # pause between the backlog and the latency runs
    # Every system's transaction timeout, out-of-orderness and wall-clock grace: short, so
    # the partials of the backlog's head expire while the backlog is still being read.
    timeout_s: float = 5.0
    out_of_orderness_s: float = 1.0
    expiry_grace_s: float = 5.0
    # Our job's source idleness (its default): the reference topic is silent in the
    # benchmark and holds event time back until it counts as idle; shorter idleness lets
    # partitions waiting behind backpressure count as idle, and complete transactions expire.
    idleness_s: float = 30.0
    incomplete: float = 0.10  # share of transactions missing one or more types
    malformed: float = 0.01  # share of records that are malformed
    repeat: int = 3  # runs of each configuration; the median is reported with min..max
    checkpoint_interval_s: float = 0.0  # 0: flink-conf/config.yaml's (5 s)
    # The README's table, in under 30 minutes: our job, the ceilings of its own shape (Python
    # pass-through, then with state and timers) and of the engine (the SQL copy), the peers.
    systems: tuple[str, ...] = ("ours", "pass", "state", "copy", "faust", "dict")
    out: Path = ROOT / ".bench"


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n")[0],
        epilog="`python -m bench profile --help`: the per-call profile of our job.",
    )
    parser.add_argument(
        "--transactions",
        type=int,
        default=defaults.transactions,
        help="transactions pre-loaded per throughput run (up to 5 records each)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=defaults.latency_seconds,
        help="how long records are sent at each load level",
    )
    parser.add_argument(
        "--loads",
        default=",".join(str(x) for x in defaults.loads),
        help="load levels for latency, percent of each system's maximum",
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=defaults.settle_s,
        help="pause after the backlog before the latency runs (compactions, checkpoints)",
    )
    parser.add_argument(
        "--in-flight",
        default=",".join(str(x) for x in defaults.in_flight),
        help="transactions held open for the memory runs ('' to skip)",
    )
    parser.add_argument(
        "--in-flight-systems",
        default=",".join(defaults.in_flight_systems),
        help="which of our job's variants (parallelism 1) the memory runs hold them in",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=defaults.timeout_s,
        help="transaction timeout of every system",
    )
    parser.add_argument(
        "--out-of-orderness-s",
        type=float,
        default=defaults.out_of_orderness_s,
        help="bounded out-of-orderness of event time, every system",
    )
    parser.add_argument(
        "--expiry-grace-s",
        type=float,
        default=defaults.expiry_grace_s,
        help="wall-clock expiry fallback: after timeout + grace, once input was quiet for grace",
    )
    parser.add_argument(
        "--idleness-s",
        type=float,
        default=defaults.idleness_s,
        help="our job's source idleness: a silent partition (the reference topic) stops "
        "holding back event time after this long",
    )
    parser.add_argument(
        "--incomplete",
        type=float,
        default=defaults.incomplete,
        help="share of the backlog's transactions missing one or more types",
    )
    parser.add_argument(
        "--malformed",
        type=float,
        default=defaults.malformed,
        help="share of the backlog's records that are malformed",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=defaults.repeat,
        help="runs of each configuration (median and min..max reported)",
    )
    parser.add_argument(
        "--checkpoint-interval-s",
        type=float,
        default=0.0,
        help="our job's checkpoint interval (0: flink-conf/config.yaml's)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(defaults.systems),
        help=f"which to run: {', '.join(SYSTEMS)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=defaults.out,
        help="folder for results.md, results.json and the plots",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> Settings:
    args = build_parser().parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    return Settings(
        transactions=args.transactions,
        latency_seconds=args.latency_seconds,
        loads=tuple(dict.fromkeys(int(x) for x in args.loads.split(",") if x)),  # each once
        settle_s=args.settle_s,
        in_flight=tuple(int(x) for x in args.in_flight.split(",") if x),
        in_flight_systems=tuple(args.in_flight_systems.split(",")),
        timeout_s=args.timeout_s,
        out_of_orderness_s=args.out_of_orderness_s,
        expiry_grace_s=args.expiry_grace_s,
        idleness_s=args.idleness_s,
        incomplete=args.incomplete,
        malformed=args.malformed,
        repeat=args.repeat,
        checkpoint_interval_s=args.checkpoint_interval_s,
        systems=tuple(args.systems.split(",")),
        out=args.out,
    )


PROGRESS_INTERVAL_S = 5.0  # the checkpoint interval of flink-conf/config.yaml


def client_properties_file(name: str, properties: dict[str, object]) -> str:
    """A Kafka client properties file for a variant of our job (`--kafka-properties`, which
    every Kafka client of the job reads), under .run/bench/."""
    path = RUN / "bench" / f"{name}.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    return str(path)


# Kafka's default per-partition fetch (1 MiB) instead of the job's (job/sources.py
# SOURCE_FETCH): what the job did before 2026-12-03.
WIDE_FETCH = {"max.partition.fetch.bytes": KAFKA_DEFAULT_FETCH["max.partition.fetch.bytes"]}
# Kafka's defaults for fetch waits and producer linger instead of the job's (job/sources.py
# SOURCE_FETCH, job/sinks.py SINK_BATCHING): what the job did before 2026-12-04.
UNBATCHED = {
    "fetch.min.bytes": KAFKA_DEFAULT_FETCH["fetch.min.bytes"],
    "fetch.max.wait.ms": KAFKA_DEFAULT_FETCH["fetch.max.wait.ms"],
    **KAFKA_DEFAULT_LINGER,
}


def unbatched_options() -> dict[str, str]:
    return {"kafka_properties": client_properties_file("unbatched", UNBATCHED)}


# Every system the benchmark knows, by the name `--systems` takes (its --help lists them).
SYSTEMS: dict[str, Callable[[FlinkCluster], System]] = {
    "ours": lambda cluster: FlinkCorrelator(cluster),
    "ours-p2": lambda cluster: FlinkCorrelator(cluster, parallelism=2),
    "ours-process": lambda cluster: FlinkCorrelator(
        cluster,
        options={"python.execution-mode": "process"},
        label="Flink job, process mode",
    ),
    "ours-small-bundles": lambda cluster: FlinkCorrelator(
        cluster,
        options={
            "python.fn-execution.bundle.size": "1000",
            "python.fn-execution.bundle.time": "100",
        },
        label="Flink job, bundles of 1,000 / 100 ms",
    ),
    "ours-heap-timers": lambda cluster: FlinkCorrelator(
        cluster,
        options={"state.backend.rocksdb.timer-service.factory": "HEAP"},
        label="Flink job, timers on the heap",
    ),
    "ours-hashmap": lambda cluster: FlinkCorrelator(
        cluster,
        options={"state.backend.type": "hashmap"},
        label="Flink job, hashmap state",
    ),
    "ours-alo": lambda cluster: FlinkCorrelator(
        cluster,
        job_options={"delivery_guarantee": AT_LEAST_ONCE},
        label="Flink job, at-least-once",
    ),
    "ours-alo-5ms": lambda cluster: FlinkCorrelator(
        cluster,
        options={"execution.buffer-timeout.interval": "5 ms"},
        job_options={"delivery_guarantee": AT_LEAST_ONCE},
        label="Flink job, at-least-once, 5 ms buffer timeout",
    ),
    "ours-unbatched": lambda cluster: FlinkCorrelator(
        cluster,
        job_options=unbatched_options(),
        label="Flink job, unbatched Kafka requests",
    ),
    "ours-alo-unbatched": lambda cluster: FlinkCorrelator(
        cluster,
        job_options={"delivery_guarantee": AT_LEAST_ONCE, **unbatched_options()},
        label="Flink job, at-least-once, unbatched Kafka requests",
    ),
    "ours-wide-fetch": lambda cluster: FlinkCorrelator(
        cluster,
        job_options={"kafka_properties": client_properties_file("wide-fetch", WIDE_FETCH)},
        label="Flink job, 1 MiB partition fetches",
    ),
    "ours-progress": lambda cluster: FlinkCorrelator(
        cluster,
        job_options={"progress_interval_s": PROGRESS_INTERVAL_S},
        label=f"Flink job, progress every {PROGRESS_INTERVAL_S:g} s",
    ),
    "pass": lambda cluster: PythonCeiling(cluster, ceiling="pass"),
    "state": lambda cluster: PythonCeiling(cluster, ceiling="state"),
    "copy": lambda cluster: FlinkSqlCopy(cluster),
    "copy-p2": lambda cluster: FlinkSqlCopy(cluster, parallelism=2),
    "recompute": lambda cluster: Recompute(),
    "faust": lambda cluster: Faust(),
    "dict": lambda cluster: DictLoop(),
}


def make_systems(names: tuple[str, ...], cluster: FlinkCluster) -> list[System]:
    """The systems by name, ours first (the ratios are ours against each of the others)."""
    unknown = set(names) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
    return [SYSTEMS[n](cluster) for n in names]


def fresh_config(broker: KafkaBroker, settings: Settings, **overrides) -> JobConfig:
    """A configuration on topics of their own, so no run sees another's records."""
    tag = "b" + uuid.uuid4().hex[:8]
    config = JobConfig(bootstrap_servers=broker.bootstrap).tagged(
        tag,
        job_name=f"bench-{tag}",
        timeout_s=settings.timeout_s,
        out_of_orderness_s=settings.out_of_orderness_s,
        expiry_grace_s=settings.expiry_grace_s,
        idleness_s=settings.idleness_s,
        checkpoint_interval_s=settings.checkpoint_interval_s,
    )
    config = replace(config, **overrides)
    # Latency counts from when the broker appended the last part, not from when the client
    # queued it: a busy producer must not add its own queueing to the system's latency.
    broker.create_topics(config.input_topics, configs={"message.timestamp.type": "LogAppendTime"})
    create_job_topics(config)
    return config


def head_pause_s(config: JobConfig) -> float:
    """How long the pre-load waits after the backlog's head: every later record's Kafka
    timestamp is then past every head transaction's event-time deadline (timeout +
    out-of-orderness), so the head's partials expire by event time, in every system."""
    return config.timeout_s + config.out_of_orderness_s + 1.0


def plan_backlog(settings: Settings, config: JobConfig) -> workload.Workload:
    return workload.plan(
        settings.transactions,
        config.types,
        f"{config.group_id}-load",
        incomplete=settings.incomplete,
        malformed=settings.malformed,
    )


@contextlib.contextmanager
def preparing(system: System) -> Iterator[None]:
    """`system.prepare()` (fresh TaskManagers: 6-7 s) while the block pre-loads its input:
    both come before the clock starts, and the backlog's head pause would idle anyway."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        prepared = pool.submit(system.prepare)
        try:
            yield
        finally:
            prepared.result()


def run_system(system: System, broker: KafkaBroker, settings: Settings, attempt: int = 1) -> dict:
    """One run of one system: the backlog (throughput, outputs checked), then latency."""
    config = fresh_config(broker, settings)
    tag = config.group_id
    backlog = plan_backlog(settings, config)
    records = backlog.records
    expected = system.expected_outputs(backlog)
    print(
        f"-- {system.name}, run {attempt}: pre-loading {backlog.count:,} transactions "
        f"({backlog.incomplete:,} incomplete), {records:,} records "
        f"({len(backlog.malformed):,} malformed)",
        flush=True,
    )
    with preparing(system):
        workload.send(broker.bootstrap, config.topic_prefix, backlog, pause_s=head_pause_s(config))
    watcher = Watcher(
        broker.bootstrap,
        [config.aggregated_topic, config.expired_topic],
        cpu=system.cpu_s,
        task_cpu=system.task_cpu_s if system.task_processes_apart else None,
        keep=system.correlates,
    )
    result: dict = {
        "name": system.name,
        "run": attempt,
        "transactions": backlog.count,
        "incomplete_transactions": backlog.incomplete,
        "malformed_records": len(backlog.malformed),
        "records": records,
        "expected_outputs": expected,
        "latency": {},
        "timeline": [],
    }
    watcher.start()
    try:
        measure_backlog(system, watcher, broker, config, settings, backlog, result)
        rate = figures.max_rate(result["throughput"])
        if result["status"] == "complete" and rate and settings.loads and not system.bounded:
            time.sleep(settings.settle_s)
            for load in settings.loads:
                result["latency"][str(load)] = measure_latency(
                    system, watcher, broker, config, rate * load / 100, settings, f"{tag}-l{load}"
                )
        result["details"] = system.details()
    finally:
        system.stop()
        watcher.stop()
    return result


def measure_backlog(
    system: System,
    watcher: Watcher,
    broker: KafkaBroker,
    config: JobConfig,
    settings: Settings,
    backlog: workload.Workload,
    result: dict,
) -> None:
    """Starts the system on the pre-loaded backlog and waits for every expected output;
    fills `result` with the run's status, checked outputs and figures."""
    records, expected = backlog.records, result["expected_outputs"]
    # The clock starts before the start command: Flink's `flink run` and the job's start-up
    # count, as a peer's process start does; a fast system may be done before start returns.
    before = watcher.mark()
    started = None
    try:
        system.start(config)
        started = watcher.mark()
        wait_s = 120 + records / 500 + settings.timeout_s + settings.expiry_grace_s
        done = watcher.wait_for(expected, wait_s, failure=system.failure)
    except (SystemGone, RuntimeError, TimeoutError) as error:
        done = False
        result["error"] = str(error)
        print(f"   failed: {str(error)[:2000]}", flush=True)
    finished = watcher.mark()  # the moment every expected output was seen
    watcher.keep = False  # the latency runs' outputs are not the backlog's
    samples = watcher.samples[before:]
    check = None
    if system.correlates and done:
        check = workload.check(backlog, watcher.values)
        result["check"] = check
    watcher.values = []
    result["outputs"] = watcher.count
    result["status"] = figures.run_status(watcher.count, expected, check)
    result["phases"] = figures.phases(watcher.samples, before, started, finished)
    measured = dict(figures.NO_RATE)
    if result["status"] == "complete":
        measured = {
            **figures.throughput(samples, records, expected, system.output_step_s(config)),
            **figures.whole_run(watcher.samples[before], watcher.samples[finished], records),
            "first_output_s": result["phases"]["first_output_s"],
        }
    result["throughput"] = measured
    result["timeline"] = figures.timeline(samples, records, expected)
    _print_run(result)
    topic = system.dead_letter_topic(config)
    if done and topic:
        result["dead_letters"] = count_dead_letters(broker, topic, backlog)


def _print_run(result: dict) -> None:
    measured = result["throughput"]
    line = f"   {result['outputs']:,}/{result['expected_outputs']:,} outputs: {result['status']}"
    if "check" in result:
        c = result["check"]
        line += f" ({c['complete']:,} complete, {c['expired']:,} expired)"
        for example in c["examples"]:
            line += f"\n     {example}"
    phases = result.get("phases") or {}
    if phases.get("start_s") is not None and phases.get("first_output_s") is not None:
        line += (
            f"; started in {phases['start_s']:,.1f} s, first output at "
            f"{phases['first_output_s']:,.1f} s"
        )
    if measured["whole_run_records_per_s"]:
        line += (
            f"; records/s: steady {measured['records_per_s'] or 0:,.0f}, whole run "
            f"{measured['whole_run_records_per_s']:,.0f} ({measured['whole_run_s']:,.1f} s)"
        )
    print(line, flush=True)


def count_dead_letters(broker: KafkaBroker, topic: str, backlog: workload.Workload) -> dict:
    """Our job's dead letters for the backlog's malformed records, by reason (read once all
    expected outputs were visible; they are committed in the same checkpoints)."""
    wanted = collections.Counter(m.reason for _, m in backlog.malformed)
    values = read_topic(broker.bootstrap, topic, len(backlog.malformed), timeout=30)
    reasons = collections.Counter(workload.dead_letter_reason(v) for v in values)
    return {
        "count": len(values),
        "expected": len(backlog.malformed),
        "reasons": dict(sorted(reasons.items())),
        "expected_reasons": dict(sorted(wanted.items())),
    }


def measure_latency(
    system: System,
    watcher: Watcher,
    broker: KafkaBroker,
    config: JobConfig,
    rate: float,
    settings: Settings,
    tag: str,
) -> dict:
    """Completion latency of transactions sent at `rate` records/s, once all are out."""
    latencies = watcher.measure_latency(tag)
    count = workload.paced_count(rate, settings.latency_seconds, config.types)
    expected = system.latency_outputs(count, len(config.types))
    started, before = time.monotonic(), watcher.mark()
    sender = workload.send_paced(
        broker.bootstrap, config.topic_prefix, config.types, rate, settings.latency_seconds, tag
    )
    sender.join()
    sent_s = time.monotonic() - started
    watcher.wait_for(0, timeout=60 + settings.timeout_s, latencies=expected, failure=system.failure)
    after = watcher.mark()
    summary = figures.latency_summary(list(latencies))
    # What a trickle costs the system, against a backlog's whole_run_cpu_s_per_1k.
    cpu_s = watcher.samples[after].cpu_s - watcher.samples[before].cpu_s
    sent = count * len(config.types)
    processing = list(watcher.processing)
    summary.update(
        processing_p50_ms=figures.percentile(processing, 50),
        processing_p99_ms=figures.percentile(processing, 99),
        target_rate=rate,
        sent_rate=sent / sent_s,
        cpu_s_per_1k=cpu_s / sent * 1000 if sent else None,
        expected=expected,
    )
    print(
        f"   at {rate:,.0f} records/s (sent {summary['sent_rate']:,.0f}/s): "
        f"p50 {summary['p50_ms'] or 0:,.0f} ms, p99 {summary['p99_ms'] or 0:,.0f} ms "
        + (
            f"(until emitted: p50 {summary['processing_p50_ms']:,.0f} ms, "
            f"p99 {summary['processing_p99_ms']:,.0f} ms) "
            if summary["processing_p50_ms"] is not None
            else ""
        )
        + f"({summary['count']:,}/{expected:,} seen); "
        + f"{summary['cpu_s_per_1k'] or 0:.3f} CPU s per 1k records",
        flush=True,
    )
    return summary


def _checkpoint_after(cluster: FlinkCluster, job_id: str, after_ms: float, timeout: float = 120):
    """The first completed checkpoint triggered after `after_ms` (epoch ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = cluster.api.rest(f"/jobs/{job_id}/checkpoints")["latest"]["completed"]
        if latest and latest["trigger_timestamp"] > after_ms:
            return latest
        time.sleep(1)
    raise TimeoutError(f"no checkpoint of {job_id} completed in {timeout} s")


IN_FLIGHT_COUNTERS = (IN_FLIGHT, AGGREGATED, CLOSED_MARKERS)


def job_counters(cluster: FlinkCluster, job_id: str) -> dict[str, float]:
    """The correlator's counters by their last name, summed over every vertex and subtask:
    found by name, whatever the operator holding them is called."""
    api = cluster.api
    found: dict[str, float] = {}
    for vertex in api.rest(f"/jobs/{job_id}")["vertices"]:
        base = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
        names = [
            m["id"] for m in api.rest(base) if m["id"].rsplit(".", 1)[-1] in IN_FLIGHT_COUNTERS
        ]
        if names:
            for metric in api.rest(f"{base}?get={quote(','.join(names))}&agg=sum"):
                short = metric["id"].rsplit(".", 1)[-1]
                found[short] = found.get(short, 0.0) + float(metric["sum"])
    return found


def wait_for_counters(cluster: FlinkCluster, job_id: str, until, timeout: float) -> dict:
    """Polls the job's counters until `until(counters)` holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            counters = job_counters(cluster, job_id)
        except (OSError, KeyError):  # tasks not all up yet
            counters = {}
        if until(counters) or time.monotonic() > deadline:
            return counters
        time.sleep(1)


def in_flight_job(name: str, cluster: FlinkCluster) -> FlinkCorrelator:
    """The variant of our job named in `--in-flight-systems`: one TaskManager of one slot."""
    job = SYSTEMS[name](cluster) if name in SYSTEMS else None
    if not isinstance(job, FlinkCorrelator) or job.parallelism != 1:
        raise SystemExit(f"--in-flight-systems: {name} is not our job at parallelism 1")
    return job


def sync_ms(cluster: FlinkCluster, job_id: str, checkpoint: dict) -> float:
    """The longest synchronous part of a checkpoint over the job's subtasks: the time a
    task stops processing to take it (timers on the heap are written there, in full).
    Flink keeps the details of the last 10 checkpoints only (`web.checkpoints.history`)."""
    base = f"/jobs/{job_id}/checkpoints/details/{checkpoint['id']}"
    longest = 0.0
    for vertex in cluster.api.rest(base)["tasks"]:
        for subtask in cluster.api.rest(f"{base}/subtasks/{vertex}")["subtasks"]:
            longest = max(longest, float(subtask.get("checkpoint", {}).get("sync", 0)))
    return longest


def measure_in_flight(
    cluster: FlinkCluster, broker: KafkaBroker, settings: Settings, count: int, name: str
) -> dict:
    """RSS and checkpointed state with `count` transactions held open, then after all close.

    Every transaction gets all types but the last, with a timeout far beyond the run; then
    the last types arrive, every transaction completes, and the closed markers are dropped
    after a short retention. What remains is the memory the job does not give back.
    """
    retention_s = 10.0
    config = fresh_config(broker, settings, timeout_s=3600.0, closed_retention_s=retention_s)
    held, last = config.types[:-1], config.types[-1:]
    tag = f"{config.group_id}-held"
    job = in_flight_job(name, cluster)
    print(f"-- in flight: {count:,} transactions, {job.name}", flush=True)
    with preparing(job):  # fresh TaskManagers, as for every throughput run
        workload.preload(broker.bootstrap, config.topic_prefix, held, count, tag)
    idle = rss_bytes(cluster.running_taskmanagers())
    job.start(config)
    try:
        wait_s = 120 + count * len(held) / 1000
        counters = wait_for_counters(
            cluster, job.job_id, lambda m: m.get(IN_FLIGHT) == count, wait_s
        )
        if counters.get(IN_FLIGHT) != count:
            raise RuntimeError(f"only {counters.get(IN_FLIGHT)} in flight")
        holding = _checkpoint_after(cluster, job.job_id, time.time() * 1000)
        holding_sync_ms = sync_ms(cluster, job.job_id, holding)  # while its details are kept
        rss = rss_bytes(cluster.running_taskmanagers())
        drain_started = time.monotonic()
        workload.preload(broker.bootstrap, config.topic_prefix, last, count, tag)
        counters = wait_for_counters(
            cluster, job.job_id, lambda m: m.get(AGGREGATED) == count, wait_s
        )
        drain_s = time.monotonic() - drain_started
        counters = wait_for_counters(
            cluster,
            job.job_id,
            lambda m: m.get(AGGREGATED) == count and m.get(CLOSED_MARKERS) == 0,
            wait_s + retention_s,
        )
        after = _checkpoint_after(cluster, job.job_id, time.time() * 1000)
        rss_after = rss_bytes(cluster.running_taskmanagers())
        summary = cluster.api.rest(f"/jobs/{job.job_id}/checkpoints")["summary"]
    finally:
        job.stop()
    return {
        "system": job.name,
        "transactions": count,
        "idle_rss_mb": idle / MB,  # the same TaskManagers before the job started
        "rss_mb": rss / MB,
        "state_mb": holding["state_size"] / MB,
        "state_bytes_per_tx": holding["state_size"] / count,
        "checkpoint_ms": holding.get("end_to_end_duration"),
        "checkpoint_sync_ms": holding_sync_ms,  # of the same checkpoint, the longest subtask
        "checkpoint_max_ms": summary["end_to_end_duration"]["max"],  # of the job's whole run
        "drain_s": drain_s,  # sending the last parts until the job counted all aggregated
        "rss_after_mb": rss_after / MB,
        "state_after_mb": after["state_size"] / MB,
        "checkpoint_after_ms": after.get("end_to_end_duration"),
        "aggregated_after": counters.get(AGGREGATED),
        "in_flight_after": counters.get(IN_FLIGHT),
    }


def run(settings: Settings, broker: KafkaBroker, cluster: FlinkCluster) -> dict:
    """Every measurement on an already running broker and cluster; returns the results."""
    names = settings.systems
    if "faust" in names and not Faust.available():
        print("-- faust-streaming venv missing (bench/peers/faust_venv.sh): skipped", flush=True)
        names = tuple(n for n in names if n != "faust")
    example = plan_backlog(settings, JobConfig())
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": report.machine(),
        "transactions": settings.transactions,
        "incomplete_transactions": example.incomplete,
        "records": example.records,
        "malformed_records": len(example.malformed),
        "types": list(JobConfig().types),
        "timeout_s": settings.timeout_s,
        "out_of_orderness_s": settings.out_of_orderness_s,
        "expiry_grace_s": settings.expiry_grace_s,
        "idleness_s": settings.idleness_s,
        "repeat": settings.repeat,
        "loads": list(settings.loads),
        "systems": [],
        "in_flight": [],
    }
    systems = make_systems(names, cluster)
    for name in settings.in_flight_systems:
        in_flight_job(name, cluster)  # a name that is not our job fails now, not at the end
    runs: list[list[dict]] = [[] for _ in systems]
    for attempt in range(1, settings.repeat + 1):  # systems take turns
        for system, done in zip(systems, runs, strict=True):
            done.append(run_system(system, broker, settings, attempt))
    for system, done in zip(systems, runs, strict=True):
        combined = figures.combine(done, settings.loads)
        middle = figures.median_run(done)
        results["systems"].append(
            {
                "name": system.name,
                **combined,
                "timeline": middle["timeline"] if middle else [],
                "runs": done,
            }
        )
    for name in settings.in_flight_systems:  # each system on the same counts in turn
        for count in settings.in_flight:
            results["in_flight"].append(measure_in_flight(cluster, broker, settings, count, name))
    return results


@contextlib.contextmanager
def bench_services(
    taskmanagers: int = 2, settings: dict[str, str] | None = None
) -> Iterator[tuple[KafkaBroker, FlinkCluster]]:
    """The benchmark's own broker and cluster (metrics refreshed every second, not 10; any
    other cluster `settings`), started from empty and stopped at the end."""
    broker = KafkaBroker(port=29092, controller_port=29093, heap="1g")
    cluster = FlinkCluster(
        rest_port=28081,
        rpc_port=26123,
        taskmanagers=taskmanagers,
        settings={"metrics.fetcher.update-interval": "1000", **(settings or {})},
    )
    try:
        for service in (cluster, broker):
            service.stop()
            shutil.rmtree(service.home, ignore_errors=True)
        broker.start()
        cluster.start()
        yield broker, cluster
    finally:
        cluster.stop()
        broker.stop()


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    with bench_services() as (broker, cluster):
        results = run(settings, broker, cluster)
    paths = report.write(results, settings.out)
    print(report.markdown(results))
    print("written: " + ", ".join(str(p) for p in paths), file=sys.stderr)


if __name__ == "__main__":
    main()
