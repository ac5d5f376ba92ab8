"""Adding a type is one change: `--types` with a sixth type, given once to every tool.

On the real broker and cluster: `stack up -- <job options>` creates the sixth type's topic
(with every other topic of the job), `stack submit -- <job options>` runs the job on it, the
generator sends transactions of six types, they come out complete with six parts, and
`stack status -- <job options>` counts the sixth type's records.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import replace

import pytest
from kafka import KafkaAdminClient

from generator.outputs import read_topics
from job.config import DEFAULT_TYPES
from stack.paths import PYTHON, ROOT
from tests.kit import stack_command

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


def _run(command: list[str], timeout: float = 300, codes: tuple[int, ...] = (0,)) -> str:
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode in codes, result.stdout + result.stderr
    return result.stdout


def test_a_sixth_type_runs_end_to_end(flink, kafka, postgres, prometheus, topics):
    config = topics.live(types=(*DEFAULT_TYPES, "TypeF"), job_name=f"six-{topics.config.group_id}")
    options = config.to_args()
    sixth_topic = config.topic_prefix + "TypeF"

    _run(stack_command(flink, kafka, postgres, prometheus, "up", job=options))
    admin = KafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    try:
        assert sixth_topic in admin.list_topics()
    finally:
        admin.close()

    out = _run(stack_command(flink, kafka, postgres, prometheus, "submit", job=options))
    job_id = out.split("submitted job ")[1].split(";")[0]
    try:
        flink.api.wait_until_running(job_id)
        _run([
            str(PYTHON), "-m", "generator", "load", "--bootstrap-servers", kafka.bootstrap,
            "--types", ",".join(config.types), "--topic-prefix", config.topic_prefix,
            "--count", "50", "--rate", "100", "--omit-probability", "0",
        ])  # fmt: skip
        outputs = read_topics(
            config.bootstrap_servers, [config.aggregated_topic],
            until=lambda rs: len(rs) >= 50, timeout_s=120,
        )  # fmt: skip
        assert len(outputs) == 50
        assert all(r.value["types"] == list(config.types) for r in outputs)
        assert all(r.value["parts"]["TypeF"]["transaction"] == r.key for r in outputs)

        deadline = time.monotonic() + 60  # the REST metrics refresh every few seconds
        while True:
            # Exit code 1: no writer runs for this correlator, which status reports.
            command = stack_command(
                flink, kafka, postgres, prometheus, "status", "--json", job=options
            )
            status = json.loads(_run(command, codes=(0, 1)))
            counted = (status.get("counters") or {}).get("records_in", {})
            if counted.get("TypeF") == 50:
                break
            assert time.monotonic() < deadline, status
            time.sleep(2)
        assert status["job"]["id"] == job_id
        assert set(counted) == set(config.types)
    finally:
        flink.api.cancel(job_id)
    assert replace(config, types=DEFAULT_TYPES).topics() != config.topics()
