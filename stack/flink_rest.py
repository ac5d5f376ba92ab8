"""A client of Flink's REST API: jobs, their state, checkpoints, savepoints and metrics.

Knows nothing of processes: `stack.flink.FlinkCluster` starts and stops those.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

_NAMES_PER_REQUEST = 40  # metric ids of up to ~80 characters each: URLs under 4 KB
_FETCH_LANDS_S = 0.5  # a metric fetch from the TaskManagers took milliseconds here


# The states a job never leaves.
ENDED = frozenset({"FINISHED", "CANCELED", "FAILED"})


@dataclass(frozen=True)
class FlinkRest:
    url: str  # e.g. http://127.0.0.1:8081

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

    def jobs(self) -> list[dict]:
        return self.rest("/jobs/overview")["jobs"]

    def wait_for_state(self, job_id: str, states: Set[str], timeout: float = 120) -> str:
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
            if job["state"] in ENDED:
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

        A request that finds the JobManager's metric store older than that starts a fetch
        from the TaskManagers and answers at once, while the store is being replaced metric
        by metric: values read then mix two moments (seen: one type's count 10 s behind the
        others'). So the names are listed first, which starts that fetch, and the values are
        read once it has landed; they are then one snapshot until the next refresh.
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
            time.sleep(_FETCH_LANDS_S)
            metrics = {}
            # A few names per request: the REST server refuses URLs beyond 4 KB.
            for start in range(0, len(names), _NAMES_PER_REQUEST):
                chunk = ",".join(names[start : start + _NAMES_PER_REQUEST])
                values = self.rest(f"{base}?get={quote(chunk)}&agg=sum")
                metrics.update({m["id"][len(prefix) :]: float(m["sum"]) for m in values})
            if until is None or until(metrics) or time.monotonic() > deadline:
                return metrics
            time.sleep(2)

    def cancel(self, job_id: str) -> None:
        self.rest(f"/jobs/{job_id}", method="PATCH")
        self.wait_for_state(job_id, ENDED)

    def cancel_if_running(self, job_id: str) -> None:
        """Cancels the job unless it has ended already (stopped with a savepoint, failed,
        cancelled before) or is unknown."""
        job = self.rest(f"/jobs/{job_id}", quiet=True)
        if job is not None and job["state"] not in ENDED:
            self.cancel(job_id)

    def savepoint(self, job_id: str, directory: Path | str, timeout: float = 120) -> str:
        """Takes a savepoint of a running job (`flink savepoint`), which goes on running,
        into a folder or a URI; returns the savepoint's path."""
        target = directory.as_uri() if isinstance(directory, Path) else directory
        trigger = self.rest(
            f"/jobs/{job_id}/savepoints", method="POST",
            body={"target-directory": target, "cancel-job": False},
        )["request-id"]  # fmt: skip
        return self._savepoint_done(job_id, trigger, timeout, stops=False)

    def stop_with_savepoint(self, job_id: str, directory: Path | str, timeout: float = 120) -> str:
        """Stops the job after a savepoint (`flink stop`) into a folder or a URI (`s3://...`)
        and returns the savepoint's path."""
        target = directory.as_uri() if isinstance(directory, Path) else directory
        trigger = self.rest(
            f"/jobs/{job_id}/stop", method="POST", body={"drain": False, "targetDirectory": target}
        )["request-id"]
        return self._savepoint_done(job_id, trigger, timeout, stops=True)

    def _savepoint_done(self, job_id: str, trigger: str, timeout: float, stops: bool) -> str:
        deadline = time.monotonic() + timeout
        while True:
            result = self.rest(f"/jobs/{job_id}/savepoints/{trigger}")
            if result["status"]["id"] == "COMPLETED":
                operation = result["operation"]
                if "failure-cause" in operation:
                    cause = operation["failure-cause"].get("stack-trace", "").splitlines()
                    raise RuntimeError(f"savepoint failed: {cause[0] if cause else operation}")
                if stops:
                    self.wait_for_state(job_id, ENDED)
                return operation["location"]
            if time.monotonic() > deadline:
                raise TimeoutError(f"savepoint of {job_id} did not complete")
            time.sleep(1)
