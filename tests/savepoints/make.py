"""`python -m tests.savepoints.make COMMIT`: a savepoint of a released version, for the
compatibility test (`tests/test_savepoint_compat.py`).

It runs the job of COMMIT (exported with `git archive`, so the working tree is untouched)
on a broker and a cluster of its own (ports 39092 and 38081), sends it `scenario.before()`,
waits until the transaction that closes there is visible downstream, stops the job with a
savepoint and keeps the savepoint, and the records it saw, in `tests/savepoints/<COMMIT>/`.
Only the job comes from COMMIT: the TaskManager and `flink run` import its `job/` first
(PYTHONPATH), and the cluster is this checkout's `stack`. The manifest also records COMMIT's
state layout (`layout.py`), which the compatibility test compares with the current one.

    python -m tests.savepoints.make COMMIT                 # a fixture of COMMIT
    python -m tests.savepoints.make --layout-only VERSION  # record a fixture's layout
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from kafka import KafkaProducer

from generator.outputs import read_topics
from job.config import JobConfig
from stack.flink import FlinkCluster
from stack.kafka import KafkaBroker, create_job_topics
from stack.paths import CACHE, FLINK_HOME, PYTHON, ROOT
from tests.savepoints import layout, scenario

HERE = Path(__file__).resolve().parent


def export(commit: str, into: Path) -> Path:
    """The repository at `commit`, as files (with this checkout's downloaded jars)."""
    layout.export(commit, into)
    (into / ".cache").symlink_to(CACHE)
    return into


def fixture_config(broker: KafkaBroker, version: str) -> JobConfig:
    """The released job's configuration: topics named after the version, timers far away."""
    return JobConfig(bootstrap_servers=broker.bootstrap).tagged(
        scenario.tag(version),
        timeout_s=float(scenario.TEN_YEARS_S),
        closed_retention_s=float(scenario.TEN_YEARS_S),
        checkpoint_interval_s=2.0,
    )


def send(bootstrap: str, config: JobConfig, records: list[scenario.Sent]) -> None:
    with KafkaProducer(bootstrap_servers=bootstrap, acks="all") as producer:
        sent = [
            producer.send(
                config.topic_of(r.type),
                key=r.key.encode(),
                value=r.value.encode(),
                partition=r.partition,
            )
            for r in records
        ]
        for future in sent:
            future.get(timeout=30)  # raises if the broker refused a record


def record_layout(version: str) -> Path:
    """Adds the layout of a stored fixture's version to its manifest."""
    path = HERE / version / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["layout"] = layout.describe_commit(manifest["commit"])
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def run_released(code: Path, cluster: FlinkCluster, config: JobConfig) -> str:
    """`flink run` of the released job; its job id."""
    env = {**cluster.env(), "PYTHONPATH": str(code)}
    command = [
        "bash", str(FLINK_HOME / "bin" / "flink"), "run", "-d",
        "-D", f"rest.port={cluster.rest_port}", "-D", "rest.address=127.0.0.1",
        "-pyclientexec", str(PYTHON), "-pyexec", str(PYTHON),
        "-py", str(code / "job" / "main.py"), *config.to_args(),
    ]  # fmt: skip
    result = subprocess.run(command, env=env, cwd=code, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        if "JobID" in line:
            return line.split()[-1]
    raise RuntimeError(f"flink run failed:\n{result.stdout}\n{result.stderr}")


def make(commit: str) -> Path:
    version = subprocess.run(
        ["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    target = HERE / version
    broker = KafkaBroker(port=39092, controller_port=39093)
    cluster = FlinkCluster(rest_port=38081, rpc_port=36123, taskmanagers=1)
    with tempfile.TemporaryDirectory() as tmp:
        code = export(commit, Path(tmp))
        os.environ["PYTHONPATH"] = str(code)  # the TaskManager imports the released job
        for service in (cluster, broker):
            service.stop()
            shutil.rmtree(service.home, ignore_errors=True)
        try:
            broker.start()
            cluster.start()
            config = fixture_config(broker, version)
            create_job_topics(config, scenario.PARTITIONS)
            job_id = run_released(code, cluster, config)
            cluster.api.wait_until_running(job_id)
            operators = [v["name"] for v in cluster.api.rest(f"/jobs/{job_id}")["vertices"]]
            send(broker.bootstrap, config, scenario.before())
            closed = read_topics(
                broker.bootstrap,
                [config.aggregated_topic],
                until=lambda rs: {r.value["transaction"] for r in rs} >= set(scenario.CLOSED),
                timeout_s=120,
            )
            assert closed, "the released job emitted nothing in 120 s"
            location = cluster.api.stop_with_savepoint(job_id, cluster.savepoints)
            savepoint = Path(urlparse(location).path)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(savepoint, target / "savepoint")
            manifest = {
                "commit": subprocess.run(
                    ["git", "rev-parse", commit], cwd=ROOT, capture_output=True, text=True
                ).stdout.strip(),
                "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "tag": scenario.tag(version),
                "operators": operators,
                "emitted_before": [r.value for r in closed],
                "before": [r.to_json() for r in scenario.before()],
                "layout": layout.describe_code(code),
            }
            (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        finally:
            cluster.stop()
            broker.stop()
    return target


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.savepoints.make", description=__doc__)
    parser.add_argument("commit", help="the released version (a commit of this repository)")
    parser.add_argument(
        "--layout-only", action="store_true",
        help="only record the layout of the stored fixture COMMIT (its folder name)",
    )  # fmt: skip
    args = parser.parse_args()
    print(record_layout(args.commit) if args.layout_only else make(args.commit))


if __name__ == "__main__":
    main()
