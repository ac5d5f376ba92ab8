"""A Flink standalone cluster from the scripts inside the `apache-flink` pip package: its
processes (JobManager, TaskManagers) and their folders. The REST API is `stack.flink_rest`,
job submission `stack.submit`.

`FLINK_CONF_DIR` points at the repository's `flink-conf/`; what differs between the demo
cluster and a test cluster (ports, the folders for checkpoints, logs and pids) is passed as
`-D` overrides, so the checked-in configuration stays the single source of settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from job.config import LOCAL_FLINK_CONF
from stack import jars
from stack.client import write_class_archive
from stack.flink_rest import FlinkRest
from stack.paths import FLINK_CONF, FLINK_HOME, PYTHON, ROOT, RUN, path_with_venv


@dataclass
class FlinkCluster:
    rest_port: int = 8081
    rpc_port: int = 6123
    taskmanagers: int = 1
    # Where the REST API answers: this machine's cluster, or any other one's (`stack
    # --rest-address`: submit, status and the lifecycle commands work on any cluster).
    rest_address: str = "127.0.0.1"
    # More `-D` settings for this cluster only (the benchmark refreshes metrics every second).
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.rest_address}:{self.rest_port}"

    @property
    def api(self) -> FlinkRest:
        """The cluster's REST API (jobs, checkpoints, metrics)."""
        return FlinkRest(self.url)

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

    def env(self) -> dict[str, str]:
        """The environment of Flink's scripts for this cluster (`start` prepares lib/)."""
        env = dict(os.environ)
        env.update(
            FLINK_CONF_DIR=str(FLINK_CONF),
            FLINK_LIB_DIR=str(self.lib),
            FLINK_LOG_DIR=str(self.home / "log"),
            FLINK_PID_DIR=str(self.home),
            PATH=path_with_venv(),
        )
        return env

    def submit_options(self) -> list[str]:
        """What `flink run` needs to find this cluster (its REST endpoint)."""
        return ["-D", f"rest.port={self.rest_port}", "-D", f"rest.address={self.rest_address}"]

    def _script(self, name: str, *args: str) -> None:
        link_lib(self.lib)  # the scripts build the class path from lib/
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
        if not self._jobmanager_alive() and self.api.rest("/overview", quiet=True) is None:
            for folder in (self.home / "log", self.checkpoints, self.savepoints):
                folder.mkdir(parents=True, exist_ok=True)
            self._script("jobmanager.sh", "start", *self.overrides())
        started = self.replace_dead_taskmanagers()
        if started:
            print(f"started {started} TaskManager(s) on {self.url}", flush=True)
        self.wait_for_taskmanagers(self.taskmanagers, timeout)
        write_class_archive(self.env())  # once per cluster: its first `flink run` is quick too

    def replace_dead_taskmanagers(self) -> int:
        """Starts TaskManagers until `taskmanagers` processes run; returns how many it started."""
        with self._taskmanagers_lock():
            alive = len(self.running_taskmanagers())
            if alive == 0:
                self.fingerprint_file.write_text("")  # fresh interpreters: no job code yet
            self.add_taskmanagers(self.taskmanagers - alive)
        return max(self.taskmanagers - alive, 0)

    @contextlib.contextmanager
    def _taskmanagers_lock(self):
        """One changer of the TaskManager processes at a time: the supervisor must not
        start replacements while `restart_taskmanagers` stops and starts them on purpose."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "taskmanagers.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def supervise(self, interval_s: float = 2.0, stop=None) -> None:
        """Restarts crashed TaskManagers as they die, as Kubernetes would restart a pod, until
        `stop()` is true (forever by default; SIGTERM or Ctrl-C ends it)."""
        while stop is None or not stop():
            stamp = time.strftime("%H:%M:%S")
            try:
                started = self.replace_dead_taskmanagers()
            except Exception as error:  # noqa: BLE001 - a bad round must not end supervision
                print(f"{stamp} could not start TaskManagers, trying again: {error}", flush=True)
                started = 0
            if started:
                print(f"{stamp} restarted {started} crashed TaskManager(s)", flush=True)
            time.sleep(interval_s)

    # --- the supervisor: `supervise` in a process of its own --------------------------------

    @property
    def supervisor_pid_file(self) -> Path:
        return self.home / "supervisor.pid"

    @property
    def supervisor_log(self) -> Path:
        return self.home / "log" / "supervisor.log"

    def supervisor_pid(self) -> int | None:
        """The running supervisor's pid, or None."""
        try:
            pid = int(self.supervisor_pid_file.read_text())
        except (OSError, ValueError):
            return None
        return pid if "stack" in (_cmdline(pid) or "") and _alive(pid) else None

    def start_supervisor(self) -> bool:
        """Starts `python -m stack supervise` for this cluster in the background, unless one
        runs; returns whether it started one. It outlives the command that started it, as the
        cluster does; `stop` ends it first."""
        if self.supervisor_pid() is not None:
            return False
        self.supervisor_log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            str(PYTHON), "-m", "stack", "supervise", "--rest-port", str(self.rest_port),
            "--rpc-port", str(self.rpc_port), "--taskmanagers", str(self.taskmanagers),
        ]  # fmt: skip
        with open(self.supervisor_log, "ab") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.supervisor_pid_file.write_text(str(process.pid))
        return True

    def stop_supervisor(self, timeout: float = 30) -> None:
        pid = self.supervisor_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
                time.sleep(0.1)
        self.supervisor_pid_file.unlink(missing_ok=True)

    def add_taskmanagers(self, count: int, timeout: float = 60) -> None:
        """Starts `count` TaskManagers and returns once each is its JVM (or has died).

        flink-daemon.sh returns as soon as it forked: until the fork has exec'd java it is
        the script's subshell, and while it execs its command line can read empty, so a
        count taken at once (the supervisor's next round, a caller's check) could miss it.
        """
        if count <= 0:
            return
        known = len(self._pids("taskexecutor"))  # the pid file only grows: new ones follow
        for _ in range(count):
            self._script("taskmanager.sh", "start", *self.overrides())
        started = self._pids("taskexecutor")[known:]
        deadline = time.monotonic() + timeout
        while not all(_is_jvm(pid) or not _alive(pid) for pid in started):
            if time.monotonic() > deadline:
                raise TimeoutError(f"TaskManagers {started} are not running java after {timeout} s")
            time.sleep(0.1)

    def _registered(self) -> int:
        """TaskManagers the JobManager lists (a dead one, until it is noticed, too)."""
        overview = self.api.rest("/overview", quiet=True)
        return 0 if overview is None else overview["taskmanagers"]

    def wait_for_taskmanagers(self, count: int, timeout: float, at_most: bool = False) -> None:
        """Waits for at least (or, with at_most, at most) `count` registered TaskManagers."""
        deadline = time.monotonic() + timeout
        while (self._registered() > count) if at_most else (self._registered() < count):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Flink at {self.url}: TaskManagers are not {count}")
            time.sleep(1)

    def stop(self) -> None:
        """The supervisor first (else it would replace the TaskManagers as they stop)."""
        self.stop_supervisor()
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

    def taskmanager_of(self, job_id: str) -> int:
        """The pid of the TaskManager that runs a job's (first) task: found by the RPC port
        the JobManager names it by, among this machine's listening sockets."""
        vertex = self.api.rest(f"/jobs/{job_id}")["vertices"][0]["id"]
        placed = self.api.rest(f"/jobs/{job_id}/vertices/{vertex}/taskmanagers")["taskmanagers"]
        manager = placed[0]
        port = manager["taskmanager-id"].split(":")[1].split("-")[0]
        sockets = subprocess.run(
            ["ss", "-ltnpH"], capture_output=True, text=True, check=True
        ).stdout
        for line in sockets.splitlines():
            if line.split()[3].endswith(f":{port}"):
                return int(line.split("pid=")[1].split(",")[0])
        raise LookupError(f"no process listens on {port} ({manager['taskmanager-id']})")

    def jobmanagers(self) -> list[int]:
        """Pids of this cluster's JobManager processes that are alive."""
        return [p for p in self._pids("standalonesession") if _runs(p, "standalonesession")]

    def _jobmanager_alive(self) -> bool:
        return bool(self.jobmanagers())

    def kill_taskmanagers(self) -> int:
        """`kill -9` every TaskManager process, as a crash would; returns how many."""
        pids = self.running_taskmanagers()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def latest_checkpoint(self, job_id: str) -> str:
        """The newest retained checkpoint of a job on disk (usable with `-s` after a crash)."""
        folders = [
            p for p in (self.checkpoints / job_id).glob("chk-*") if (p / "_metadata").exists()
        ]
        if not folders:
            raise FileNotFoundError(f"no completed checkpoint of {job_id} in {self.checkpoints}")
        return max(folders, key=lambda p: int(p.name.split("-")[1])).as_uri()

    @property
    def fingerprint_file(self) -> Path:
        return self.home / "taskmanager-code.sha256"

    def restart_taskmanagers(self) -> None:
        """Fresh TaskManager processes (fresh interpreters, memory back to a baseline)."""
        count = max(self._registered(), self.taskmanagers)
        with self._taskmanagers_lock():
            self._script("taskmanager.sh", "stop-all")
            self.wait_for_taskmanagers(0, timeout=60, at_most=True)
            self.add_taskmanagers(count)
        self.wait_for_taskmanagers(count, timeout=120)
        self.fingerprint_file.write_text("")


