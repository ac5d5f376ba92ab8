"""Secrets are never printed: a password planted in a database URL and in the Kafka client
settings appears in no output of the command-line tools, on their error paths and in
`--help`, and the start-up logs mask it. No services: each tool fails fast."""

from __future__ import annotations

import subprocess

import pytest

from job.config import JobConfig, WriterConfig, parse_args
from stack.paths import PYTHON, ROOT

SECRET = "PLANTED-s3cr3t-7a1"
URL = f"postgresql://txn:{SECRET}@127.0.0.1:1/txn_correlator"


@pytest.fixture
def client_properties(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text(
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="txn" password="{SECRET}";\n'
    )
    return str(path)


def _run(*args: str) -> str:
    result = subprocess.run(
        [str(PYTHON), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    return result.stdout + result.stderr


def test_no_tool_prints_a_planted_secret(client_properties):
    outputs = {
        "store, database away": _run("-m", "store", "--database-url", URL, "latest"),
        "store migrate, database away": _run("-m", "store", "--database-url", URL, "migrate"),
        "writer, database away": _run("job/writer.py", "--database-url", URL),
        "writer, bad option": _run("job/writer.py", "--database-url", URL, "--parallelism", "x"),
        "job, bad option": _run(
            "job/main.py", "--kafka-properties", client_properties, "--timeout-mode", "bogus"
        ),
        "job, limit too low": _run(
            "job/main.py", "--kafka-properties", client_properties, "--max-output-bytes", "1"
        ),
        "job --help": _run("job/main.py", "--help"),
        "writer --help": _run("job/writer.py", "--help"),
        "stack --help": _run("-m", "stack", "--help"),
        "store --help": _run("-m", "store", "--help"),
    }
    for name, output in outputs.items():
        assert output, name
        assert SECRET not in output, f"{name}: {output[-500:]}"
    assert "cannot find where it stopped" in outputs["writer, database away"]
    assert "***" in outputs["writer, database away"]  # the URL, masked


def test_the_start_up_logs_mask_secrets(client_properties):
    job = parse_args(["--kafka-properties", client_properties], JobConfig).describe()
    writer = parse_args(["--database-url", URL], WriterConfig).describe()
    assert SECRET not in repr(job) and SECRET not in repr(writer)
    assert job["kafka_client_properties"]["sasl.jaas.config"] == "***"
    assert writer["database_url"] == "postgresql://txn:***@127.0.0.1:1/txn_correlator"
