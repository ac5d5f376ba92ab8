"""Beyond one machine, proven here: the cluster across five hosts (network namespaces,
`stack/hosts.py`) under a steady load of transactions in the original format.

The leading JobManager's host dies (every process `kill -9`): the standby takes over and
the job goes on from its checkpoint in S3. The host of the TaskManager running the job
dies: the job restarts on the other one. The job is stopped with a savepoint in S3 and
resumed at parallelism 2, across both TaskManager hosts. After each, a read_committed
consumer sees every transaction exactly once; the recovery time is printed and bounded.
The runbook's `python -m stack up --hosts` brings back what a dead host ran. Skipped, with
the reason, only where network namespaces cannot be made (not root).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from generator.transactions import load_plans
from generator.verify import verify
from job.config import JobConfig
from stack import netns
from stack.hosts import BUCKET, JOBMANAGERS, TASKMANAGERS, HostsCluster
from stack.kafka import create_job_topics
from stack.paths import FLINK_HOME, PYTHON, ROOT
from tests.kit import built_wheel, fault_under_load, wait_for_checkpoint_after, wait_recovered

pytestmark = [pytest.mark.hosts]

TRANSACTIONS, RATE = 1500, 100  # a 15 s stream; the fault comes after a checkpoint
RECOVERY_BOUND_S = 90  # a takeover waits out the dead leader's ZooKeeper session (10 s)


def _stack(*args: str) -> str:
    command = [str(PYTHON), "-m", "stack", *args]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def hosts():
    reason = netns.available()
    if reason is not None:
        pytest.skip(f"several hosts need network namespaces: {reason}")
    cluster = HostsCluster()
    cluster.down()  # whatever an earlier run left
    for folder in (cluster.home, cluster.broker.home, cluster.zookeeper.home, cluster.s3.home):
        shutil.rmtree(folder, ignore_errors=True)
    try:
        out = _stack("up", "--hosts")
        assert "started 4 Flink process(es)" in out, out
        yield cluster
    finally:
        _stack("down", "--hosts")
        assert not cluster.network.exists()
        assert not any(h.pids() for h in cluster.network.hosts)


def _scenario(hosts, name: str, fault: Callable[[str, JobConfig], tuple[str, float]], p: int = 1):
    config = JobConfig(bootstrap_servers=hosts.bootstrap).tagged(
        "h" + uuid.uuid4().hex[:8], timeout_s=30, expiry_grace_s=5, idleness_s=30,
        checkpoint_interval_s=2, parallelism=p,
    )  # fmt: skip
    create_job_topics(config)
    fault_under_load(hosts, config, name, lambda job_id: fault(job_id, config), TRANSACTIONS,
                     RATE, RECOVERY_BOUND_S)  # fmt: skip


def test_the_standby_takes_over_then_the_job_moves_when_its_taskmanagers_host_dies(hosts):
    """Two host deaths on one stream: the leading JobManager's host, then the host of the
    TaskManager running the job. Each time the job is back from its checkpoint in S3 and
    `stack up --hosts` brings back what the dead host ran; the stream is checked once for
    both (every transaction exactly once)."""

    def kill_leader(job_id: str) -> float:
        leader = hosts.leader()
        assert leader in JOBMANAGERS, leader
        started = time.time()
        assert hosts.host(leader).kill(), f"nothing ran on {leader}"
        recovered = wait_recovered(hosts, job_id, started)
        successor = hosts.leader()
        print(f"\nleader {leader} killed; {successor} leads, job back in {recovered:.1f} s")
        assert successor in JOBMANAGERS and successor != leader
        assert "started 1 Flink process(es)" in _stack("up", "--hosts")  # a new standby
        return recovered

    def kill_worker(job_id: str) -> float:
        (victim,) = hosts.hosts_of(job_id)
        started = time.time()
        hosts.host(victim).kill()
        recovered = wait_recovered(hosts, job_id, started)
        (survivor,) = hosts.hosts_of(job_id)
        print(f"\nTaskManager host {victim} killed; the job runs on {survivor} after "
              f"{recovered:.1f} s")  # fmt: skip
        assert survivor != victim
        assert "started 1 Flink process(es)" in _stack("up", "--hosts")  # a replacement
        return recovered

    def both(job_id: str, config: JobConfig) -> tuple[str, float]:
        return job_id, max(kill_leader(job_id), kill_worker(job_id))

    _scenario(hosts, "leading JobManager's host, then the job's TaskManager host killed", both)


def test_checkpoints_in_s3_and_a_rescale_from_a_savepoint_across_hosts(hosts):
    """The job's checkpoints and the high-availability metadata are in the object store;
    then, with the runbook's commands: `stack savepoint --hosts`, `stack stop --savepoint
    --hosts`, `stack savepoints --hosts` (both listed with their code version), `stack submit
    --hosts --from-savepoint PATH` at parallelism 2."""

    def rescale(job_id: str, config: JobConfig) -> tuple[str, float]:
        wait_for_checkpoint_after(hosts, job_id, time.time())
        stored = hosts.s3.objects(BUCKET, f"checkpoints/{job_id}")
        assert any(key.endswith("/_metadata") for key in stored), stored
        assert hosts.s3.objects(BUCKET, "ha"), "no high-availability metadata in S3"
        job = config.to_args()
        taken = re.search(r"savepoint: (\S+)", _stack("savepoint", "--hosts", "--", *job))[1]
        started = time.time()
        stopped = _stack("stop", "--savepoint", "--hosts", "--", *job)
        savepoint = re.search(r"after a savepoint: (\S+)", stopped)[1]
        for path in (taken, savepoint):
            assert path.startswith(f"s3://{BUCKET}/savepoints/"), path
            key = path.removeprefix(f"s3://{BUCKET}/")
            assert f"{key}/_metadata" in hosts.s3.objects(BUCKET, key)
        assert hosts.api.rest(f"/jobs/{job_id}")["state"] == "FINISHED"
        listed = _stack("savepoints", "--hosts").splitlines()
        for path in (taken, savepoint):  # with the code each came from, newest first
            at = next(i for i, row in enumerate(listed) if row.strip() == path)
            assert "this code" in listed[at - 1] and config.job_name in listed[at - 1], listed
        rescaled = replace(config, parallelism=2).to_args()
        resumed = _stack("submit", "--hosts", "--from-savepoint", savepoint, "--", *rescaled)
        new_id = re.search(r"submitted job (\w+)", resumed)[1]
        recovered = wait_recovered(hosts, new_id, started)
        assert hosts.hosts_of(new_id) == set(TASKMANAGERS)
        print(f"\nrescaled 1 -> 2 from {savepoint} in {recovered:.1f} s")
        return new_id, recovered

    _scenario(hosts, "savepoint in S3, parallelism 1->2", rescale)


def test_a_client_outside_the_hosts_submits_the_built_wheel(hosts, tmp_path):
    """docs/deployment.md's recipe for a remote cluster: the wheel built from this checkout
    and installed on its own (no checkout on the path), `flink run` from the root namespace
    to the leading JobManager's REST address, the connector as `--jars`, the code shipped
    with `-pyfs`; then `stack cancel --hosts` ends it."""
    wheel, site = built_wheel(tmp_path)
    connector = next((ROOT / ".cache" / "jars" / "flink").glob("flink-sql-connector-kafka-*.jar"))
    tag = "w" + uuid.uuid4().hex[:8]
    config = JobConfig(
        bootstrap_servers=hosts.bootstrap, jars=(str(connector),), job_name=f"remote-{tag}"
    ).tagged(tag, timeout_s=30, idleness_s=2, checkpoint_interval_s=2)
    create_job_topics(config)
    leader = hosts.host(hosts.leader()).address
    client_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLINK_", "PYTHON"))}
    submitted = subprocess.run(
        ["bash", str(FLINK_HOME / "bin" / "flink"), "run", "-d", "-m", f"{leader}:8081",
         "-pyclientexec", str(PYTHON), "-pyexec", str(PYTHON), "-pyfs", str(wheel),
         "-pym", "job.main", *config.to_args()],
        env={**client_env, "PYTHONPATH": str(site)}, cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert "JobID" in submitted.stdout, submitted.stdout + submitted.stderr
    job_id = submitted.stdout.split("JobID")[-1].split()[0]
    hosts.api.wait_until_running(job_id)
    plans = load_plans(50, config.types, 0.0, 0.5, random.Random(5), prefix=config.group_id)
    with TransactionProducer(config.bootstrap_servers, config.topic_prefix, random.Random(6)) as p:
        p.send_all(plans, rate=100)
    outputs = read_topics(config.bootstrap_servers, [config.aggregated_topic],
                          until=lambda rs: len(rs) >= len(plans), timeout_s=120)  # fmt: skip
    report = verify(plans, outputs, config.aggregated_topic, config.expired_topic)
    assert report.ok, report.summary()
    assert "cancelled" in _stack("cancel", "--hosts", "--", *config.to_args())
    assert hosts.api.rest(f"/jobs/{job_id}")["state"] == "CANCELED"
