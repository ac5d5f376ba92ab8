"""One real Kafka broker, Flink cluster and PostgreSQL server per test session.

Test ports differ from the demo's (9092, 8081), so the tests run beside a running demo.
Each test gets topics under a unique prefix from `topics`, so tests never see each other's
records and the broker is started once.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from job.config import JobConfig
from stack.flink import FlinkCluster
from stack.kafka import KafkaBroker, create_job_topics
from stack.postgres import PostgresServer
from stack.prometheus import PrometheusServer
from store import db

KAFKA_PORT = 19092
FLINK_REST_PORT = 18081
POSTGRES_PORT = 15432
PROMETHEUS_PORT = 19090


def pytest_addoption(parser):
    parser.addoption(
        "--long", action="store_true", help="also run the long scenarios (marked long)"
    )


def pytest_collection_modifyitems(config, items):
    """Long scenarios (a 10-minute outage, ...) run only with --long (docs/development.md)."""
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="a long scenario: run with --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def nothing_left_on_the_demo_ports():
    """The session starts its services on test ports and stops them: a server of this
    checkout left on a demo port (a `stack up` pointed at the defaults) fails the session."""
    demo = (KafkaBroker(), PostgresServer(), PrometheusServer())
    before = [server.running() for server in demo]
    yield
    left = [
        type(s).__name__ for s, was in zip(demo, before, strict=True) if s.running() and not was
    ]
    assert not left, f"left running on the demo ports: {left}"


@pytest.fixture(scope="session")
def kafka() -> KafkaBroker:
    broker = KafkaBroker(port=KAFKA_PORT, controller_port=KAFKA_PORT + 1)
    broker.stop()
    shutil.rmtree(broker.home, ignore_errors=True)  # every session starts from empty topics
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    server = PostgresServer(port=POSTGRES_PORT)
    server.stop()
    shutil.rmtree(server.home, ignore_errors=True)
    server.start()
    db.migrate(server.url)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prometheus() -> PrometheusServer:
    """A real Prometheus (Debian's package, installed by bin/setup) scraping every Flink
    reporter port of this machine each second."""
    server = PrometheusServer(port=PROMETHEUS_PORT, scrape_interval_s=1, taskmanagers=2)
    server.stop()
    shutil.rmtree(server.home, ignore_errors=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def flink(kafka) -> FlinkCluster:
    # Two TaskManagers of one slot: the correlator and the writer run side by side.
    cluster = FlinkCluster(rest_port=FLINK_REST_PORT, rpc_port=16123, taskmanagers=2)
    cluster.stop()
    shutil.rmtree(cluster.home, ignore_errors=True)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(autouse=True)
def no_supervisor_left(request):
    """`stack up`, the runbook's command, starts a supervisor for the cluster it is pointed
    at. A test that ran it leaves none behind: the next test may kill TaskManagers on
    purpose and count who starts them again."""
    yield
    if "flink" in request.fixturenames:
        request.getfixturevalue("flink").stop_supervisor()


@dataclass
class Topics:
    """A test's own topic names and a job configuration that uses them."""

    config: JobConfig
    broker: KafkaBroker

    def live(self, **overrides) -> JobConfig:
        """The configuration for a live test: short timeouts so partials expire in seconds,
        checkpoints every 2 s so committed output shows up quickly."""
        fast = dict(timeout_s=5, expiry_grace_s=3, checkpoint_interval_s=2, idleness_s=2)
        return replace(self.config, **{**fast, **overrides})

    def create(self, partitions: int = 3) -> Topics:
        create_job_topics(self.config, partitions)
        return self


@pytest.fixture
def topics(kafka) -> Topics:
    config = JobConfig(bootstrap_servers=kafka.bootstrap).tagged("t" + uuid.uuid4().hex[:8])
    return Topics(config, kafka).create()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test item, for `explain_failures`."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def explain_failures(request):
    """When a test on the cluster fails, print what the cluster saw: every job's state, the
    root exceptions from the REST API, and the errors in the TaskManager logs."""
    yield
    report = getattr(request.node, "report_call", None)
    if report is None or not report.failed or "flink" not in request.fixturenames:
        return
    cluster: FlinkCluster = request.getfixturevalue("flink")
    print(f"\n--- what the Flink cluster at {cluster.url} saw ---")
    for job in (cluster.api.rest("/jobs/overview", quiet=True) or {}).get("jobs", [])[-5:]:
        exceptions = cluster.api.rest(f"/jobs/{job['jid']}/exceptions", quiet=True) or {}
        entries = exceptions.get("exceptionHistory", {}).get("entries", [])
        print(f"job {job['jid']} {job['name']}: {job['state']}, {len(entries)} exceptions")
        for entry in entries[-2:]:
            print("  " + entry["stacktrace"][:1500].replace("\n", "\n  "))
    print(f"TaskManager processes alive: {cluster.running_taskmanagers()}")
    for log in sorted(Path(cluster.home / "log").glob("*taskexecutor*.log"))[-4:]:
        errors = [
            line for line in log.read_text(errors="replace").splitlines() if " ERROR " in line
        ]
        print(f"{log.name}: {len(errors)} ERROR lines; last: {errors[-3:]}")
