"""The systems under test, each started on fresh topics and stopped after its run.

All of them read the same pre-loaded input topics and write to output topics of their own; the
benchmark only sees processes (for CPU and memory) and topics (for outputs and latency).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from bench.procs import cpu_seconds
from bench.workload import Workload
from job.config import JobConfig
from stack.flink import FlinkCluster, local_command, local_environment
from stack.flink_rest import ENDED
from stack.paths import FLINK_CONF, PYTHON, ROOT, RUN
from stack.submit import submit, submit_correlator

FAUST_PYTHON = ROOT / ".cache" / "faust-venv" / "bin" / "python"


def flink_checkpoint_interval_s() -> float:
    """flink-conf/config.yaml's checkpoint interval (5 s if it cannot be read)."""
    try:
        conf = yaml.safe_load((FLINK_CONF / "config.yaml").read_text())
        text = str(conf["execution"]["checkpointing"]["interval"]).strip().lower()
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return 5.0
    for unit, factor in (("ms", 0.001), ("min", 60.0), ("s", 1.0)):
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)].strip()) * factor
            except ValueError:
                return 5.0
    try:
        return float(text) / 1000  # a bare number is milliseconds
    except ValueError:
        return 5.0


class System:
    """One system under test, seen as processes and topics."""

    name: str
    # A correlator writes one aggregate or partial per transaction; the copy job one output
    # per input record, malformed ones included.
    correlates: bool = True
    # Whether the processes that run the tasks are some of all it needs (Flink: the
    # TaskManagers of client, JobManager and TaskManagers), so their CPU is shown apart.
    task_processes_apart: bool = False
    # A bounded system ends after the backlog: it has no latency runs.
    bounded: bool = False

    def output_step_s(self, config: JobConfig) -> float:
        """How far apart output becomes visible in steps (exactly-once: the checkpoint
        interval); 0 for a system whose outputs show as they are written."""
        return 0.0

    def prepare(self) -> None:
        """Anything the harness does before the clock starts (fresh TaskManagers)."""

    def start(self, config: JobConfig) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> list[int]:
        """The processes that run the system's work (Flink: its TaskManagers)."""
        ...

    def all_pids(self) -> list[int]:
        """Every process the system needs running, Kafka excepted (Flink: the JobManager
        too); a peer is one process."""
        return self.pids()

    def cpu_s(self) -> float:
        """CPU seconds so far of every process the system needs, including those that ran
        and exited (Flink's `flink run` client)."""
        return cpu_seconds(self.all_pids())

    def task_cpu_s(self) -> float:
        return cpu_seconds(self.pids())

    def expected_outputs(self, workload: Workload) -> int:
        return workload.count if self.correlates else workload.records

    def dead_letter_topic(self, config: JobConfig) -> str | None:
        """Where the system writes dead letters, if it does (our job; the peers skip)."""
        return None

    def latency_outputs(self, transactions: int, types: int) -> int:
        """Outputs expected for `transactions` complete transactions of `types` records."""
        return transactions if self.correlates else transactions * types

    def details(self) -> dict:
        """Anything else worth keeping from the run, read just before the system stops."""
        return {}

    def failure(self) -> str | None:
        """Why the system can no longer produce output (it exited), or None while it can."""
        return None


