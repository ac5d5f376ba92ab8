"""`python -m bench recovery`: how long the correlator is away when a TaskManager dies.

    python -m bench recovery                      # every scenario, 3 times each
    python -m bench recovery --scenarios spare --repeat 5 --rate 4000

Under a steady load (`--rate` records/s, about half of the shipped job's steady rate in
docs/benchmark.md) the TaskManager that runs the job gets `kill -9`, as a crash would, and the
platform heals itself as `stack up` sets it up: the supervisor (`stack supervise`) starts a
replacement and Flink restores the job from its last checkpoint. No command is run. Measured
from the kill, on this machine's one clock:

- noticed: the JobManager put the job in RESTARTING (its own timestamp);
- running: every task RUNNING again (the JobManager's timestamps, once polling sees it);
- first output: the first output the job emitted after the kill (its `emitted_at`) visible to
  a `read_committed` consumer, which with exactly-once waits for the first checkpoint after
  the restore.

Scenarios, each on a cluster of its own (the benchmark's ports, 28081 and 29092):

- `spare`: two TaskManagers, the job on one: Flink restarts it on the other, already
  registered, while the supervisor replaces the dead one;
- `warm-spare`: as `spare`, but our job ran on the spare (on other topics) and was cancelled
  before the kill: its embedded interpreter has imported PyFlink and the job already;
- `no-spare`: one TaskManager, as when every TaskManager runs a job (the local platform runs
  the writer on the second): the job waits for the supervisor's replacement to register;
- `cluster`: two TaskManagers, both killed: the whole-cluster restart.

And the start-up the same way, on two TaskManagers under the same load, from the moment the
`flink run` command starts (noticed: -):

- `submit`: our job submitted, reading from the earliest offsets of its fresh topics;
- `copy`: the SQL copy (bench/peers/sql_copy.py) submitted the same way: the engine's own
  start-up, the yardstick of issue 36's goal (ours at most 3 s more);
- `savepoint`: our job stopped with a savepoint after its warm-up, then resubmitted from it
  (an upgrade's or a redeploy's start-up); first output: the first emitted after the resume.

Every run starts on fresh TaskManagers: in thread mode a TaskManager keeps its embedded
interpreter, and one that has run the job already imports nothing on a restore or a start,
so which TaskManager Flink picks would otherwise decide the figure (`warm-spare` measures
that on purpose).

`--option K=V` gives Flink settings to the job alone (restart strategy, checkpoint interval,
local recovery); `--cluster-option K=V` to the cluster (heartbeats).

Results: `.bench/recovery.json` and `.bench/recovery.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer

from bench import workload
from bench.run import SYSTEMS, Settings, bench_services, fresh_config
from bench.watch import partitions_of
from job.config import JobConfig
from stack.flink import FlinkCluster
from stack.kafka import KafkaBroker
from stack.paths import ROOT
from stack.submit import submit_correlator

# scenario -> TaskManagers of its cluster; "cluster" kills them all, the others the job's
KILLS = {"spare": 2, "warm-spare": 2, "no-spare": 1, "cluster": 2}
STARTS = {"submit": 2, "copy": 2, "savepoint": 2}
SCENARIOS = {**KILLS, **STARTS}
WARM_UP_CHECKPOINTS = 2  # completed checkpoints before the kill: the job is in its stride


@dataclass
class FirstOutput:
    """Watches the job's aggregated topic as `read_committed` consumers see it, from its end,
    for the first output emitted after a moment (epoch ms)."""

    bootstrap: str
    topic: str
    after_ms: float = float("inf")
    seen_at: float | None = None  # epoch seconds
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> FirstOutput:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="first-output", daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise TimeoutError(f"no partitions of {self.topic} after 60 s")
        return self

    def _run(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )
        partitions = partitions_of(consumer, [self.topic], timeout=60)
        consumer.assign(partitions)
        consumer.seek_to_end(*partitions)
        self._ready.set()
        while not self._stop.is_set() and self.seen_at is None:
            for records in consumer.poll(timeout_ms=100).values():
                now = time.time()
                for record in records:
                    if self.after_ms == -math.inf or _emitted_at(record.value) > self.after_ms:
                        self.seen_at = now
                        break
        consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _emitted_at(value: bytes) -> float:
    try:
        return float(json.loads(value).get("emitted_at", 0))
    except (ValueError, AttributeError, TypeError):
        return 0.0


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        time.sleep(interval)


def completed_checkpoints(cluster: FlinkCluster, job_id: str) -> int:
    stats = cluster.api.rest(f"/jobs/{job_id}/checkpoints", quiet=True) or {}
    return stats.get("counts", {}).get("completed", 0)


def all_running(cluster: FlinkCluster, job_id: str) -> bool:
    job = cluster.api.rest(f"/jobs/{job_id}", quiet=True) or {}
    counts = job.get("status-counts", {})
    return job.get("state") == "RUNNING" and counts.get("RUNNING", 0) == sum(counts.values()) > 0


@contextlib.contextmanager
def under_load(broker: KafkaBroker, rate: float) -> Iterator[tuple[JobConfig, FirstOutput]]:
    """Fresh topics sent `rate` records/s, and a watcher of their first output."""
    config = fresh_config(broker, Settings())
    sender = workload.send_paced(
        broker.bootstrap, config.topic_prefix, config.types, rate, 600, f"{config.group_id}-r"
    )
    try:
        watcher = FirstOutput(broker.bootstrap, config.aggregated_topic).start()
        try:
            yield config, watcher
        finally:
            watcher.stop()
    finally:
        sender.terminate()


def one_recovery(
    scenario: str,
    broker: KafkaBroker,
    cluster: FlinkCluster,
    rate: float,
    run: int,
    options: dict[str, str] | None = None,
) -> dict:
    """Submits the job (with Flink `options` for it alone), loads it at `rate`, kills, and
    times the way back."""
    if scenario in STARTS:
        return one_start(scenario, broker, cluster, rate, run, options)
    cluster.restart_taskmanagers()  # every run's spare as cold as a new one, unless warmed
    with under_load(broker, rate) as (config, watcher):
        job_id = submit_correlator(cluster, config, options=options)
        try:
            if scenario == "warm-spare":
                warm_up_spare(broker, cluster)
            _warmed_up(cluster, job_id)
            kill_all = scenario == "cluster"
            victims = (
                cluster.running_taskmanagers() if kill_all else [cluster.taskmanager_of(job_id)]
            )
            killed_at = time.time()
            watcher.after_ms = killed_at * 1000
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: _restarted_at(cluster, job_id) > killed_at, 120, "the restart")
            noticed = _restarted_at(cluster, job_id)
            wait_for(lambda: all_running(cluster, job_id), 180, "the restored job running")
            running = running_since(cluster, job_id)
            wait_for(lambda: watcher.seen_at, 180, "an output after the kill")
            return _printed(
                {"scenario": scenario, "run": run, "killed": len(victims)},
                killed_at,
                noticed_s=noticed,
                running_s=running,
                first_output_s=watcher.seen_at,
            )
        finally:
            cluster.api.cancel(job_id)
            cluster.wait_for_taskmanagers(SCENARIOS[scenario], timeout=120)


def one_start(
    scenario: str,
    broker: KafkaBroker,
    cluster: FlinkCluster,
    rate: float,
    run: int,
    options: dict[str, str] | None = None,
) -> dict:
    """Times a start-up under load at `rate`, from the moment `flink run` starts: submitted
    (the command returned), every task running, first output visible."""
    with under_load(broker, rate) as (config, watcher):
        job_id, savepoint = None, None
        try:
            if scenario == "savepoint":
                job_id = submit_correlator(cluster, config, options=options)
                _warmed_up(cluster, job_id)
                savepoint = cluster.api.stop_with_savepoint(job_id, cluster.savepoints)
            # Onto fresh TaskManagers, as a deploy on new ones or an upgrade (`stack submit`
            # restarts them for changed code) starts.
            cluster.restart_taskmanagers()
            started = time.time()
            watcher.after_ms = started * 1000 if savepoint else -math.inf
            if scenario == "copy":
                copy = SYSTEMS["copy"](cluster)
                copy.options = dict(options or {})  # the same job options as ours
                job_id = copy.submit(config)
            else:
                job_id = submit_correlator(cluster, config, restore_from=savepoint, options=options)
            submitted = time.time()
            wait_for(lambda: all_running(cluster, job_id), 180, "the job running")
            running = running_since(cluster, job_id)
            wait_for(lambda: watcher.seen_at, 180, "a first output")
            return _printed(
                {"scenario": scenario, "run": run},
                started,
                submitted_s=submitted,
                running_s=running,
                first_output_s=watcher.seen_at,
            )
        finally:
            if job_id:
                cluster.api.cancel_if_running(job_id)


def warm_up_spare(broker: KafkaBroker, cluster: FlinkCluster) -> None:
    """Runs our job on the spare TaskManager until every task runs, then cancels it: the
    spare's embedded interpreter has then imported PyFlink and the job, as a TaskManager
    that runs the writer has (in thread mode modules stay imported for the process's life)."""
    job_id = submit_correlator(cluster, fresh_config(broker, Settings()))
    try:
        wait_for(lambda: all_running(cluster, job_id), 120, "the warm-up job running")
    finally:
        cluster.api.cancel(job_id)


def running_since(cluster: FlinkCluster, job_id: str) -> float:
    """When the job's last task switched to RUNNING (epoch s, the JobManager's own
    timestamps): the REST API's job view is cached for `web.refresh-interval` (3 s), so
    the moment polling first sees every task running is up to 3 s late."""
    job = cluster.api.rest(f"/jobs/{job_id}")
    return (
        max(
            subtask["timestamps"]["RUNNING"]
            for vertex in job["vertices"]
            for subtask in cluster.api.rest(f"/jobs/{job_id}/vertices/{vertex['id']}/subtasktimes")[
                "subtasks"
            ]
        )
        / 1000
    )


def _restarted_at(cluster: FlinkCluster, job_id: str) -> float:
    """When the JobManager last put the job in RESTARTING (epoch s, its own clock)."""
    job = cluster.api.rest(f"/jobs/{job_id}", quiet=True) or {}
    return job.get("timestamps", {}).get("RESTARTING", 0) / 1000


def _printed(result: dict, since: float, **moments: float) -> dict:
    """`result` with each moment as seconds since `since`, printed."""
    result.update({k: at - since for k, at in moments.items()})
    shown = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f} s"
                      for k, v in result.items() if k in FIGURES)  # fmt: skip
    print(f"   {result['scenario']} run {result['run']}: {shown}", flush=True)
    return result


