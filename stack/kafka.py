"""A single-node Apache Kafka broker in KRaft mode, run from the jars on Maven Central.

The broker is one JVM playing both roles (broker and controller) on 127.0.0.1. Its storage,
log and pid file live in `.run/kafka-<port>/`, so a test broker on another port never touches
the demo's.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from job.clients import kafka_settings
from stack import jars
from stack.paths import RUN

_LOG4J = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


@dataclass
class KafkaBroker:
    port: int = 9092
    controller_port: int = 9093
    partitions: int = 3
    heap: str = "768m"
    address: str = "127.0.0.1"
    wrap: tuple[str, ...] = ()  # e.g. `ip netns exec <host>`: where it runs
    # A second listener that needs SASL/PLAIN (user -> password), for clients configured
    # only through a properties file (tests/test_sasl.py); None: PLAINTEXT only.
    sasl_port: int | None = None
    sasl_users: tuple[tuple[str, str], ...] = ()

    @property
    def bootstrap(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def home(self) -> Path:
        if self.address == "127.0.0.1":
            return RUN / f"kafka-{self.port}"
        return RUN / f"kafka-{self.address}-{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    def _properties(self) -> str:
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{self.address}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{self.address}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            **self._sasl_settings(),
            "log.dirs": str(self.home / "data"),
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "3",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Flink's exactly-once sink keeps transactions open across a checkpoint and a restart.
            "transaction.max.timeout.ms": "900000",
        }
        return "".join(f"{k}={v}\n" for k, v in settings.items())

    @property
    def sasl_bootstrap(self) -> str:
        return f"{self.address}:{self.sasl_port}"

    def _sasl_settings(self) -> dict[str, str]:
        """The SASL_PLAINTEXT listener beside PLAINTEXT (PLAIN mechanism, users in JAAS)."""
        if self.sasl_port is None:
            return {}
        users = " ".join(f'user_{u}="{pw}"' for u, pw in self.sasl_users)
        return {
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{self.address}:"
            f"{self.controller_port},SASL_PLAINTEXT://{self.sasl_bootstrap}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap},"
            f"SASL_PLAINTEXT://{self.sasl_bootstrap}",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": "org.apache.kafka.common."
            f"security.plain.PlainLoginModule required {users};",
        }

    def _java(self, main: str, *args: str, log: Path) -> list[str]:
        classpath = jars.classpath("kafka")
        return [
            *self.wrap, "java", f"-Xmx{self.heap}", f"-Xms{self.heap}",
            f"-Dlog4j2.configurationFile={self._log4j(log)}",
            "-cp", classpath, main, *args,
        ]  # fmt: skip

    def _log4j(self, log: Path) -> Path:
        path = log.with_suffix(".log4j2.properties")
        path.write_text(_LOG4J.format(log=log))
        return path

    def running(self) -> bool:
        return _alive(self.pid_file)

    def start(self, timeout: float = 90) -> None:
        """Formats storage on first use, starts the broker and waits until it answers."""
        if self.running():
            self.wait_ready(timeout)
            return
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(self._properties())
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            subprocess.run(
                self._java(
                    "kafka.tools.StorageTool", "format", "--standalone", "--ignore-formatted",
                    f"--cluster-id={cluster_id}", "-c", str(config), log=self.home / "format.log",
                ),
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        with open(self.home / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(config), log=self.home / "server.log"),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
                admin.list_topics()
                admin.close()
                return
            except KafkaError:
                if not self.running():
                    raise RuntimeError(f"Kafka exited; see {self.home / 'stdout.log'}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Kafka on {self.bootstrap} did not answer") from None
                time.sleep(1)

    def create_topics(
        self, topics: list[str], partitions: int | None = None, configs: dict | None = None
    ) -> None:
        """Creates the topics that do not exist yet (an existing topic is kept as it is)."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            existing = set(admin.list_topics())
            count = partitions or self.partitions
            options = {"num_partitions": count, "replication_factor": 1, "configs": configs or {}}
            new = {t: options for t in topics}
            new = {t: options for t, options in new.items() if t not in existing}
            if new:
                admin.create_topics(new, raise_errors=False, wait_for_metadata=True)
        finally:
            admin.close()

    def stop(self, timeout: float = 30) -> None:
        _terminate(self.pid_file, timeout)


def _alive(pid_file: Path) -> bool:
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (ProcessLookupError, ValueError):
        return False


def _terminate(pid_file: Path, timeout: float) -> None:
    """SIGTERM for a clean shutdown, SIGKILL if it does not come in time."""
    if not _alive(pid_file):
        pid_file.unlink(missing_ok=True)
        return
    pid = int(pid_file.read_text())
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid_file, pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        # Gone for real before anyone starts a new one on the same port and data folder.
        if not _wait_gone(pid_file, pid, 30):
            raise TimeoutError(f"process {pid} ({pid_file}) survived SIGKILL for 30 s")
    pid_file.unlink(missing_ok=True)


def _wait_gone(pid_file: Path, pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if not _alive(pid_file):
            return True
        time.sleep(0.2)
    return False


def existing_topics(config) -> set[str]:
    """The topics on the broker the job's options name."""
    admin = KafkaAdminClient(**kafka_settings(config.bootstrap_servers, config.kafka_properties))
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def create_job_topics(
    config, partitions: int | None = None, only: Collection[str] | None = None
) -> list[str]:
    """Every topic the correlator reads or writes (or `only` those of them), as
    `JobConfig.topics` describes them, on the broker the job's options name (with its client
    settings); returns the ones created. An existing topic is kept as it is."""
    specs = config.topics(partitions) if partitions else config.topics()
    if only is not None:
        specs = [s for s in specs if s.name in only]
    admin = KafkaAdminClient(**kafka_settings(config.bootstrap_servers, config.kafka_properties))
    try:
        existing = set(admin.list_topics())
        # The broker's default replication factor (-1): 1 on the local broker, the
        # cluster's own on any other.
        new = {
            s.name: {"num_partitions": s.partitions, "replication_factor": -1,
                     "configs": dict(s.configs)}
            for s in specs
            if s.name not in existing
        }  # fmt: skip
        if new:
            admin.create_topics(new, raise_errors=False, wait_for_metadata=True)
            missing = set(new) - set(admin.list_topics())
            if missing:
                raise RuntimeError(f"topics not created on {config.bootstrap_servers}: "
                                   f"{', '.join(sorted(missing))}")  # fmt: skip
        return list(new)
    finally:
        admin.close()


def consumer_lag(
    bootstrap: str, group: str, topics: list[str], kafka_properties: str = "", **client
) -> dict[str, int | None]:
    """Records per topic that the group has not committed yet (None: nothing committed);
    `client`: more kafka-python settings (timeouts)."""
    from kafka import KafkaConsumer, TopicPartition

    settings = kafka_settings(bootstrap, kafka_properties, **client)
    admin = KafkaAdminClient(**settings)
    consumer = KafkaConsumer(**settings, enable_auto_commit=False)
    try:
        committed = admin.list_group_offsets(group).get(group, {})
        lag: dict[str, int | None] = {}
        for topic in topics:
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            ends = consumer.end_offsets(partitions)
            done = [committed.get(tp) for tp in partitions]
            if all(c is None for c in done):
                lag[topic] = None
                continue
            lag[topic] = sum(
                ends[tp] - (c.offset if c is not None and c.offset >= 0 else 0)
                for tp, c in zip(partitions, done, strict=True)
            )
        return lag
    finally:
        consumer.close()
        admin.close()
