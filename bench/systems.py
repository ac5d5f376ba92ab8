"""The systems under test, each started on fresh topics and stopped after its run.

All four read the same pre-loaded input topics and write to their own output topic; the
benchmark only sees processes (for CPU and memory) and topics (for outputs and latency).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

from job.config import JobConfig
from stack.flink import FlinkCluster
from stack.paths import PYTHON, ROOT, RUN
from stack.submit import submit, submit_correlator

FAUST_PYTHON = ROOT / ".cache" / "faust-venv" / "bin" / "python"


class System:
    """One system under test, seen as processes and topics."""

    name: str
    records_per_output: int  # input records behind each output record

    def start(self, config: JobConfig) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> list[int]: ...

    def progress(self) -> int | None:
        """Input records done so far, if the system can tell (else its outputs count)."""
        return None

    def details(self) -> dict:
        """Anything else worth keeping from the run, read just before the system stops."""
        return {}

    def failure(self) -> str | None:
        """Why the system can no longer produce output (it exited), or None while it can."""
        return None


@dataclass
class FlinkCorrelator(System):
    """Our job, submitted with `flink run -py` to the benchmark's cluster."""

    cluster: FlinkCluster
    parallelism: int = 1
    options: dict[str, str] = field(default_factory=dict)  # per-job Flink settings (`-D`)
    label: str = ""
    records_per_output = 5
    job_id: str | None = None
    _read: int = 0

    @property
    def name(self) -> str:
        return self.label or f"Flink job, parallelism {self.parallelism}"

    def start(self, config: JobConfig) -> None:
        self._read = 0
        self.job_id = self.submit(replace(config, parallelism=self.parallelism))
        self.cluster.api.wait_until_running(self.job_id)

    def submit(self, config: JobConfig) -> str:
        return submit_correlator(self.cluster, config, options=self.options)

    def stop(self) -> None:
        if self.job_id:
            self.cluster.api.cancel(self.job_id)
            self.job_id = None

    def details(self) -> dict:
        """Checkpoint figures: exactly-once output waits for them."""
        if not self.job_id:
            return {}
        stats = self.cluster.api.rest(f"/jobs/{self.job_id}/checkpoints")
        summary = stats["summary"]["end_to_end_duration"]
        return {
            "checkpoints": stats["counts"],
            "checkpoint_duration_ms": {k: summary.get(k) for k in ("min", "avg", "p99", "max")},
            "recent_checkpoints": [
                {k: c.get(k) for k in ("id", "status", "trigger_timestamp", "end_to_end_duration")}
                for c in stats["history"]
            ],
        }

    def pids(self) -> list[int]:
        return self.cluster.running_taskmanagers()

    def progress(self) -> int | None:
        """Records read by the Kafka source. Backpressure keeps the source within a few
        buffers of the slowest operator, so its rate is the job's sustained rate."""
        if self.job_id:
            with contextlib.suppress(OSError, StopIteration):  # not all tasks up yet
                metrics = self.cluster.api.operator_metrics(
                    self.job_id, "Source: input_records", "Source__", suffix=".numRecordsOut"
                )
                self._read = max(self._read, int(sum(metrics.values())))
        return self._read


@dataclass
class FlinkSqlCopy(FlinkCorrelator):
    """The engine's ceiling: the same source and sink, no Python (bench/peers/sql_copy.py)."""

    records_per_output = 1

    @property
    def name(self) -> str:
        return "Flink SQL copy (ceiling)"

    def submit(self, config: JobConfig) -> str:
        return submit(
            self.cluster,
            config.to_args(),
            script="bench/peers/sql_copy.py",
            python_per_record=False,
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
        "--group-id", config.group_id,
    ]  # fmt: skip


@dataclass
class DictLoop(Subprocess):
    name = "kafka-python dict loop"
    records_per_output = 5

    def command(self, config: JobConfig) -> list[str]:
        return [str(PYTHON), "-m", "bench.peers.dict_loop", *_peer_args(config)]


@dataclass
class Faust(Subprocess):
    name = "faust-streaming app"
    records_per_output = 5

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
            "PEER_APP_ID": config.group_id,
            "PEER_DATA_DIR": str(RUN / "bench" / f"faust-{config.group_id}"),
        }

    @staticmethod
    def available() -> bool:
        return Path(FAUST_PYTHON).exists() and os.access(FAUST_PYTHON, os.X_OK)
