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

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest

from job.config import JobConfig
from stack import netns
from stack.hosts import BUCKET, JOBMANAGERS, TASKMANAGERS, HostsCluster
from stack.kafka import create_job_topics
from stack.paths import PYTHON, ROOT
from stack.submit import submit_correlator
from tests.kit import fault_under_load, wait_for_checkpoint_after, wait_recovered

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


def test_checkpoints_are_in_the_object_store(hosts):
    def look(job_id: str, config: JobConfig) -> tuple[str, float]:
        wait_for_checkpoint_after(hosts, job_id, time.time())
        stored = hosts.s3.objects(BUCKET, f"checkpoints/{job_id}")
        assert any(key.endswith("/_metadata") for key in stored), stored
        assert hosts.s3.objects(BUCKET, "ha"), "no high-availability metadata in S3"
        return job_id, 0.0

    _scenario(hosts, "checkpoints in S3", look)


def test_the_standby_takes_over_when_the_leaders_host_dies(hosts):
    def kill_leader(job_id: str, config: JobConfig) -> tuple[str, float]:
        leader = hosts.leader()
        assert leader in JOBMANAGERS, leader
        started = time.time()
        assert hosts.host(leader).kill(), f"nothing ran on {leader}"
        recovered = wait_recovered(hosts, job_id, started)
        successor = hosts.leader()
        print(f"\nleader {leader} killed; {successor} leads, job back in {recovered:.1f} s")
        assert successor in JOBMANAGERS and successor != leader
        assert "started 1 Flink process(es)" in _stack("up", "--hosts")  # a new standby
        return job_id, recovered

    _scenario(hosts, "leading JobManager's host killed", kill_leader)


def test_the_job_moves_to_the_other_taskmanager_when_its_host_dies(hosts):
    def kill_worker(job_id: str, config: JobConfig) -> tuple[str, float]:
        (victim,) = hosts.hosts_of(job_id)
        started = time.time()
        hosts.host(victim).kill()
        recovered = wait_recovered(hosts, job_id, started)
        (survivor,) = hosts.hosts_of(job_id)
        print(f"\nTaskManager host {victim} killed; the job runs on {survivor} after "
              f"{recovered:.1f} s")  # fmt: skip
        assert survivor != victim
        assert "started 1 Flink process(es)" in _stack("up", "--hosts")  # a replacement
        return job_id, recovered

    _scenario(hosts, "TaskManager host killed", kill_worker)


def test_rescale_from_a_savepoint_in_s3_across_hosts(hosts):
    def rescale(job_id: str, config: JobConfig) -> tuple[str, float]:
        started = time.time()
        savepoint = hosts.api.stop_with_savepoint(job_id, f"s3://{BUCKET}/savepoints")
        assert savepoint.startswith(f"s3://{BUCKET}/savepoints/"), savepoint
        key = savepoint.removeprefix(f"s3://{BUCKET}/")
        assert f"{key}/_metadata" in hosts.s3.objects(BUCKET, key)
        new_id = submit_correlator(hosts, replace(config, parallelism=2), restore_from=savepoint)
        recovered = wait_recovered(hosts, new_id, started)
        assert hosts.hosts_of(new_id) == set(TASKMANAGERS)
        print(f"\nrescaled 1 -> 2 from {savepoint} in {recovered:.1f} s")
        return new_id, recovered

    _scenario(hosts, "savepoint in S3, parallelism 1->2", rescale)
