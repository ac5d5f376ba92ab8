"""A Flink standalone cluster from the scripts inside the `apache-flink` pip package.

`FLINK_CONF_DIR` points at the repository's `flink-conf/`; what differs between the demo
cluster and a test cluster (ports, the folders for checkpoints, logs and pids) is passed as
`-D` overrides, so the checked-in configuration stays the single source of settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stack import jars
from stack.paths import FLINK_CONF, FLINK_HOME, PYTHON, ROOT, RUN


@dataclass
class FlinkCluster:
    rest_port: int = 8081
    rpc_port: int = 6123
    taskmanagers: int = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def home(self) -> Path:
        return RUN / f"flink-{self.rest_port}"

    @property
    def checkpoints(self) -> Path:
        return self.home / "checkpoints"

    @property
    def savepoints(self) -> Path:
        return self.home / "savepoints"

    def overrides(self) -> list[str]:
        settings = {
            "rest.port": self.rest_port,
            "jobmanager.rpc.port": self.rpc_port,
            "execution.checkpointing.dir": self.checkpoints.as_uri(),
            "execution.checkpointing.savepoint-dir": self.savepoints.as_uri(),
            "python.executable": PYTHON,
            "python.client.executable": PYTHON,
        }
        return [arg for k, v in settings.items() for arg in ("-D", f"{k}={v}")]

    @property
    def lib(self) -> Path:
        return self.home / "lib"

    def _link_lib(self) -> None:
        """The distribution's lib/ plus flink-python from opt/, which Python jobs need there."""
        self.lib.mkdir(parents=True, exist_ok=True)
        jars = [
            *(FLINK_HOME / "lib").glob("*.jar"),
            *(FLINK_HOME / "opt").glob("flink-python-*.jar"),
        ]
        for jar in jars:
            link = self.lib / jar.name
            if not link.exists():
                link.symlink_to(jar)

    def env(self) -> dict[str, str]:
        self._link_lib()
        env = dict(os.environ)
        env.update(
            FLINK_CONF_DIR=str(FLINK_CONF),
            FLINK_LIB_DIR=str(self.lib),
            FLINK_LOG_DIR=str(self.home / "log"),
            FLINK_PID_DIR=str(self.home),
            PATH=f"{PYTHON.parent}{os.pathsep}{env.get('PATH', '')}",
        )
        return env

    def _script(self, name: str, *args: str) -> None:
        subprocess.run(
            ["bash", str(FLINK_HOME / "bin" / name), *args],
            env=self.env(),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self, timeout: float = 120) -> None:
        """Starts a JobManager and the TaskManagers, then waits until all slots register."""
        if self.rest("/overview", quiet=True) is None:
            for folder in (self.home / "log", self.checkpoints, self.savepoints):
                folder.mkdir(parents=True, exist_ok=True)
            self._script("jobmanager.sh", "start", *self.overrides())
        self.add_taskmanagers(self.taskmanagers - self._registered())
        self.wait_for_taskmanagers(self.taskmanagers, timeout)

    def add_taskmanagers(self, count: int) -> None:
        for _ in range(max(count, 0)):
            self._script("taskmanager.sh", "start", *self.overrides())

    def _registered(self) -> int:
        overview = self.rest("/overview", quiet=True)
        return 0 if overview is None else overview["taskmanagers"]

    def wait_for_taskmanagers(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._registered() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Flink at {self.url}: fewer than {count} TaskManagers")
            time.sleep(1)

    def stop(self) -> None:
        for script in ("taskmanager.sh", "jobmanager.sh"):
            self._script(script, "stop-all")

    def rest(self, path: str, method: str = "GET", body: dict | None = None, quiet: bool = False):
        """Calls the REST API; with quiet=True a cluster that is not up answers None."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except (urllib.error.URLError, ConnectionError):
            if quiet:
                return None
            raise

    def submit(self, job_args: list[str], detached: bool = True) -> str:
        """Submits the correlator with `flink run -py` and returns its job id."""
        command = [
            "bash", str(FLINK_HOME / "bin" / "flink"), "run",
            *(["-d"] if detached else []),
            "-D", f"rest.port={self.rest_port}", "-D", "rest.address=127.0.0.1",
            "-pyclientexec", str(PYTHON), "-pyexec", str(PYTHON),
            "-py", str(ROOT / "job" / "main.py"),
            "--jars", ",".join(str(p) for p in jars.connector_jars()),
            *job_args,
        ]  # fmt: skip
        result = subprocess.run(
            command, env=self.env(), cwd=ROOT, capture_output=True, text=True, check=False
        )
        for line in result.stdout.splitlines():
            if "JobID" in line:
                return line.split()[-1]
        raise RuntimeError(f"flink run failed:\n{result.stdout}\n{result.stderr}")

    def jobs(self) -> list[dict]:
        return self.rest("/jobs/overview")["jobs"]

    def wait_for_state(self, job_id: str, states: set[str], timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.rest(f"/jobs/{job_id}")["state"]
            if state in states:
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is {state}, not one of {states}")
            time.sleep(1)

    def wait_until_running(self, job_id: str, timeout: float = 120) -> None:
        """RUNNING with every task running, not just scheduled."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.rest(f"/jobs/{job_id}")
            if job["state"] in {"FAILED", "CANCELED", "FINISHED"}:
                raise RuntimeError(f"job {job_id} ended as {job['state']}")
            counts = job.get("status-counts", {})
            if job["state"] == "RUNNING" and counts.get("RUNNING", 0) == sum(counts.values()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not running: {job['state']} {counts}")
            time.sleep(1)

    def cancel(self, job_id: str) -> None:
        self.rest(f"/jobs/{job_id}", method="PATCH")
        self.wait_for_state(job_id, {"CANCELED", "FAILED", "FINISHED"})


def run_local(job_args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs the job in a local minicluster (its own JVM), with the repository's flink-conf/."""
    env = dict(os.environ, FLINK_CONF_DIR=str(FLINK_CONF))
    jar_list = ",".join(str(p) for p in jars.connector_jars())
    return subprocess.run(
        [str(PYTHON), str(ROOT / "job" / "main.py"), "--jars", jar_list, *job_args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
