"""Exactly-once through crashes, restarts, upgrades and rescaling, on the real cluster/broker.

Each scenario runs the correlator under a steady generator load of transactions (about 10%
incomplete) and injects a fault mid-stream (or two, one after the other). Afterwards a
read_committed consumer must see every transaction exactly once, in the right topic, with
exactly its parts. Each scenario prints records in, transactions out, lost, duplicated and
seconds to recover.

Run them alone with `bin/test -m fault`.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from generator.outputs import read_topics
from generator.transactions import load_plans
from stack.paths import ROOT
from stack.submit import submit_correlator
from tests.kit import (
    Load,
    fault_under_load,
    stack_command,
    wait_for_checkpoint_after,
    wait_recovered,
)

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.fault]

TRANSACTIONS = 2000
RATE = 100  # transactions per second: a 20 s stream, the fault comes after a checkpoint
RECOVERY_BOUND_S = 60  # first checkpoint completed after the fault, at most this much later


def _config(topics, parallelism: int = 1):
    """A timeout longer than any outage here (a broker restart stops input for up to ~25 s):
    a transaction whose parts are held up longer than timeout + grace rightly expires as a
    partial, which would count as wrong here. The default idleness (30 s): a partition that
    only waits behind a backlog must not be taken for idle, or the watermark would run
    ahead of its records."""
    return topics.live(timeout_s=30, expiry_grace_s=5, idleness_s=30, parallelism=parallelism)


def _scenario(
    flink, topics, name: str, fault: Callable[[str], tuple[str, float]], p: int = 1
) -> list:
    """The load, `fault(job_id)` mid-stream, then the output checked (kit.fault_under_load)."""
    config = _config(topics, p)
    return fault_under_load(flink, config, name, fault, TRANSACTIONS, RATE, RECOVERY_BOUND_S)


def test_taskmanager_crash_recovered_by_stack_up_then_a_broker_restart(
    flink, topics, kafka, postgres, prometheus
):
    """Two faults on one stream. The runbook: after a crash, `python -m stack up` starts the
    missing TaskManagers, at once, although the JobManager still lists the dead ones. Then
    the Kafka broker restarts, and the job notices (it restarts, or its source sees its
    connections close) and goes on. The stream is checked once for both."""

    def crash(job_id: str) -> float:
        started = time.time()
        dead = flink.running_taskmanagers()
        for pid in dead:
            os.kill(pid, signal.SIGKILL)
        up = subprocess.run(
            stack_command(flink, kafka, postgres, prometheus, "up"),
            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"started {len(dead)} TaskManager(s)" in up.stdout, up.stdout
        assert len(flink.running_taskmanagers()) == flink.taskmanagers
        recovered = wait_recovered(flink, job_id, started)
        print(f"\nTaskManagers killed, `stack up`: the job back in {recovered:.1f} s")
        return recovered

    def restart(job_id: str) -> float:
        started = time.time()
        before = _broker_signs(flink, job_id)
        kafka.stop()
        kafka.start()
        recovered = wait_recovered(flink, job_id, started)
        after = _wait_noticed(flink, job_id, before)
        print(f"\nbroker restart: (restarts, source connections closed) {before} -> {after}; "
              f"the job back in {recovered:.1f} s")  # fmt: skip
        return recovered

    def both(job_id: str) -> tuple[str, float]:
        return job_id, max(crash(job_id), restart(job_id))

    _scenario(flink, topics, "TaskManager kill -9 and stack up, then a broker restart", both)


def test_killed_taskmanagers_are_replaced_by_themselves_and_the_gauges_equal_state(
    flink, topics, kafka, postgres, prometheus
):
    """`stack up` leaves a supervisor running: every TaskManager `kill -9`ed under load is
    replaced with no command run, and the job restores by itself. Transactions are open
    across the crash (a 10-minute timeout keeps the incomplete ones open): after the restore
    the gauges `transactions_in_flight` and `closed_markers` equal what state holds."""
    config = topics.live(timeout_s=600, expiry_grace_s=5, idleness_s=30)
    up = subprocess.run(
        stack_command(flink, kafka, postgres, prometheus, "up"),
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert up.returncode == 0 and "supervisor started" in up.stdout, up.stdout + up.stderr
    plans = load_plans(1500, config.types, 0.1, 0.5, random.Random(11))
    complete = [p for p in plans if p.complete]
    job_id = submit_correlator(flink, config)
    try:
        flink.api.wait_until_running(job_id)
        with Load(config, plans, 100) as load:
            wait_for_checkpoint_after(flink, job_id, time.time() + 2)
            killed = flink.running_taskmanagers()
            started = time.time()
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
            replaced_s = _wait_replaced(flink, killed)
            recovered_s = wait_recovered(flink, job_id, started)
            load.join()
        read_topics(
            config.bootstrap_servers, [config.aggregated_topic],
            until=lambda rs: len(rs) >= len(complete), timeout_s=180,
        )  # fmt: skip
        wait_for_checkpoint_after(flink, job_id, time.time())  # a late duplicate would show
        outputs = read_topics(config.bootstrap_servers, [config.aggregated_topic], timeout_s=60)
        assert sorted(r.value["transaction"] for r in outputs) == sorted(p.id for p in complete)
        held = {"transactions_in_flight": len(plans) - len(complete),
                "closed_markers": len(complete)}  # fmt: skip
        gauges = flink.api.operator_metrics(
            job_id, "correlate", "correlate_transactions.",
            until=lambda m: all(m.get(k) == v for k, v in held.items()), timeout=60,
        )  # fmt: skip
        print(
            f"\n{len(killed)} TaskManagers killed under 100 tx/s: replaced by the supervisor "
            f"in {replaced_s:.1f} s, job recovered (checkpoint) in {recovered_s:.1f} s; gauges "
            f"{ {k: gauges.get(k) for k in held} }, state holds {held}"
        )
        assert {k: gauges.get(k) for k in held} == held
        assert "crashed TaskManager(s)" in flink.supervisor_log.read_text()
    finally:
        flink.api.cancel(job_id)


def _wait_replaced(flink, killed: list[int], timeout: float = 60) -> float:
    """Seconds until as many TaskManagers as before run, none of them a killed one."""
    started = time.monotonic()
    while True:
        alive = flink.running_taskmanagers()
        if len(alive) == flink.taskmanagers and not set(alive) & set(killed):
            flink.wait_for_taskmanagers(flink.taskmanagers, timeout=60)
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"not replaced: {alive}"
        time.sleep(0.2)


def _broker_signs(flink, job_id: str) -> tuple[int, float]:
    """The job's restarts, and the connections its Kafka source consumer saw closed."""
    restarts = flink.api.rest(f"/jobs/{job_id}/metrics?get=numRestarts")
    closed = flink.api.operator_metrics(
        job_id, "Source: input_records", "Source__input_records",
        suffix="KafkaConsumer.connection-close-total",
    )  # fmt: skip
    return (int(float(restarts[0]["value"])) if restarts else 0), sum(closed.values())


