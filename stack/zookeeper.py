"""A single ZooKeeper server, run from the jars on Maven Central: Flink's JobManagers elect
their leader through it in high-availability mode (`high-availability.type: zookeeper`).

ZooKeeper's pom leaves out what its own release tarball ships (the metrics library, snappy,
a log binding), so the bundle in `stack/jars.py` names them. Its data and log live in
`.run/zookeeper-<address>/`.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stack import jars
from stack.paths import RUN
from stack.process import wait_started

_LOG4J = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{ISO8601}} %-5p [%t] %c{{1}} - %m%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
"""


@dataclass
class ZooKeeperServer:
    address: str = "127.0.0.1"
    port: int = 2181
    wrap: tuple[str, ...] = ()  # e.g. `ip netns exec <host>`: where it runs

    @property
    def connect(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def home(self) -> Path:
        return RUN / f"zookeeper-{self.address}-{self.port}"

    def _config(self) -> str:
        settings = {
            "tickTime": "2000",  # sessions may last 2 to 20 ticks: Flink asks for 10 s
            "dataDir": str(self.home / "data"),
            "clientPort": str(self.port),
            "clientPortAddress": self.address,
            "maxClientCnxns": "100",
            "admin.enableServer": "false",
            "4lw.commands.whitelist": "ruok,srvr",
            "autopurge.snapRetainCount": "3",
            "autopurge.purgeInterval": "1",
        }
        return "".join(f"{k}={v}\n" for k, v in settings.items())

    def start(self, timeout: float = 60) -> subprocess.Popen:
        (self.home / "data").mkdir(parents=True, exist_ok=True)
        config = self.home / "zoo.cfg"
        config.write_text(self._config())
        log4j = self.home / "log4j2.properties"
        log4j.write_text(_LOG4J.format(log=self.home / "zookeeper.log"))
        classpath = jars.classpath("zookeeper")
        command = [
            *self.wrap, "java", "-Xms64m", "-Xmx256m",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp", classpath, "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(config),
        ]  # fmt: skip
        with open(self.home / "stdout.log", "ab") as out:
            process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_started(
            f"ZooKeeper on {self.connect}", self.ready, lambda: process.poll() is None,
            self.home / "stdout.log", timeout,
        )  # fmt: skip
        return process

    def ready(self) -> bool:
        """ZooKeeper's `ruok` four-letter command answers `imok`."""
        try:
            with socket.create_connection((self.address, self.port), timeout=2) as conn:
                conn.sendall(b"ruok")
                return conn.recv(4) == b"imok"
        except OSError:
            return False