@dataclass
class FlinkCorrelator(System):
    """Our job, submitted with `flink run -py` to the benchmark's cluster.

    Every run starts on freshly started TaskManagers (before the clock): no run inherits an
    interpreter that already imported the job, a warm JIT or the memory of an earlier run.
    The clock then includes `flink run` (the client compiling the Python job), scheduling,
    the tasks' start-up and the first checkpoint that makes output visible.
    """

    cluster: FlinkCluster
    task_processes_apart = True
    parallelism: int = 1
    options: dict[str, str] = field(default_factory=dict)  # per-job Flink settings (`-D`)
    job_options: dict = field(default_factory=dict)  # JobConfig fields of this variant
    label: str = ""
    job_id: str | None = None
    client_cpu_s: float = 0.0  # what `flink run` (a JVM and a Python client) used
    _checked_at: float = 0.0

    @property
    def name(self) -> str:
        return self.label or f"Flink job, parallelism {self.parallelism}"

    def prepare(self) -> None:
        self.cluster.restart_taskmanagers()

    def output_step_s(self, config: JobConfig) -> float:
        return config.checkpoint_interval_s or flink_checkpoint_interval_s()

    def start(self, config: JobConfig) -> None:
        config = replace(config, parallelism=self.parallelism, **self.job_options)
        before = _children_cpu_s()
        self.job_id = self.submit(config)
        self.client_cpu_s = _children_cpu_s() - before
        self.cluster.api.wait_until_running(self.job_id)

    def submit(self, config: JobConfig) -> str:
        return submit_correlator(self.cluster, config, options=self.options)

    def dead_letter_topic(self, config: JobConfig) -> str | None:
        return config.dead_letter_topic if self.correlates else None

    def stop(self) -> None:
        if self.job_id:
            self.cluster.api.cancel_if_running(self.job_id)
            self.job_id = None

    def failure(self) -> str | None:
        """The job ended or failed (looked up at most every 2 s: the REST API is not free)."""
        if not self.job_id or time.monotonic() - self._checked_at < 2.0:
            return None
        self._checked_at = time.monotonic()
        job = self.cluster.api.rest(f"/jobs/{self.job_id}", quiet=True)
        if job is None or job["state"] not in ENDED:
            return None
        exceptions = self.cluster.api.rest(f"/jobs/{self.job_id}/exceptions", quiet=True) or {}
        root = (exceptions.get("rootException") or "")[:3000]
        return f"{self.name}: job {self.job_id} is {job['state']}\n{root}"

    def details(self) -> dict:
        """The parallelism the job ran at, and checkpoint figures: exactly-once output waits
        for them."""
        if not self.job_id:
            return {}
        job = self.cluster.api.rest(f"/jobs/{self.job_id}")
        stats = self.cluster.api.rest(f"/jobs/{self.job_id}/checkpoints")
        summary = stats["summary"]["end_to_end_duration"]
        return {
            "parallelism": max(vertex["parallelism"] for vertex in job["vertices"]),
            "checkpoints": stats["counts"],
            "checkpoint_duration_ms": {k: summary.get(k) for k in ("min", "avg", "p99", "max")},
            "recent_checkpoints": [
                {k: c.get(k) for k in ("id", "status", "trigger_timestamp", "end_to_end_duration")}
                for c in stats["history"]
            ],
        }

    def pids(self) -> list[int]:
        return self.cluster.running_taskmanagers()

    def all_pids(self) -> list[int]:
        return [*self.cluster.running_taskmanagers(), *self.cluster.jobmanagers()]

    def cpu_s(self) -> float:
        return super().cpu_s() + self.client_cpu_s


def _children_cpu_s() -> float:
    """CPU seconds of this process's children that exited (and theirs), such as the
    `flink run` client: /proc no longer shows them."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class FlinkSqlCopy(FlinkCorrelator):
    """The engine's ceiling: the same source and sink, no Python (bench/peers/sql_copy.py)."""

    correlates = False

    @property
    def name(self) -> str:
        at = "" if self.parallelism == 1 else f", parallelism {self.parallelism}"
        return f"Flink SQL copy{at} (ceiling)"

    def submit(self, config: JobConfig) -> str:
        return submit(
            self.cluster,
            config.to_args(),
            script="bench/peers/sql_copy.py",
            python_per_record=False,
            options=self.options,
        )


@dataclass
class PythonCeiling(FlinkCorrelator):
    """Our job's source, keying and sink around a Python function that passes each record
    through (`pass`), or that also puts it in `MapState` and sets a timer (`state`):
    bench/peers/python_ceiling.py. Our job's share of their rates is how close it is to the
    limit of its own shape."""

    ceiling: str = "pass"
    correlates = False

    @property
    def name(self) -> str:
        if self.ceiling == "pass":
            return "Python pass-through (ceiling)"
        return "Python pass-through + MapState put + timer (ceiling)"

    def submit(self, config: JobConfig) -> str:
        return submit(
            self.cluster,
            ["--ceiling", self.ceiling, *config.to_args()],
            script="bench/peers/python_ceiling.py",
            options=self.options,
        )


