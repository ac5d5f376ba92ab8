"""A Flink standalone cluster from the scripts inside the `apache-flink` pip package.

`FLINK_CONF_DIR` points at the repository's `flink-conf/`; what differs between the demo
cluster and a test cluster (ports, the folders for checkpoints, logs and pids) is passed as
`-D` overrides, so the checked-in configuration stays the single source of settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from job.config import JobConfig, WriterConfig
from stack import jars
from stack.paths import FLINK_CONF, FLINK_HOME, PYTHON, ROOT, RUN


@dataclass
class FlinkCluster:
    rest_port: int = 8081
    rpc_port: int = 6123
    taskmanagers: int = 1
    # More `-D` settings for this cluster only (the benchmark refreshes metrics every second).
    settings: dict[str, str] = field(default_factory=dict)

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
            **self.settings,
        }
        return [arg for k, v in settings.items() for arg in ("-D", f"{k}={v}")]

    @property
    def lib(self) -> Path:
        return self.home / "lib"

    def _link_lib(self) -> None:
        """The distribution's lib/, flink-python from opt/ (Python jobs need it there) and
        the connector jars.

        Connectors belong in lib/, not in each job's jars: a Kafka client thread that
        outlives a job whose class loader was closed failed with ClassNotFoundException
        in the JobManager when jobs were stopped and resubmitted.
        """
        self.lib.mkdir(parents=True, exist_ok=True)
        jar_paths = [
            *(FLINK_HOME / "lib").glob("*.jar"),
            *(FLINK_HOME / "opt").glob("flink-python-*.jar"),
            *jars.connector_jars("jdbc"),
        ]
        for jar in jar_paths:
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
        """Starts what is not running: the JobManager, and as many TaskManager processes as
        are missing, then waits until that many are registered.

        TaskManagers are counted as processes, not as registrations: right after a crash the
        JobManager still lists a dead TaskManager until its heartbeat times out, and counting
        that would start nothing when something is needed.
        """
        if not self._jobmanager_alive() and self.rest("/overview", quiet=True) is None:
            for folder in (self.home / "log", self.checkpoints, self.savepoints):
                folder.mkdir(parents=True, exist_ok=True)
            self._script("jobmanager.sh", "start", *self.overrides())
        started = self.replace_dead_taskmanagers()
        if started:
            print(f"started {started} TaskManager(s) on {self.url}", flush=True)
        self.wait_for_taskmanagers(self.taskmanagers, timeout)

    def replace_dead_taskmanagers(self) -> int:
        """Starts TaskManagers until `taskmanagers` processes run; returns how many it started."""
        alive = len(self.running_taskmanagers())
        if alive == 0:
            self._fingerprint_file.write_text("")  # fresh interpreters: no job code yet
        self.add_taskmanagers(self.taskmanagers - alive)
        return max(self.taskmanagers - alive, 0)

    def supervise(self, interval_s: float = 2.0, stop=None) -> None:
        """Restarts crashed TaskManagers as they die, as Kubernetes would restart a pod, until
        `stop()` is true (forever by default; Ctrl-C ends it)."""
        while stop is None or not stop():
            started = self.replace_dead_taskmanagers()
            if started:
                stamp = time.strftime("%H:%M:%S")
                print(f"{stamp} restarted {started} crashed TaskManager(s)", flush=True)
            time.sleep(interval_s)

    def add_taskmanagers(self, count: int) -> None:
        for _ in range(max(count, 0)):
            self._script("taskmanager.sh", "start", *self.overrides())

    def _registered(self) -> int:
        """TaskManagers the JobManager lists (a dead one, until it is noticed, too)."""
        overview = self.rest("/overview", quiet=True)
        return 0 if overview is None else overview["taskmanagers"]

    def wait_for_taskmanagers(self, count: int, timeout: float, at_most: bool = False) -> None:
        """Waits for at least (or, with at_most, at most) `count` registered TaskManagers."""
        deadline = time.monotonic() + timeout
        while (self._registered() > count) if at_most else (self._registered() < count):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Flink at {self.url}: TaskManagers are not {count}")
            time.sleep(1)

    def stop(self) -> None:
        for script in ("taskmanager.sh", "jobmanager.sh"):
            self._script(script, "stop-all")

    def _pids(self, daemon: str) -> list[int]:
        """The pids flink-daemon.sh recorded for a daemon; dead ones stay listed there."""
        # flink-daemon.sh writes flink-$USER-<daemon>.pid ($USER may be empty).
        pid_file = next(self.home.glob(f"flink-*-{daemon}.pid"), None)
        return [int(p) for p in pid_file.read_text().split()] if pid_file else []

    def running_taskmanagers(self) -> list[int]:
        """Pids of this cluster's TaskManager processes that are alive."""
        return [p for p in self._pids("taskexecutor") if _runs(p, "taskexecutor")]

    def _jobmanager_alive(self) -> bool:
        return any(_runs(p, "standalonesession") for p in self._pids("standalonesession"))

    def kill_taskmanagers(self) -> int:
        """`kill -9` every TaskManager process, as a crash would; returns how many."""
        pids = self.running_taskmanagers()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop_with_savepoint(self, job_id: str, timeout: float = 120) -> str:
        """Stops the job after a savepoint (`flink stop`) and returns the savepoint's path."""
        trigger = self.rest(
            f"/jobs/{job_id}/stop",
            method="POST",
            body={"drain": False, "targetDirectory": self.savepoints.as_uri()},
        )["request-id"]
        deadline = time.monotonic() + timeout
        while True:
            result = self.rest(f"/jobs/{job_id}/savepoints/{trigger}")
            if result["status"]["id"] == "COMPLETED":
                operation = result["operation"]
                if "failure-cause" in operation:
                    raise RuntimeError(f"savepoint failed: {operation['failure-cause']}")
                self.wait_for_state(job_id, {"FINISHED", "CANCELED", "FAILED"})
                return operation["location"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"savepoint of {job_id} did not complete")
            time.sleep(1)

    def latest_checkpoint(self, job_id: str) -> str:
        """The newest retained checkpoint of a job on disk (usable with `-s` after a crash)."""
        folders = [
            p for p in (self.checkpoints / job_id).glob("chk-*") if (p / "_metadata").exists()
        ]
        if not folders:
            raise FileNotFoundError(f"no completed checkpoint of {job_id} in {self.checkpoints}")
        return max(folders, key=lambda p: int(p.name.split("-")[1])).as_uri()

    def rest(self, path: str, method: str = "GET", body: dict | None = None, quiet: bool = False):
        """Calls the REST API; with quiet=True a cluster that is not up answers None."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"null")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if quiet:
                return None
            raise

    @property
    def _fingerprint_file(self) -> Path:
        return self.home / "taskmanager-code.sha256"

    def _ensure_fresh_code(self) -> None:
        """Restarts idle TaskManagers that imported an older version of the job's code.

        In thread mode each TaskManager keeps one embedded Python interpreter for its whole
        life, and modules imported by an earlier job stay in its `sys.modules`: a new job
        version submitted to the same TaskManager would silently run the old code.
        """
        current = code_fingerprint()
        # "" means fresh TaskManagers that imported nothing yet; no file means unknown.
        known = self._fingerprint_file.read_text() if self._fingerprint_file.exists() else None
        if known not in ("", current):
            active = [
                j for j in self.jobs() if j["state"] not in {"FINISHED", "CANCELED", "FAILED"}
            ]
            if active:
                raise RuntimeError(
                    "the job's code changed but a job is still running on these TaskManagers; "
                    "stop it with a savepoint first, then submit again"
                )
            self.restart_taskmanagers()
        self._fingerprint_file.write_text(current)

    def restart_taskmanagers(self) -> None:
        """Fresh TaskManager processes (fresh interpreters, memory back to a baseline)."""
        count = max(self._registered(), self.taskmanagers)
        self._script("taskmanager.sh", "stop-all")
        self.wait_for_taskmanagers(0, timeout=60, at_most=True)
        self.add_taskmanagers(count)
        self.wait_for_taskmanagers(count, timeout=120)
        self._fingerprint_file.write_text("")

    def submit(
        self,
        job_args: list[str],
        detached: bool = True,
        script: str = "job/main.py",
        python_per_record: bool = True,
        restore_from: str | None = None,
        options: dict[str, str] | None = None,
    ) -> str:
        """Submits a Python script (relative to the repository) with `flink run -py` and
        returns its job id.

        A job whose operators run Python (the correlator) needs TaskManagers that have not
        imported an older version of its code; a pure SQL job (the writer) does not.
        """
        if python_per_record:
            self._ensure_fresh_code()
        command = [
            "bash", str(FLINK_HOME / "bin" / "flink"), "run",
            *(["-d"] if detached else []),
            "-D", f"rest.port={self.rest_port}", "-D", "rest.address=127.0.0.1",
            *(arg for k, v in (options or {}).items() for arg in ("-D", f"{k}={v}")),
            *(["-s", restore_from] if restore_from else []),
            "-pyclientexec", str(PYTHON), "-pyexec", str(PYTHON),
            "-py", str(ROOT / script),
            *job_args,
        ]  # fmt: skip
        result = subprocess.run(
            command, env=self.env(), cwd=ROOT, capture_output=True, text=True, check=False
        )
        for line in result.stdout.splitlines():
            if "JobID" in line:
                return line.split()[-1]
        raise RuntimeError(f"flink run failed:\n{result.stdout}\n{result.stderr}")

    def submit_correlator(
        self,
        config: JobConfig,
        restore_from: str | None = None,
        options: dict[str, str] | None = None,
    ) -> str:
        """`options` are Flink settings for this job only (`-D`), e.g. the execution mode."""
        return self.submit(config.to_args(), restore_from=restore_from, options=options)

    def submit_writer(self, config: WriterConfig) -> str:
        return self.submit(config.to_args(), script="job/writer.py", python_per_record=False)

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

    def operator_metrics(
        self,
        job_id: str,
        vertex_prefix: str,
        prefix: str,
        until=None,
        timeout: float = 30,
        suffix: str = "",
    ) -> dict[str, float]:
        """Metrics of one job vertex whose ids start with `prefix` and end with `suffix`
        (summed over subtasks).

        The REST API refreshes metrics every 10 s by default, so with `until` (a predicate
        on the metrics) this polls up to `timeout` seconds for it to hold.
        """
        deadline = time.monotonic() + timeout
        while True:
            vertex = next(
                v
                for v in self.rest(f"/jobs/{job_id}")["vertices"]
                if v["name"].startswith(vertex_prefix)
            )
            base = f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics"
            names = [
                m["id"]
                for m in self.rest(base)
                if m["id"].startswith(prefix) and m["id"].endswith(suffix)
            ]
            metrics = {}
            if names:
                values = self.rest(f"{base}?get={quote(','.join(names))}&agg=sum")
                metrics = {m["id"][len(prefix) :]: float(m["sum"]) for m in values}
            if until is None or until(metrics) or time.monotonic() > deadline:
                return metrics
            time.sleep(2)

    def cancel(self, job_id: str) -> None:
        self.rest(f"/jobs/{job_id}", method="PATCH")
        self.wait_for_state(job_id, {"CANCELED", "FAILED", "FINISHED"})


def _runs(pid: int, daemon: str) -> bool:
    """Whether process `pid` is alive and is a Flink `daemon` (pids get reused).

    Right after flink-daemon.sh started it, the process may still be the script's subshell
    (its command line names the daemon) rather than the JVM (whose main class does, in
    other letters): both count, or a supervisor would start a second one.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return daemon in cmdline.lower()


def code_fingerprint() -> str:
    """A hash of the job's Python and SQL sources."""
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "job").glob("*.py"), *(ROOT / "sql").glob("*.sql")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def run_local(job_args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs the job in a local minicluster (its own JVM), with the repository's flink-conf/."""
    env = dict(os.environ, FLINK_CONF_DIR=str(FLINK_CONF))
    jar_list = ",".join(str(p) for p in jars.connector_jars())
    return subprocess.run(
        [str(PYTHON), str(ROOT / "job" / "main.py"), "--jars", jar_list, *job_args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