# The distribution's planner loader; lib/ has the planner it would unpack instead.
PLANNER_LOADER = "flink-table-planner-loader-*.jar"


def link_lib(lib: Path) -> None:
    """A cluster's lib/: the distribution's, flink-python from opt/ (Python jobs need it
    there) and the connector jars.

    Connectors belong in lib/, not in each job's jars: a Kafka client thread that outlives a
    job whose class loader was closed failed with ClassNotFoundException in the JobManager
    when jobs were stopped and resubmitted.

    The table planner replaces the planner loader, as Flink's docs describe for clusters that
    plan with Scala's planner directly: the loader unpacks the planner into a new temporary
    folder in each JVM, which costs `flink run` the unpacking and keeps its class-data archive
    (`stack.client`) from covering the planner's classes. Measured on an idle local cluster,
    3 submissions each: 8.2-8.8 s with the loader, 6.7-7.2 s with the planner in lib/.
    """
    lib.mkdir(parents=True, exist_ok=True)
    jar_paths = [
        *(j for j in (FLINK_HOME / "lib").glob("*.jar") if not j.match(PLANNER_LOADER)),
        *(FLINK_HOME / "opt").glob("flink-python-*.jar"),
        *jars.connector_jars(),
        *jars.fetch("planner").glob("*.jar"),
    ]
    wanted = {jar.name for jar in jar_paths}
    for link in lib.glob("*.jar"):  # linked by an earlier version (the JDBC connector's)
        if link.is_symlink() and link.name not in wanted:
            link.unlink()
    for jar in jar_paths:
        link = lib / jar.name
        if not link.exists():
            link.symlink_to(jar)


