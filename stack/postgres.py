"""A throwaway PostgreSQL cluster from the Debian packages, for the demo and the tests.

`initdb` creates it under `.run/postgres-<port>/` owned by the `postgres` system user (the
server refuses to run as root); it listens on 127.0.0.1 only and trusts local connections,
which is fine for a throwaway cluster and wrong for anything else: point the product at a
real server with a connection URL instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from stack.paths import RUN

DATABASE = "txn_correlator"


def _bin(name: str) -> str:
    """The server binaries live in /usr/lib/postgresql/<major>/bin, not on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    on_path = shutil.which(name)
    if on_path is None:
        raise RuntimeError(
            "PostgreSQL is not installed; run bin/setup (apt-get install postgresql)"
        )
    return on_path


@dataclass
class PostgresServer:
    port: int = 5432
    user: str = "postgres"

    @property
    def home(self) -> Path:
        return RUN / f"postgres-{self.port}"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def url(self) -> str:
        """libpq URL of the product's database (psycopg, psql)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{DATABASE}"

    def _as_postgres(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *command], check=True, **kwargs)

    def running(self) -> bool:
        try:
            psycopg.connect(self._admin_url(), connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def _admin_url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 60) -> None:
        """Creates the cluster on first use, starts it, and creates the database."""
        if not self.running():
            if not (self.data / "PG_VERSION").exists():
                self.home.mkdir(parents=True, exist_ok=True)
                self.data.mkdir(exist_ok=True)
                shutil.chown(self.data, "postgres", "postgres")
                self._as_postgres(
                    _bin("initdb"), "-D", str(self.data), "-U", self.user,
                    "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8",
                    stdout=subprocess.DEVNULL,
                )  # fmt: skip
            log = self.home / "server.log"
            log.touch()
            shutil.chown(log, "postgres", "postgres")
            self._as_postgres(
                _bin("pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "start",
                "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k /tmp",
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        self._wait(timeout)
        with psycopg.connect(self._admin_url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if exists.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.running():
            if time.monotonic() > deadline:
                raise TimeoutError(f"PostgreSQL on port {self.port} did not answer")
            time.sleep(0.5)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(
                _bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
