"""Exactly-once through crashes, restarts, upgrades and rescaling, on the real cluster/broker.

Each scenario runs the correlator under a steady generator load of transactions (about 10%
incomplete) and injects one fault mid-stream. Afterwards a read_committed consumer must see
every transaction exactly once, in the right topic, with exactly its parts. Each scenario
prints records in, transactions out, lost, duplicated and seconds to recover.

Run them alone with `bin/test -m fault`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from generator.transactions import load_plans
from generator.verify import verify

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.fault]

TRANSACTIONS = 2000
RATE = 100  # transactions per second: a 20 s stream, the fault comes after 6 s


class Load:
    """Sends the plans in a background thread while the test breaks things."""

    def __init__(self, config, plans):
        self.config, self.plans = config, plans
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            rng = random.Random(5)
            with TransactionProducer(
                self.config.bootstrap_servers, self.config.topic_prefix, rng
            ) as producer:
                producer.send_all(self.plans, rate=RATE)
        except BaseException as error:  # reported by join()
            self.error = error

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(timeout=300)
        assert self.error is None, self.error

    def __exit__(self, *exc) -> None:
        self.thread.join(timeout=300)


def _config(topics, parallelism: int = 1):
    return topics.live(timeout_s=10, expiry_grace_s=5, parallelism=parallelism)


def _wait_running(flink, job_id: str, since: float) -> float:
    """Seconds from `since` (time.time()) until the job runs and completed a checkpoint
    triggered after it: proof that every task is back, not just scheduled."""
    flink.wait_until_running(job_id, timeout=240)
    deadline = time.monotonic() + 240
    while True:
        latest = flink.rest(f"/jobs/{job_id}/checkpoints")["latest"]["completed"]
        if latest and latest["trigger_timestamp"] > since * 1000:
            return latest["latest_ack_timestamp"] / 1000 - since
        assert time.monotonic() < deadline, "no checkpoint completed after the fault"
        time.sleep(0.5)


def _check(name: str, config, plans, recovered_s: float) -> None:
    results = [config.aggregated_topic, config.expired_topic]
    read_topics(
        config.bootstrap_servers, results, until=lambda rs: len(rs) >= len(plans), timeout_s=180
    )
    time.sleep(5)  # a duplicate committed late would show up now
    outputs = read_topics(config.bootstrap_servers, results, timeout_s=60)
    report = verify(plans, outputs, *results)
    records = sum(len(p.sent_types) for p in plans)
    print(
        f"\n[{name}] records in {records}, transactions {len(plans)} "
        f"({sum(not p.complete for p in plans)} incomplete), out {len(outputs)}, "
        f"lost {len(report.lost)}, duplicated {len(report.duplicated)}, "
        f"recovered in {recovered_s:.1f}s"
    )
    assert report.ok, report.summary()


def _scenario(flink, topics, name: str, fault: Callable[[str], tuple[str, float]], p: int = 1):
    """Runs the load, calls `fault(job_id)` mid-stream (it returns the job id that runs
    afterwards and the seconds to recover), then checks the output."""
    config = _config(topics, p)
    plans = load_plans(TRANSACTIONS, config.types, 0.1, 0.5, random.Random(name))
    job_id = flink.submit_correlator(config)
    try:
        flink.wait_until_running(job_id)
        with Load(config, plans) as load:
            time.sleep(6)
            job_id, recovered_s = fault(job_id)
            load.join()
        _check(name, config, plans, recovered_s)
    finally:
        if job_id:
            state = flink.rest(f"/jobs/{job_id}", quiet=True)
            if state and state["state"] not in {"CANCELED", "FINISHED", "FAILED"}:
                flink.cancel(job_id)


def test_taskmanager_crash(flink, topics):
    def crash(job_id: str) -> tuple[str, float]:
        started = time.time()
        assert flink.kill_taskmanagers() >= 1
        flink.add_taskmanagers(flink.taskmanagers)
        return job_id, _wait_running(flink, job_id, started)

    _scenario(flink, topics, "TaskManager kill -9", crash)


def test_kafka_broker_restart(flink, topics, kafka):
    def restart(job_id: str) -> tuple[str, float]:
        started = time.time()
        kafka.stop()
        time.sleep(3)
        kafka.start()
        time.sleep(5)  # the job notices the broker's absence a little later
        return job_id, _wait_running(flink, job_id, started)

    _scenario(flink, topics, "Kafka broker restart", restart)


@pytest.mark.parametrize(("before", "after"), [(1, 2), (2, 1)])
def test_savepoint_resume_with_rescaling_and_new_version(flink, topics, before, after):
    def upgrade(job_id: str) -> tuple[str, float]:
        started = time.time()
        savepoint = flink.stop_with_savepoint(job_id)
        # The new version adds an output field (`extra`, from an enrichment hook) and runs
        # at another parallelism; state maps back through the operators' uids.
        new = replace(_config(topics, after), enrich_hook="generator.hooks:speed_class")
        new_id = flink.submit_correlator(new, restore_from=savepoint)
        return new_id, _wait_running(flink, new_id, started)

    _scenario(flink, topics, f"savepoint, parallelism {before}->{after}", upgrade, before)


def test_whole_cluster_down_and_back(flink, topics):
    def outage(job_id: str) -> tuple[str, float]:
        started = time.time()
        flink.kill_taskmanagers()
        flink.stop()  # the JobManager goes too: only the retained checkpoints survive
        checkpoint = flink.latest_checkpoint(job_id)
        flink.start()
        new_id = flink.submit_correlator(_config(topics), restore_from=checkpoint)
        return new_id, _wait_running(flink, new_id, started)

    _scenario(flink, topics, "whole cluster down", outage)
