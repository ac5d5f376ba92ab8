"""The benchmark: our Flink job against its peers on the same records, in one run.

For each system: fresh topics, N transactions pre-loaded, the system started, its outputs
watched until all N are visible to a `read_committed` consumer (throughput and CPU over the
steady 10%-90% window), then records sent at 50% and 90% of that system's own maximum rate
(completion latency). Then our job alone with transactions held in flight (TaskManager RSS
and checkpointed state, before and after they all close).

    python -m bench                      # the full run, its own Kafka and Flink cluster
    python -m bench --transactions 500 --latency-seconds 3 --in-flight 100   # a smoke run
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench import figures, report, workload
from bench.procs import cpu_seconds, rss_bytes
from bench.systems import DictLoop, Faust, FlinkCorrelator, FlinkSqlCopy, System
from bench.watch import Watcher
from job.config import JobConfig
from stack.flink import FlinkCluster
from stack.kafka import KafkaBroker, create_job_topics
from stack.paths import ROOT

MB = 2**20


@dataclass
class Settings:
    transactions: int = 50_000
    latency_seconds: float = 20.0
    loads: tuple[int, ...] = (50, 90)
    in_flight: tuple[int, ...] = (10_000, 100_000)
    settle_s: float = 15.0  # pause between the backlog and the latency runs
    timeout_s: float = 60.0  # every system's transaction timeout
    checkpoint_interval_s: float = 0.0  # 0: flink-conf/config.yaml's (5 s)
    systems: tuple[str, ...] = ("ours", "ours-heap-timers", "ours-p2", "copy", "faust", "dict")
    out: Path = ROOT / ".bench"


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--transactions",
        type=int,
        default=defaults.transactions,
        help="transactions pre-loaded per throughput run (5 records each)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=defaults.latency_seconds,
        help="how long records are sent at each load level",
    )
    parser.add_argument(
        "--loads", default="50,90", help="load levels for latency, percent of each system's maximum"
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=defaults.settle_s,
        help="pause after the backlog before the latency runs (compactions, checkpoints)",
    )
    parser.add_argument(
        "--in-flight",
        default="10000,100000",
        help="transactions held open for the memory runs ('' to skip)",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=defaults.timeout_s,
        help="transaction timeout of every system",
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
        help="which to run: ours, ours-heap-timers, ours-p2, ours-process, "
        "ours-small-bundles, copy, faust, dict",
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
    return Settings(
        transactions=args.transactions,
        latency_seconds=args.latency_seconds,
        loads=tuple(dict.fromkeys(int(x) for x in args.loads.split(",") if x)),  # each once
        settle_s=args.settle_s,
        in_flight=tuple(int(x) for x in args.in_flight.split(",") if x),
        timeout_s=args.timeout_s,
        checkpoint_interval_s=args.checkpoint_interval_s,
        systems=tuple(args.systems.split(",")),
        out=args.out,
    )


def make_systems(names: tuple[str, ...], cluster: FlinkCluster) -> list[System]:
    """The systems by name, ours first (the ratios are ours against each of the others)."""
    known: dict[str, Callable[[], System]] = {
        "ours": lambda: FlinkCorrelator(cluster),
        "ours-p2": lambda: FlinkCorrelator(cluster, parallelism=2),
        "ours-process": lambda: FlinkCorrelator(
            cluster,
            options={"python.execution-mode": "process"},
            label="Flink job, process mode",
        ),
        "ours-small-bundles": lambda: FlinkCorrelator(
            cluster,
            options={
                "python.fn-execution.bundle.size": "1000",
                "python.fn-execution.bundle.time": "100",
            },
            label="Flink job, bundles of 1,000 / 100 ms",
        ),
        "ours-heap-timers": lambda: FlinkCorrelator(
            cluster,
            options={"state.backend.rocksdb.timer-service.factory": "HEAP"},
            label="Flink job, timers on the heap",
        ),
        "copy": lambda: FlinkSqlCopy(cluster),
        "faust": Faust,
        "dict": DictLoop,
    }
    unknown = set(names) - set(known)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")
    return [known[n]() for n in names]


def fresh_config(broker: KafkaBroker, settings: Settings, **overrides) -> JobConfig:
    """A configuration on topics of their own, so no run sees another's records."""
    tag = "b" + uuid.uuid4().hex[:8]
    config = JobConfig(bootstrap_servers=broker.bootstrap).tagged(
        tag,
        job_name=f"bench-{tag}",
        timeout_s=settings.timeout_s,
        checkpoint_interval_s=settings.checkpoint_interval_s,
    )
    config = replace(config, **overrides)
    # Latency counts from when the broker appended the last part, not from when the client
    # queued it: a busy producer must not add its own queueing to the system's latency.
    broker.create_topics(config.input_topics, configs={"message.timestamp.type": "LogAppendTime"})
    create_job_topics(broker, config)
    return config