def _wait_noticed(flink, job_id: str, before: tuple[int, float]) -> tuple[int, float]:
    """Until the job shows it noticed the broker going away: it restarted, or its source
    saw connections close (the REST metrics refresh every few seconds)."""
    deadline = time.monotonic() + 60
    while True:
        now = _broker_signs(flink, job_id)
        if now[0] > before[0] or (now[0] == before[0] and now[1] > before[1]):
            return now
        assert time.monotonic() < deadline, f"the job did not notice the broker restart: {now}"
        time.sleep(2)


# A new version of the job's code: every aggregate and partial gets one more field.
NEW_FIELD = "code_version"
NEW_VERSION = f"""

# Added by tests/test_fault_tolerance.py for one test, and removed after it.
_build_aggregate_v1 = build_aggregate


def build_aggregate(*args, **kwargs):
    return {{**_build_aggregate_v1(*args, **kwargs), "{NEW_FIELD}": 2}}
"""


@contextlib.contextmanager
def new_job_version():
    """`job/aggregate.py` changed on disk, as a developer would change it, then restored."""
    path = ROOT / "job" / "aggregate.py"
    original = path.read_text()
    path.write_text(original + NEW_VERSION)
    try:
        yield
    finally:
        path.write_text(original)


def test_savepoint_resumes_with_new_code_then_a_new_option_rescaling_each_time(flink, topics):
    """Stop with a savepoint, change the code under job/ and resubmit at parallelism 2 from
    the savepoint (`stack` restarts the idle TaskManagers so they load the new code); then
    stop with a savepoint again and resubmit at parallelism 1 with a new option (an
    enrichment hook that adds `extra`). State maps back through the uids each time, and
    what comes out after each step is that version's."""
    upgraded_at: list[float] = []  # ms, when each version took over
    recoveries: list[float] = []
    resumed: list[str] = []  # cancelled at the end, whatever happens

    def resume(job_id: str, config) -> str:
        started = time.time()
        savepoint = flink.api.stop_with_savepoint(job_id, flink.savepoints)
        if not upgraded_at:
            versions.enter_context(new_job_version())
        upgraded_at.append(time.time() * 1000)
        resumed.append(submit_correlator(flink, config, restore_from=savepoint))
        recoveries.append(wait_recovered(flink, resumed[-1], started))
        return resumed[-1]

    def upgrade_twice(job_id: str) -> tuple[str, float]:
        job_id = resume(job_id, _config(topics, 2))
        with_hook = replace(_config(topics, 1), enrich_hook="generator.hooks:speed_class")
        return resume(job_id, with_hook), max(recoveries)

    with contextlib.ExitStack() as versions:
        versions.callback(lambda: [flink.api.cancel_if_running(job_id) for job_id in resumed])
        # A 30 s stream: both upgrades happen while it flows or its partials are pending.
        config = _config(topics)
        name = "savepoint, new code 1->2, then new option 2->1"
        outputs = fault_under_load(flink, config, name, upgrade_twice, 3000, RATE, RECOVERY_BOUND_S)
    print(f"\nrecovered in {recoveries[0]:.1f} s, then {recoveries[1]:.1f} s")
    first, second = upgraded_at
    before = [r.value for r in outputs if r.value["emitted_at"] < first]
    between = [r.value for r in outputs if first < r.value["emitted_at"] < second]
    after = [r.value for r in outputs if r.value["emitted_at"] > second]
    assert before and between and after, (len(before), len(between), len(after))
    assert not any(NEW_FIELD in v for v in before)
    assert all(v.get(NEW_FIELD) == 2 for v in between + after), "the new code did not run"
    assert not any("extra" in v for v in before + between)
    assert any("extra" in v for v in after), "the new option did not apply"


def test_whole_cluster_down_and_back(flink, topics):
    """The job's recovery is counted from the cluster being back: starting a JobManager and
    two TaskManagers (three JVMs on two cores) is the platform's time, not the job's, and
    took 20-45 s here depending on the machine's load; it is printed beside."""

    def outage(job_id: str) -> tuple[str, float]:
        started = time.time()
        flink.kill_taskmanagers()
        flink.stop()  # the JobManager goes too: only the retained checkpoints survive
        checkpoint = flink.latest_checkpoint(job_id)
        flink.start()
        back = time.time()
        new_id = submit_correlator(flink, _config(topics), restore_from=checkpoint)
        recovered = wait_recovered(flink, new_id, back)
        print(f"\nwhole cluster: down and started again in {back - started:.1f} s, the job "
              f"recovered {recovered:.1f} s after that")  # fmt: skip
        return new_id, recovered

    _scenario(flink, topics, "whole cluster down", outage)