def _cmdline(pid: int) -> str | None:
    """Process `pid`'s command line, lower case; None when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").lower()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """Running (a zombie, dead but not yet reaped, reads an empty command line: not alive)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_jvm(pid: int) -> bool:
    """Past the exec: the JVM of a TaskManager (its main class names it)."""
    return "taskmanagerrunner" in (_cmdline(pid) or "")


def _runs(pid: int, daemon: str) -> bool:
    """Whether process `pid` is alive and is a Flink `daemon` (pids get reused).

    Right after flink-daemon.sh started it, the process may still be the script's subshell
    (its command line names the daemon) rather than the JVM (whose main class does, in
    other letters): both count, or a supervisor would start a second one.
    """
    return daemon in (_cmdline(pid) or "")


def code_fingerprint() -> str:
    """A hash of the job's Python and SQL sources."""
    digest = hashlib.sha256()
    for path in sorted([*(ROOT / "job").glob("*.py"), *(ROOT / "sql").glob("*.sql")]):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def local_command(job_args: list[str]) -> list[str]:
    """The command that runs the job in a local minicluster (its own JVM); run it with
    `local_environment()`."""
    jar_list = ",".join(str(p) for p in jars.connector_jars())
    return [str(PYTHON), str(ROOT / "job" / "main.py"), "--jars", jar_list, *job_args]


def local_environment() -> dict[str, str]:
    """What a minicluster needs beside the environment: flink-conf/ as `minicluster_conf`
    adapts it, and the venv's `python` first on PATH, as for the cluster's processes."""
    conf = str(minicluster_conf())
    return {"FLINK_CONF_DIR": conf, LOCAL_FLINK_CONF: conf, "PATH": path_with_venv()}


# A bounded run must end: a few restarts for a passing fault, then the failure, where the
# cluster's job restarts forever (a recompute of bad rules would hang for its 24 h timeout).
BOUNDED_RUN_RESTARTS = {"type": "fixed-delay", "fixed-delay": {"attempts": 3, "delay": "2s"}}


def minicluster_conf() -> Path:
    """flink-conf/ for a minicluster beside a running cluster (`stack recompute`): the same
    state backend, checkpoints and execution mode, but the web UI on a free port instead of
    the cluster's 8081, and no metrics reporter, so the local Prometheus neither scrapes it
    nor counts its TaskManager, and the product's alerts never see a recompute.

    Checkpoints go to a folder, as the cluster's do (`FlinkCluster` passes its own): without
    one Flink keeps them in the JobManager's memory, which refuses a state over 5 MB.

    Flink reads no configuration file for a local run: the run applies this folder's job
    settings itself (`job.pipeline.local_settings`, named by `LOCAL_FLINK_CONF`)."""
    folder = RUN / "minicluster-conf"
    folder.mkdir(parents=True, exist_ok=True)
    for path in FLINK_CONF.iterdir():
        if path.is_file() and path.name != "config.yaml":
            shutil.copy2(path, folder / path.name)
    conf = yaml.safe_load((FLINK_CONF / "config.yaml").read_text())
    conf.pop("metrics", None)
    conf["rest"] = {"bind-address": "127.0.0.1", "address": "127.0.0.1", "bind-port": "0"}
    checkpointing = conf.setdefault("execution", {}).setdefault("checkpointing", {})
    checkpointing["dir"] = (RUN / "minicluster" / "checkpoints").as_uri()
    conf["restart-strategy"] = BOUNDED_RUN_RESTARTS
    (folder / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    return folder


def run_local(job_args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs the job in a local minicluster to its end (a bounded one)."""
    return subprocess.run(
        local_command(job_args), env={**os.environ, **local_environment()}, cwd=ROOT,
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
