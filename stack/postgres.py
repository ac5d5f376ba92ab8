"""A throwaway PostgreSQL cluster from the Debian packages, for the demo and the tests.

Run as an ordinary user, `initdb` creates it under `.run/postgres-<port>/` as that user. Run
as root, the server runs as the `postgres` system user (it refuses to run as root), which
cannot reach into a checkout in a private folder (mode 700, as home folders often are): the
cluster then lives in `/var/lib/postgresql/txn-correlator/<checkout>-<port>/`, postgres's
own, and `.run/postgres-<port>` links to it. It listens on 127.0.0.1 only and trusts local
connections, which is fine for a throwaway cluster and wrong for anything else: point the
product at a real server with a connection URL instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from stack.paths import ROOT, RUN

DATABASE = "txn_correlator"
# Where root's clusters live: postgres's own folder, reachable whatever the checkout's mode.
SERVER_HOMES = Path("/var/lib/postgresql/txn-correlator")


def _server_alive(pid_file: Path) -> bool:
    """Whether the process a postmaster.pid names runs, and is this cluster's server: a
    postmaster works in its data folder (after a restart the pid may belong to anything,
    another PostgreSQL's backend included)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        return Path(os.readlink(f"/proc/{pid}/cwd")) == pid_file.parent.resolve()
    except (OSError, ValueError, IndexError):
        return False


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
        if os.geteuid() != 0:
            return RUN / f"postgres-{self.port}"
        checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]
        return SERVER_HOMES / f"{checkout}-{self.port}"

    def _make_home(self) -> None:
        """The cluster's folder, owned by the server's user, and `.run/postgres-<port>`
        pointing at it when it lives outside the checkout."""
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for folder in (SERVER_HOMES, self.home):
                shutil.chown(folder, "postgres", "postgres")
            link = RUN / f"postgres-{self.port}"
            RUN.mkdir(exist_ok=True)
            if link.is_dir() and not link.is_symlink():  # a cluster of an earlier version
                if not (self.data / "PG_VERSION").exists():
                    shutil.move(link / "data", self.data)
                shutil.rmtree(link)
            if not link.is_symlink():
                link.symlink_to(self.home)

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def url(self) -> str:
        """libpq URL of the product's database (psycopg, psql)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{DATABASE}"

    def _as_postgres(
        self, *command: str, check: bool = True, **kwargs
    ) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *command], check=check, **kwargs)

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
            self._make_home()
            if not (self.data / "PG_VERSION").exists():
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

    def purge(self) -> None:
        """Stops the cluster and deletes it, data and all."""
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)
        (RUN / f"postgres-{self.port}").unlink(missing_ok=True)

    def stop(self) -> None:
        """Stops the server. A pid file left by a server that is gone (killed, or the machine
        restarted) is removed: there is nothing to stop, and `start` begins cleanly."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return
        stopped = self._as_postgres(
            _bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop",
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        if stopped.returncode == 0 or not pid_file.exists():
            return
        if _server_alive(pid_file):
            raise RuntimeError(
                f"PostgreSQL on port {self.port} did not stop: {stopped.stderr.strip()}"
            )
        pid_file.unlink()
