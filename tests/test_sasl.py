"""Every tool reaches any Kafka: the local broker's SASL/PLAIN listener, with the client
settings only in a properties file. `stack topics` creates the job's topics there, the
reference and rules loaders publish, `stack check` and `stack submit` check and submit the
correlator, `stack submit-writer` the writer, the generator sends and the output reader
reads; rows arrive in PostgreSQL. A wrong password is one line from `stack check`."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time

import pytest

from generator.outputs import read_topics
from job.config import JobConfig, WriterConfig
from stack.kafka import KafkaBroker
from stack.paths import PYTHON, ROOT
from store import db
from tests.kit import stack_command

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

SASL_USER = ("txn", "txn-sasl-secret")


@pytest.fixture(scope="module")
def sasl_kafka():
    """A broker of its own with a SASL/PLAIN listener beside PLAINTEXT (the session's broker
    is restarted by other tests with `stack up`, which knows no SASL)."""
    broker = KafkaBroker(port=19192, controller_port=19193, sasl_port=19194,
                         sasl_users=(SASL_USER,))  # fmt: skip
    broker.stop()
    shutil.rmtree(broker.home, ignore_errors=True)
    broker.start()
    yield broker
    broker.stop()


def _properties(path, password: str) -> str:
    user = SASL_USER[0]
    path.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \\\n"
        f'    username="{user}" password="{password}";\n'
    )
    return str(path)


def _run(command: list[str], code: int = 0) -> str:
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_every_tool_reaches_a_sasl_broker_through_the_properties_file(
    flink, kafka, postgres, prometheus, sasl_kafka, tmp_path
):
    props = _properties(tmp_path / "client.properties", SASL_USER[1])
    tag = "sasl" + str(random.randrange(10**6))
    config = JobConfig(
        bootstrap_servers=sasl_kafka.sasl_bootstrap, kafka_properties=props, timeout_s=5,
        expiry_grace_s=3, checkpoint_interval_s=2, idleness_s=2, job_name=f"{tag}-correlator",
    ).tagged(tag)  # fmt: skip
    writer = WriterConfig.for_job(config)
    services = (flink, kafka, postgres, prometheus)
    job = config.to_args()
    tools = ["--bootstrap-servers", sasl_kafka.sasl_bootstrap, "--kafka-properties", props]

    created = _run(stack_command(*services, "topics", job=job))
    assert f"created {len(config.topics())} topic(s) on {sasl_kafka.sasl_bootstrap}" in created
    reference = tmp_path / "reference.yaml"
    reference.write_text("TypeA: {service: orders}\n")
    _run([str(PYTHON), "-m", "generator.reference", str(reference), *tools,
          "--topic", config.reference_topic])  # fmt: skip
    _run([str(PYTHON), "-m", "generator.rules", "reference/rules.yaml", *tools,
          "--topic", config.reference_topic])  # fmt: skip
    wrong = _properties(tmp_path / "wrong.properties", "not-the-password")
    refused = _run(
        stack_command(*services, "check", job=[*job, "--kafka-properties", wrong]), code=2
    )
    assert refused.count("\n") == 1 and "--bootstrap-servers" in refused, refused

    correlator_id = re.search(
        r"submitted job (\w+)", _run(stack_command(*services, "submit", job=job))
    )[1]
    writer_args = writer.to_args()
    writer_out = _run(stack_command(*services, "submit-writer", job=writer_args))
    writer_id = re.search(r"submitted job (\w+)", writer_out)[1]
    try:
        flink.api.wait_until_running(correlator_id)
        flink.api.wait_until_running(writer_id)
        sent = json.loads(_run([
            str(PYTHON), "-m", "generator", "load", *tools, "--topic-prefix",
            config.topic_prefix, "--count", "50", "--rate", "100", "--omit-probability", "0",
            "--seed", "4", "--json",
        ]))  # fmt: skip
        assert sent["transactions"] == 50
        read = _run([str(PYTHON), "-m", "generator.outputs", *tools, "--topics",
                     config.aggregated_topic, "--timeout", "60"])  # fmt: skip
        assert read.strip().endswith("50 records"), read[-300:]
        ids = [r.value["transaction"] for r in read_topics(
            sasl_kafka.sasl_bootstrap, [config.aggregated_topic], until=lambda rs: len(rs) >= 50,
            kafka_properties=props,
        )]  # fmt: skip
        deadline = time.monotonic() + 120
        while (rows := _stored(postgres, ids)) < 50:
            assert time.monotonic() < deadline, f"{rows} of 50 rows stored"
            time.sleep(1)
    finally:
        for job_id in (correlator_id, writer_id):
            flink.api.cancel(job_id)


def _stored(postgres, ids: list[str]) -> int:
    with db.connect(postgres.url) as conn:
        return conn.execute(
            'SELECT count(*) AS n FROM transactions WHERE "transaction" = ANY(%s)', (ids,)
        ).fetchone()["n"]