@dataclass
class Subprocess(System):
    """A peer that is one local process, stopped with SIGTERM."""

    process: subprocess.Popen | None = None

    def command(self, config: JobConfig) -> list[str]: ...

    def environment(self, config: JobConfig) -> dict[str, str]:
        return {}

    @property
    def log(self) -> Path:
        return RUN / "bench" / f"{self.name.split()[0].lower()}.log"

    def start(self, config: JobConfig) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.command(config),
                cwd=ROOT,
                # Unbuffered: what the peer printed is in its log even if it is killed.
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.environment(config)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def failure(self) -> str | None:
        if self.process is None or self.process.poll() is None:
            return None
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        return f"{self.name} exited with code {self.process.returncode}; its log ends:\n{tail}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def pids(self) -> list[int]:
        return [self.process.pid] if self.process and self.process.poll() is None else []


def _peer_args(config: JobConfig) -> list[str]:
    return [
        "--bootstrap-servers", config.bootstrap_servers,
        "--types", ",".join(config.types),
        "--topic-prefix", config.topic_prefix,
        "--aggregated-topic", config.aggregated_topic,
        "--expired-topic", config.expired_topic,
        "--timeout-s", str(config.timeout_s),
        "--out-of-orderness-s", str(config.out_of_orderness_s),
        "--expiry-grace-s", str(config.expiry_grace_s),
        "--group-id", config.group_id,
    ]  # fmt: skip


@dataclass
class DictLoop(Subprocess):
    name = "kafka-python dict loop"

    def command(self, config: JobConfig) -> list[str]:
        return [str(PYTHON), "-m", "bench.peers.dict_loop", *_peer_args(config)]


@dataclass
class Recompute(Subprocess):
    """Our job as `stack recompute` runs it: bounded by record timestamps (here the whole
    backlog), in a local minicluster of its own (`stack.flink.run_local`'s command), ending by
    itself. The clock includes the minicluster's start."""

    name = "Flink job, recompute (bounded, minicluster)"
    bounded = True
    _last_cpu_s: float = 0.0

    def command(self, config: JobConfig) -> list[str]:
        until = int(time.time() * 1000) + 3_600_000
        return local_command(replace(config, read_from_ms=1, read_until_ms=until).to_args())

    def environment(self, config: JobConfig) -> dict[str, str]:
        return local_environment()

    def cpu_s(self) -> float:
        """Its CPU until the last sample before it exited (/proc forgets an ended process)."""
        self._last_cpu_s = max(self._last_cpu_s, super().cpu_s())
        return self._last_cpu_s

    def failure(self) -> str | None:
        """Only a failed run: a bounded job exits once its last outputs are committed."""
        if self.process is None or self.process.poll() in (None, 0):
            return None
        return super().failure()


@dataclass
class Faust(Subprocess):
    name = "faust-streaming app"

    def command(self, config: JobConfig) -> list[str]:
        return [str(FAUST_PYTHON), "bench/peers/faust_app.py", "worker", "-l", "warning"]

    def environment(self, config: JobConfig) -> dict[str, str]:
        return {
            "PEER_BOOTSTRAP_SERVERS": config.bootstrap_servers,
            "PEER_TYPES": ",".join(config.types),
            "PEER_TOPIC_PREFIX": config.topic_prefix,
            "PEER_AGGREGATED_TOPIC": config.aggregated_topic,
            "PEER_EXPIRED_TOPIC": config.expired_topic,
            "PEER_TIMEOUT_S": str(config.timeout_s),
            "PEER_OUT_OF_ORDERNESS_S": str(config.out_of_orderness_s),
            "PEER_EXPIRY_GRACE_S": str(config.expiry_grace_s),
            "PEER_APP_ID": config.group_id,
            "PEER_DATA_DIR": str(RUN / "bench" / f"faust-{config.group_id}"),
        }

    @staticmethod
    def available() -> bool:
        return Path(FAUST_PYTHON).exists() and os.access(FAUST_PYTHON, os.X_OK)