def _warmed_up(cluster: FlinkCluster, job_id: str) -> None:
    wait_for(lambda: all_running(cluster, job_id), 120, "the job running")
    wait_for(
        lambda: completed_checkpoints(cluster, job_id) >= WARM_UP_CHECKPOINTS,
        120,
        f"{WARM_UP_CHECKPOINTS} checkpoints",
    )


FIGURES = ("noticed_s", "submitted_s", "running_s", "first_output_s")


def summary(runs: list[dict]) -> dict:
    return {
        key: {"median": statistics.median(v), "min": min(v), "max": max(v)}
        for key in FIGURES
        if (v := [r[key] for r in runs if key in r])
    }


def markdown(results: dict) -> str:
    lines = [
        f"Recovery from `kill -9` of the job's TaskManager, and start-up, at "
        f"{results['rate']:,.0f} records/s, {results['repeat']} runs each, median (min..max), "
        "seconds from the kill or from the `flink run` command"
        + "".join(f", job -D {k}={v}" for k, v in results.get("options", {}).items())
        + "".join(f", cluster -D {k}={v}" for k, v in results.get("cluster", {}).items())
        + ":",
        "",
        "| scenario | noticed (RESTARTING) | submitted | every task running "
        "| first output visible |",
        "|---|---:|---:|---:|---:|",
    ]
    for scenario, figures in results["scenarios"].items():
        cells = [_cell(figures.get(k)) for k in FIGURES]
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(figure: dict | None) -> str:
    if not figure:
        return "-"
    if figure["min"] == figure["max"]:
        return f"{figure['median']:.1f}"
    return f"{figure['median']:.1f} ({figure['min']:.1f}..{figure['max']:.1f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench recovery", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=", ".join(SCENARIOS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=4000.0, help="records/s sent meanwhile")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Flink setting for the job alone (`-D`), e.g. "
        "restart-strategy.exponential-delay.initial-backoff=100ms; repeatable",
    )
    parser.add_argument(
        "--cluster-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Flink setting for the benchmark's cluster, e.g. heartbeat.interval=1000",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".bench")
    args = parser.parse_args(argv)
    options = dict(o.split("=", 1) for o in args.option)
    cluster_options = dict(o.split("=", 1) for o in args.cluster_option)
    results: dict = {
        "rate": args.rate,
        "repeat": args.repeat,
        "options": options,
        "cluster": cluster_options,
        "scenarios": {},
        "runs": [],
    }
    for scenario in args.scenarios.split(","):
        with bench_services(SCENARIOS[scenario], cluster_options) as (broker, cluster):
            cluster.start_supervisor()
            runs = [
                one_recovery(scenario, broker, cluster, args.rate, n + 1, options)
                for n in range(args.repeat)
            ]
        results["runs"] += runs
        results["scenarios"][scenario] = summary(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recovery.json").write_text(json.dumps(results, indent=2))
    (args.out / "recovery.md").write_text(markdown(results))
    print(markdown(results))
