"""An S3-compatible object store that really stores data: s3proxy from Maven Central, with
its `filesystem` backend (each object is a file under `.run/s3proxy-<address>/data/<bucket>/`).

Flink keeps checkpoints, savepoints and its high-availability metadata there through its S3
file system plugin (`flink-s3-fs-presto`, `stack/jars.py`). Both sides take the keys from
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`: Flink's plugin through the AWS credential
chain, s3proxy from a properties file (it reads no environment) that is written mode 600
from those variables just before it starts and deleted once it listens, so the secret is
never on a command line or left on disk. A bucket of the filesystem backend is a folder.

s3proxy 2.6.0 refuses the checksum headers of boto3 >= 1.36 and lists directory markers
unlike S3 (flink-s3-fs-hadoop trips on that); Flink's presto plugin sends neither.
"""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stack import jars
from stack.paths import RUN
from stack.process import wait_started

CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")

_LOGBACK = """<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>{log}</file>
    <encoder><pattern>%d{{ISO8601}} %-5p %c{{30}} - %m%n</pattern></encoder>
  </appender>
  <root level="info"><appender-ref ref="FILE" /></root>
</configuration>
"""


def _escaped(value: str) -> str:
    """A value as java.util.Properties reads it back unchanged."""
    return value.replace("\\", "\\\\").replace("\n", "\\n")


@dataclass
class S3Server:
    address: str = "127.0.0.1"
    port: int = 8333
    buckets: tuple[str, ...] = ()
    wrap: tuple[str, ...] = ()  # e.g. `ip netns exec <host>`: where it runs

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def home(self) -> Path:
        return RUN / f"s3proxy-{self.address}-{self.port}"

    @property
    def data(self) -> Path:
        return self.home / "data"

    def objects(self, bucket: str, prefix: str = "") -> list[str]:
        """The keys stored under a prefix, read from the backend's files."""
        root = self.data / bucket
        return sorted(str(p.relative_to(root)) for p in (root / prefix).rglob("*") if p.is_file())

    def start(self, env: dict[str, str], timeout: float = 90) -> subprocess.Popen:
        missing = [v for v in CREDENTIAL_VARIABLES if not env.get(v)]
        if missing:
            raise RuntimeError(f"the S3 server needs {', '.join(missing)} in the environment")
        self.data.mkdir(parents=True, exist_ok=True)
        for bucket in self.buckets:
            (self.data / bucket).mkdir(exist_ok=True)
        logback = self.home / "logback.xml"
        logback.write_text(_LOGBACK.format(log=self.home / "s3proxy.log"))
        properties = self.home / "s3proxy.properties"
        settings = {
            "s3proxy.endpoint": self.endpoint,
            "s3proxy.authorization": "aws-v2-or-v4",
            "s3proxy.identity": env["AWS_ACCESS_KEY_ID"],
            "s3proxy.credential": env["AWS_SECRET_ACCESS_KEY"],
            "jclouds.provider": "filesystem",
            "jclouds.filesystem.basedir": str(self.data),
        }
        fd = os.open(properties, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{k}={_escaped(v)}\n" for k, v in settings.items()))
        classpath = jars.classpath("s3proxy")
        command = [
            *self.wrap, "java", "-Xms64m", "-Xmx256m",
            f"-Dlogback.configurationFile={logback}", f"-Djava.io.tmpdir={self.home}",
            "-cp", classpath, "org.gaul.s3proxy.Main", "--properties", str(properties),
        ]  # fmt: skip
        try:
            with open(self.home / "stdout.log", "ab") as out:
                process = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            wait_started(
                f"s3proxy on {self.endpoint}", self.ready, lambda: process.poll() is None,
                self.home / "stdout.log", timeout,
            )  # fmt: skip
        finally:
            properties.unlink(missing_ok=True)  # read once, at start-up
        return process

    def ready(self) -> bool:
        """It accepts connections (it reads its properties before it listens)."""
        try:
            socket.create_connection((self.address, self.port), timeout=2).close()
            return True
        except OSError:
            return False
