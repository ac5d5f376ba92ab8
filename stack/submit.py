"""Submits the jobs to a cluster with `flink run -py`, as a user would.

In thread mode each TaskManager keeps one embedded Python interpreter for its whole life, so
before a job whose operators run Python is submitted, TaskManagers that imported an older
version of the job's code are restarted (`ensure_fresh_code`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from job.config import JobConfig, WriterConfig
from stack.client import flink_client
from stack.flink import FlinkCluster, code_fingerprint
from stack.flink_rest import ENDED
from stack.paths import PYTHON, ROOT

if TYPE_CHECKING:
    from stack.hosts import HostsCluster


def ensure_fresh_code(cluster: FlinkCluster | HostsCluster) -> None:
    """Restarts idle TaskManagers that imported an older version of the job's code.

    Modules imported by an earlier job stay in the embedded interpreter's `sys.modules`: a
    new job version submitted to the same TaskManager would silently run the old code.
    """
    current = code_fingerprint()
    # "" means fresh TaskManagers that imported nothing yet; no file means unknown.
    known = cluster.fingerprint_file.read_text() if cluster.fingerprint_file.exists() else None
    if known not in ("", current):
        if any(j["state"] not in ENDED for j in cluster.api.jobs()):
            raise RuntimeError(
                "the job's code changed but a job is still running on these TaskManagers; "
                "stop it with a savepoint first, then submit again"
            )
        cluster.restart_taskmanagers()
    cluster.fingerprint_file.write_text(current)


def submit(
    cluster: FlinkCluster | HostsCluster,
    job_args: list[str],
    detached: bool = True,
    script: str = "job/main.py",
    python_per_record: bool = True,
    restore_from: str | None = None,
    options: dict[str, str] | None = None,
    allow_non_restored_state: bool = False,
) -> str:
    """Submits a Python script (relative to the repository) with `flink run -py` and
    returns its job id.

    A job whose operators run Python (both jobs of the product) needs TaskManagers that have
    not imported an older version of its code. `options`
    are Flink settings for this job only (`-D`), e.g. the execution mode.
    """
    if python_per_record:
        ensure_fresh_code(cluster)
    arguments = [
        "run",
        *(["-d"] if detached else []),
        *cluster.submit_options(),
        *(arg for k, v in (options or {}).items() for arg in ("-D", f"{k}={v}")),
        *(["-s", restore_from] if restore_from else []),
        *(["--allowNonRestoredState"] if allow_non_restored_state else []),
        "-pyclientexec", str(PYTHON), "-pyexec", str(PYTHON),
        "-py", str(ROOT / script),
        *job_args,
    ]  # fmt: skip
    result = flink_client(cluster.env(), arguments)
    for line in result.stdout.splitlines():
        if "JobID" in line:
            return line.split()[-1]
    raise RuntimeError(f"flink run failed:\n{result.stdout}\n{result.stderr}")


def submit_correlator(
    cluster: FlinkCluster | HostsCluster,
    config: JobConfig,
    restore_from: str | None = None,
    options: dict[str, str] | None = None,
    allow_non_restored_state: bool = False,
) -> str:
    return submit(cluster, config.to_args(), restore_from=restore_from, options=options,
                  allow_non_restored_state=allow_non_restored_state)  # fmt: skip


def submit_writer(
    cluster: FlinkCluster, config: WriterConfig, restore_from: str | None = None,
    allow_non_restored_state: bool = False,
) -> str:  # fmt: skip
    return submit(cluster, config.to_args(), script="job/writer.py", restore_from=restore_from,
                  allow_non_restored_state=allow_non_restored_state)  # fmt: skip