def run_system(system: System, broker: KafkaBroker, settings: Settings) -> dict:
    config = fresh_config(broker, settings)
    n = settings.transactions
    tag = config.group_id
    print(f"-- {system.name}: pre-loading {n:,} transactions", flush=True)
    workload.preload(broker.bootstrap, config.topic_prefix, config.types, n, f"{tag}-load")
    records = n * len(config.types)
    expected = records // system.records_per_output
    watcher = Watcher(
        broker.bootstrap,
        [config.aggregated_topic],
        cpu=lambda: cpu_seconds(system.pids()),
        progress=system.progress,
    )
    result = {"name": system.name, "latency": {}, "timeline": []}
    watcher.start()
    # Sampled before the start: a fast system may be done before its start call returns.
    before = watcher.mark()
    system.start(config)
    try:
        started = watcher.mark()
        done = watcher.wait_for(expected, 120 + records / 500, failure=system.failure)
        finished = watcher.mark()  # the moment all outputs were seen
        samples = watcher.samples[before:]
        per_output = system.records_per_output
        measured = {
            **figures.throughput(samples, records, per_output),
            **figures.whole_run(
                *(watcher.samples[i] for i in (before, started, finished)), records
            ),
        }
        result.update(
            outputs=watcher.count,
            expected_outputs=expected,
            throughput=measured,
            timeline=figures.timeline(samples, per_output),
        )
        rate = figures.max_rate(measured)
        print(
            f"   {watcher.count:,}/{expected:,} outputs; records/s: steady "
            f"{measured['records_per_s'] or 0:,.0f}, whole run "
            f"{measured['whole_run_records_per_s'] or 0:,.0f}",
            flush=True,
        )
        if done and rate and settings.loads:
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
    expected = count * len(config.types) // system.records_per_output
    started = time.monotonic()
    sender = workload.send_paced(
        broker.bootstrap, config.topic_prefix, config.types, rate, settings.latency_seconds, tag
    )
    sender.join()
    sent_s = time.monotonic() - started
    watcher.wait_for(0, timeout=60 + settings.timeout_s, latencies=expected)
    summary = figures.latency_summary(list(latencies))
    processing = list(watcher.processing)
    summary.update(
        processing_p50_ms=figures.percentile(processing, 50),
        processing_p99_ms=figures.percentile(processing, 99),
        target_rate=rate,
        sent_rate=count * len(config.types) / sent_s,
        expected=expected,
    )
    print(
        f"   at {rate:,.0f} records/s (sent {summary['sent_rate']:,.0f}/s): "
        f"p50 {summary['p50_ms'] or 0:,.0f} ms, p99 {summary['p99_ms'] or 0:,.0f} ms "
        f"(until emitted: p50 {summary['processing_p50_ms'] or 0:,.0f} ms, "
        f"p99 {summary['processing_p99_ms'] or 0:,.0f} ms) "
        f"({summary['count']:,}/{expected:,} seen)",
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


def _correlator_metrics(cluster: FlinkCluster, job_id: str, until, timeout: float) -> dict:
    return cluster.api.operator_metrics(
        job_id, "correlate", "correlate_transactions.", until=until, timeout=timeout
    )


def measure_in_flight(
    cluster: FlinkCluster, broker: KafkaBroker, settings: Settings, count: int
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
    print(f"-- in flight: {count:,} transactions", flush=True)
    workload.preload(broker.bootstrap, config.topic_prefix, held, count, tag)
    job = FlinkCorrelator(cluster)
    job.start(config)
    try:
        wait_s = 120 + count * len(held) / 1000
        metrics = _correlator_metrics(
            cluster, job.job_id, lambda m: m.get("transactions_in_flight") == count, wait_s
        )
        if metrics.get("transactions_in_flight") != count:
            raise RuntimeError(f"only {metrics.get('transactions_in_flight')} in flight")
        holding = _checkpoint_after(cluster, job.job_id, time.time() * 1000)
        rss = rss_bytes(cluster.running_taskmanagers())
        workload.preload(broker.bootstrap, config.topic_prefix, last, count, tag)
        metrics = _correlator_metrics(
            cluster,
            job.job_id,
            lambda m: m.get("aggregated") == count and m.get("closed_markers") == 0,
            wait_s + retention_s,
        )
        after = _checkpoint_after(cluster, job.job_id, time.time() * 1000)
        rss_after = rss_bytes(cluster.running_taskmanagers())
    finally:
        job.stop()
    return {
        "transactions": count,
        "rss_mb": rss / MB,
        "state_mb": holding["state_size"] / MB,
        "state_bytes_per_tx": holding["state_size"] / count,
        "rss_after_mb": rss_after / MB,
        "state_after_mb": after["state_size"] / MB,
        "aggregated_after": metrics.get("aggregated"),
        "in_flight_after": metrics.get("transactions_in_flight"),
    }


def run(settings: Settings, broker: KafkaBroker, cluster: FlinkCluster) -> dict:
    """Every measurement on an already running broker and cluster; returns the results."""
    names = settings.systems
    if "faust" in names and not Faust.available():
        print("-- faust-streaming venv missing (bench/peers/faust_venv.sh): skipped", flush=True)
        names = tuple(n for n in names if n != "faust")
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": report.machine(),
        "transactions": settings.transactions,
        "types": list(JobConfig().types),
        "timeout_s": settings.timeout_s,
        "loads": list(settings.loads),
        "systems": [],
        "in_flight": [],
    }
    for system in make_systems(names, cluster):
        results["systems"].append(run_system(system, broker, settings))
    if settings.in_flight:
        cluster.restart_taskmanagers()
        results["idle_rss_mb"] = rss_bytes(cluster.running_taskmanagers()) / MB
        for count in settings.in_flight:
            results["in_flight"].append(measure_in_flight(cluster, broker, settings, count))
    return results


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    broker = KafkaBroker(port=29092, controller_port=29093, heap="1g")
    # Metrics refreshed every second instead of 10, for the in-flight runs.
    cluster = FlinkCluster(
        rest_port=28081,
        rpc_port=26123,
        taskmanagers=2,
        settings={"metrics.fetcher.update-interval": "1000"},
    )
    for service in (cluster, broker):
        service.stop()
        shutil.rmtree(service.home, ignore_errors=True)
    broker.start()
    cluster.start()
    try:
        results = run(settings, broker, cluster)
    finally:
        cluster.stop()
        broker.stop()
    paths = report.write(results, settings.out)
    print(report.markdown(results))
    print("written: " + ", ".join(str(p) for p in paths), file=sys.stderr)


if __name__ == "__main__":
    main()
