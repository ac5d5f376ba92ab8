"""Dependencies fail: PostgreSQL and the broker go away under load and come back with the
runbook's command (`python -m stack up`). The writer waits and resumes, every transaction
ends in PostgreSQL exactly as emitted, no TaskManager dies, the correlator never restarts
for a database outage, and `stack status` tells the truth meanwhile: exit code 1 naming
PostgreSQL while it is away, 0 once everything is stored.

The 10-minute outage is a long scenario: `bin/test --long -m long` (docs/development.md).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pytest

from generator.hostile import hostile_values
from generator.producer import TransactionProducer
from generator.transactions import load_plans
from stack.paths import ROOT
from tests.kit import (
    Load,
    both_jobs,
    check_stored_as_emitted,
    restarts,
    stack_command,
    writer_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.flink, pytest.mark.fault]


def _run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


class Product:
    """Both jobs on a test's topics, the runbook's commands pointed at the session."""

    def __init__(self, flink, kafka, postgres, prometheus, config):
        self.flink, self.kafka, self.postgres, self.prometheus = flink, kafka, postgres, prometheus
        self.config = config
        self.writer = writer_for(config, postgres)

    def stack(self, *args: str, job: bool = False) -> subprocess.CompletedProcess:
        options = self.config.to_args() if job else ()
        return _run(
            stack_command(
                self.flink, self.kafka, self.postgres, self.prometheus, *args, job=options
            )
        )

    def up(self) -> float:
        """`python -m stack up`, the runbook's command after an outage; its seconds."""
        started = time.monotonic()
        result = self.stack("up")
        assert result.returncode == 0, result.stdout + result.stderr
        return time.monotonic() - started

    def status(self) -> tuple[int, dict]:
        result = self.stack("status", "--json", job=True)
        return result.returncode, json.loads(result.stdout)

    def wait_healthy(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            code, report = self.status()
            if code == 0:
                return report
            assert time.monotonic() < deadline, report["problems"]
            time.sleep(2)


def _outages(flink, kafka, postgres, prometheus, topics, outages_s: list[float], rate: float):
    config = topics.live(timeout_s=30, expiry_grace_s=5, job_name=f"c-{topics.config.group_id}")
    product = Product(flink, kafka, postgres, prometheus, config)
    # Load through every outage: 10 s before each, then about 5 s for its `stack up`.
    seconds = sum(outages_s) + 15 * len(outages_s) + 5
    plans = load_plans(int(seconds * rate), config.types, 0.1, 0.5, random.Random(7))
    catch_up = []
    try:
        with both_jobs(flink, config, product.writer) as (correlator_id, writer_id):
            taskmanagers = flink.running_taskmanagers()  # those the jobs run on
            product.wait_healthy()
            with Load(config, plans, rate) as load:
                for outage_s in outages_s:
                    time.sleep(10)
                    postgres.stop()
                    away = time.monotonic()
                    time.sleep(min(outage_s, 10))
                    code, report = product.status()
                    assert code == 1, report
                    assert any("PostgreSQL" in p for p in report["problems"]), report["problems"]
                    time.sleep(max(outage_s - (time.monotonic() - away), 0))
                    up_s = product.up()
                    back = time.monotonic()
                    product.wait_healthy(timeout=240)
                    catch_up.append((outage_s, up_s, time.monotonic() - back))
                load.join()
            check_stored_as_emitted(config, postgres.url, len(plans), timeout=240)
            report = product.wait_healthy()
            assert report["writer"]["behind"] == 0
            assert (restarts(flink, correlator_id), restarts(flink, writer_id)) == (0, 0)
            assert flink.running_taskmanagers() == taskmanagers
            for outage_s, up_s, healthy_s in catch_up:
                print(
                    f"\nPostgreSQL away {outage_s:.0f} s under {rate:.0f} tx/s: `stack up` took "
                    f"{up_s:.1f} s, status healthy again (writer caught up) {healthy_s:.1f} s later"
                )
    finally:
        postgres.start()


def test_postgresql_away_10_s_then_60_s(flink, kafka, postgres, prometheus, topics):
    _outages(flink, kafka, postgres, prometheus, topics, [10, 60], rate=20)


@pytest.mark.long
def test_postgresql_away_10_minutes(flink, kafka, postgres, prometheus, topics):
    _outages(flink, kafka, postgres, prometheus, topics, [600], rate=20)


@pytest.mark.long
def test_hostile_records_a_10_minute_outage_and_a_killed_taskmanager_at_once(
    flink, kafka, postgres, prometheus, topics
):
    """Everything at once under load: the supervisor running (`stack up`), PostgreSQL away
    10 minutes, every class of hostile record sent meanwhile, and the writer's TaskManager
    killed while the database is away. Then every transaction is stored exactly as emitted,
    the correlator never restarted, and `stack status` is green and exits 0."""
    config = topics.live(timeout_s=30, expiry_grace_s=5, job_name=f"c-{topics.config.group_id}")
    product = Product(flink, kafka, postgres, prometheus, config)
    product.up()  # the supervisor, which replaces the killed TaskManager
    plans = load_plans(int(700 * 20), config.types, 0.1, 0.5, random.Random(9))
    try:
        with both_jobs(flink, config, product.writer) as (correlator_id, writer_id):
            with Load(config, plans, 20) as load:
                time.sleep(10)
                postgres.stop()
                with TransactionProducer(config.bootstrap_servers, config.topic_prefix,
                                         random.Random(10)) as producer:  # fmt: skip
                    for value in hostile_values(random.Random(11)):
                        producer.send_raw(config.topic_of("TypeB"), value)
                time.sleep(120)
                os.kill(flink.taskmanager_of(writer_id), signal.SIGKILL)
                time.sleep(480)
                up_s = product.up()
                back = time.monotonic()
                load.join()
            check_stored_as_emitted(config, postgres.url, len(plans), timeout=600)
            report = product.wait_healthy(timeout=300)
            assert restarts(flink, correlator_id) == 0
            print(
                f"\nPostgreSQL away 10 min with 300 hostile records and the writer's TaskManager "
                f"killed: `stack up` {up_s:.1f} s, all {len(plans)} transactions stored "
                f"{time.monotonic() - back:.0f} s after; writer restarts "
                f"{restarts(flink, writer_id)}; status {report['healthy']}"
            )
    finally:
        postgres.start()


def test_a_broker_restart_as_the_writer_sees_it(flink, kafka, postgres, prometheus, topics):
    """The broker goes away for 20 s under load and `stack up` starts it again. The writer
    waits and resumes without a restart; every transaction ends stored exactly as emitted.
    (The correlator's exactly-once sink may restart its job meanwhile: that is
    tests/test_fault_tolerance.py's subject.)"""
    config = topics.live(timeout_s=10, expiry_grace_s=5, job_name=f"c-{topics.config.group_id}")
    product = Product(flink, kafka, postgres, prometheus, config)
    plans = load_plans(800, config.types, 0.1, 0.5, random.Random(8))
    try:
        with both_jobs(flink, config, product.writer) as (correlator_id, writer_id):
            taskmanagers = flink.running_taskmanagers()  # those the jobs run on
            with Load(config, plans[:400], 40) as load:
                load.join()
            kafka.stop()
            time.sleep(20)
            code, report = product.status()
            assert code == 1 and any("Kafka" in p for p in report["problems"]), report
            up_s = product.up()
            back = time.monotonic()
            with Load(config, plans[400:], 40) as load:
                load.join()
            check_stored_as_emitted(config, postgres.url, len(plans), timeout=240)
            print(
                f"\nbroker away 20 s: `stack up` took {up_s:.1f} s; all {len(plans)} transactions "
                f"stored {time.monotonic() - back:.1f} s after it (including 10 s of new load); "
                f"correlator restarts {restarts(flink, correlator_id)}"
            )
            assert restarts(flink, writer_id) == 0
            assert flink.running_taskmanagers() == taskmanagers
            product.wait_healthy(timeout=180)
    finally:
        kafka.start()
