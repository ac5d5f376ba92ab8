"""The runbook's lifecycle commands, end to end on the local cluster: `stack check`, `stack
submit`, `stack savepoint`, `stack savepoints`, `stack stop --savepoint`, `stack submit
--from-savepoint` and `stack cancel`. Transactions sent before, between and after come out
exactly once; records sent while the job was stopped are read when it resumes."""

from __future__ import annotations

import random
import re
import subprocess

import pytest

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from generator.transactions import load_plans
from generator.verify import verify
from stack.paths import ROOT
from tests.kit import stack_command

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


def _stack(flink, kafka, postgres, prometheus, *args, job=(), code=0) -> str:
    result = subprocess.run(
        stack_command(flink, kafka, postgres, prometheus, *args, job=job),
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout + result.stderr


def _send(config, plans) -> None:
    with TransactionProducer(config.bootstrap_servers, config.topic_prefix, random.Random(3)) as p:
        p.send_all(plans, rate=500)


def test_check_submit_savepoint_stop_resume_cancel(flink, kafka, postgres, prometheus, topics):
    config = topics.live(timeout_s=30, job_name=f"life-{topics.config.group_id}")
    job = config.to_args()
    services = (flink, kafka, postgres, prometheus)
    bad = _stack(*services, "check", job=[*job, "--bootstrap-servers", "127.0.0.1:1"], code=2)
    assert bad.count("\n") == 1 and "--bootstrap-servers 127.0.0.1:1: no broker answers" in bad
    missing = _stack(*services, "check", job=[*job, "--topic-prefix", "nowhere-"], code=2)
    assert "topic nowhere-TypeA does not exist" in missing
    assert "checked" in _stack(*services, "check", job=job)

    plans = load_plans(300, config.types, 0.0, 0.5, random.Random(2), prefix=config.group_id)
    first = re.search(r"submitted job (\w+)", _stack(*services, "submit", job=job))[1]
    flink.api.wait_until_running(first)
    _send(config, plans[:100])
    taken = re.search(r"savepoint: (\S+)", _stack(*services, "savepoint", job=job))[1]
    rows = _stack(*services, "savepoints").splitlines()
    at = next(i for i, row in enumerate(rows) if row.strip() == taken)
    assert "this code" in rows[at - 1] and config.job_name in rows[at - 1], rows

    stopped = _stack(*services, "stop", "--savepoint", job=job)
    path = re.search(r"after a savepoint: (\S+)", stopped)[1]
    assert flink.api.rest(f"/jobs/{first}")["state"] == "FINISHED"
    _send(config, plans[100:200])  # while no job runs
    resumed = _stack(*services, "submit", "--from-savepoint", path, job=job)
    second = re.search(r"submitted job (\w+)", resumed)[1]
    flink.api.wait_until_running(second)
    _send(config, plans[200:])

    results = [config.aggregated_topic, config.expired_topic]
    outputs = read_topics(
        config.bootstrap_servers, results, until=lambda rs: len(rs) >= len(plans), timeout_s=120
    )
    report = verify(plans, outputs, *results)
    assert report.ok, report.summary()
    assert "cancelled" in _stack(*services, "cancel", job=job)
    assert flink.api.rest(f"/jobs/{second}")["state"] == "CANCELED"
