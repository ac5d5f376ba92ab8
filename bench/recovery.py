"""`python -m bench recovery`: how long the correlator is away when a TaskManager dies.

    python -m bench recovery                      # every scenario, 3 times each
    python -m bench recovery --scenarios spare --repeat 5 --rate 4000

Under a steady load (`--rate` records/s, about half of the shipped job's steady rate in
docs/benchmark.md) the TaskManager that runs the job gets `kill -9`, as a crash would, and the
platform heals itself as `stack up` sets it up: the supervisor (`stack supervise`) starts a
replacement and Flink restores the job from its last checkpoint. No command is run. Measured
from the kill, on this machine's one clock:

- noticed: the JobManager put the job in RESTARTING (its own timestamp);
- running: every task RUNNING again (polled every 0.2 s);
- first output: the first output the job emitted after the kill (its `emitted_at`) visible to
  a `read_committed` consumer, which with exactly-once waits for the first checkpoint after
  the restore.

Scenarios, each on a cluster of its own (the benchmark's ports, 28081 and 29092):

- `spare`: two TaskManagers, the job on one: Flink restarts it on the other, already
  registered, while the supervisor replaces the dead one;
- `no-spare`: one TaskManager, as when every TaskManager runs a job (the local platform runs
  the writer on the second): the job waits for the supervisor's replacement to register;
- `cluster`: two TaskManagers, both killed: the whole-cluster restart.

Results: `.bench/recovery.json` and `.bench/recovery.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaConsumer

from bench import workload
from bench.run import Settings, bench_services, fresh_config
from bench.watch import partitions_of
from stack.flink import FlinkCluster
from stack.kafka import KafkaBroker
from stack.paths import ROOT
from stack.submit import submit_correlator

# scenario -> (TaskManagers of the cluster, kill them all)
SCENARIOS = {"spare": (2, False), "no-spare": (1, False), "cluster": (2, True)}
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
                    if json.loads(record.value).get("emitted_at", 0) > self.after_ms:
                        self.seen_at = now
                        break
        consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


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
    _, kill_all = SCENARIOS[scenario]
    config = fresh_config(broker, Settings())
    job_id = submit_correlator(cluster, config, options=options)
    sender = workload.send_paced(
        broker.bootstrap, config.topic_prefix, config.types, rate, 600, f"{config.group_id}-r"
    )
    watcher = FirstOutput(broker.bootstrap, config.aggregated_topic).start()
    try:
        wait_for(lambda: all_running(cluster, job_id), 120, "the job running")
        wait_for(
            lambda: completed_checkpoints(cluster, job_id) >= WARM_UP_CHECKPOINTS,
            120,
            f"{WARM_UP_CHECKPOINTS} checkpoints",
        )
        victims = cluster.running_taskmanagers() if kill_all else [cluster.taskmanager_of(job_id)]
        killed_at = time.time()
        watcher.after_ms = killed_at * 1000
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        result = {"scenario": scenario, "run": run, "killed": len(victims)}
        wait_for(
            lambda: (
                (cluster.api.rest(f"/jobs/{job_id}", quiet=True) or {})
                .get("timestamps", {})
                .get("RESTARTING", 0)
                > killed_at * 1000
            ),
            120,
            "the restart",
        )
        noticed = cluster.api.rest(f"/jobs/{job_id}")["timestamps"]["RESTARTING"] / 1000
        wait_for(lambda: all_running(cluster, job_id), 180, "the restored job running")
        running = time.time()
        wait_for(lambda: watcher.seen_at, 180, "an output after the kill")
        result.update(
            noticed_s=noticed - killed_at,
            running_s=running - killed_at,
            first_output_s=watcher.seen_at - killed_at,
        )
        print(
            f"   {scenario} run {run}: noticed {result['noticed_s']:.1f} s, running "
            f"{result['running_s']:.1f} s, first output {result['first_output_s']:.1f} s",
            flush=True,
        )
        return result
    finally:
        watcher.stop()
        sender.terminate()
        cluster.api.cancel(job_id)
        taskmanagers, _ = SCENARIOS[scenario]
        cluster.wait_for_taskmanagers(taskmanagers, timeout=120)


def summary(runs: list[dict]) -> dict:
    return {
        key: {"median": statistics.median(v), "min": min(v), "max": max(v)}
        for key in ("noticed_s", "running_s", "first_output_s")
        if (v := [r[key] for r in runs if key in r])
    }


def markdown(results: dict) -> str:
    lines = [
        f"Recovery from `kill -9` of the job's TaskManager at {results['rate']:,.0f} records/s, "
        f"{results['repeat']} runs each, median (min..max), seconds from the kill"
        + "".join(f", -D {k}={v}" for k, v in results.get("options", {}).items())
        + ":",
        "",
        "| scenario | noticed (RESTARTING) | every task running | first output visible |",
        "|---|---:|---:|---:|",
    ]
    for scenario, figures in results["scenarios"].items():
        cells = [_cell(figures.get(k)) for k in ("noticed_s", "running_s", "first_output_s")]
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
    parser.add_argument("--out", type=Path, default=ROOT / ".bench")
    args = parser.parse_args(argv)
    options = dict(o.split("=", 1) for o in args.option)
    results: dict = {
        "rate": args.rate,
        "repeat": args.repeat,
        "options": options,
        "scenarios": {},
        "runs": [],
    }
    for scenario in args.scenarios.split(","):
        taskmanagers, _ = SCENARIOS[scenario]
        with bench_services(taskmanagers) as (broker, cluster):
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
