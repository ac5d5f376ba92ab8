"""`python -m stack status`: is the job healthy, how far behind is it, what has it done.

Reads the Flink REST API (job state, uptime, checkpoints, operator metrics) and Kafka's
admin API (the source's committed offsets against the topics' ends). Human-readable by
default; `--json` for scripts.
"""

from __future__ import annotations

import time

from job.config import JobConfig
from job.metrics import COUNTERS, RECORDS_IN
from stack.flink import FlinkCluster
from stack.kafka import consumer_lag


def collect(cluster: FlinkCluster, config: JobConfig) -> dict:
    """Everything the status command shows, as plain data."""
    status: dict = {"cluster": cluster.url, "job": None}
    if cluster.api.rest("/overview", quiet=True) is None:
        status["cluster"] = None
        return status
    jobs = [j for j in cluster.api.jobs() if j["name"] == config.job_name]
    if not jobs:
        return status
    job = max(jobs, key=lambda j: j["start-time"])
    job_id = job["jid"]
    now_ms = time.time() * 1000
    status["job"] = {
        "id": job_id,
        "name": job["name"],
        "state": job["state"],
        "uptime_s": round((now_ms - job["start-time"]) / 1000) if job["state"] == "RUNNING" else 0,
    }
    if job["state"] != "RUNNING":
        return status
    latest = cluster.api.rest(f"/jobs/{job_id}/checkpoints")["latest"]["completed"]
    status["last_checkpoint"] = latest and {
        "id": latest["id"],
        "age_s": round((now_ms - latest["latest_ack_timestamp"]) / 1000, 1),
        "size_bytes": latest["checkpointed_size"],
        "full_state_bytes": latest["state_size"],
    }
    correlate = cluster.api.operator_metrics(job_id, "correlate", "correlate_transactions.")
    status["input_records_per_s"] = round(correlate.get("numRecordsInPerSecond", 0.0), 1)
    status["counters"] = {
        "records_in": {t: int(correlate.get(RECORDS_IN.format(t), 0)) for t in config.types},
        **{name: int(correlate.get(name, 0)) for name in COUNTERS},
    }
    status["consumer_lag"] = consumer_lag(
        config.bootstrap_servers, config.group_id, config.input_topics
    )
    return status


def render(status: dict) -> str:
    """The human-readable form."""
    if status["cluster"] is None:
        return "Flink cluster: not reachable"
    job = status["job"]
    if job is None:
        return f"Flink cluster: {status['cluster']}\njob: not submitted"
    lines = [
        f"Flink cluster: {status['cluster']}",
        f"job:           {job['name']} {job['id']} {job['state']}, up {job['uptime_s']} s",
    ]
    if job["state"] != "RUNNING":
        return "\n".join(lines)
    checkpoint = status["last_checkpoint"]
    lines.append(
        "checkpoint:    none completed yet"
        if not checkpoint
        else f"checkpoint:    #{checkpoint['id']}, {checkpoint['age_s']} s ago, "
        f"{checkpoint['size_bytes']:,} bytes ({checkpoint['full_state_bytes']:,} full state)"
    )
    lines.append(f"input rate:    {status['input_records_per_s']} records/s")
    counters = status["counters"]
    per_type = ", ".join(f"{t} {n}" for t, n in counters["records_in"].items())
    lines.append(f"records in:    {per_type}")
    for name, value in counters.items():
        if name != "records_in":
            lines.append(f"{name + ':':<15}{value}")
    lag = ", ".join(f"{t} {'-' if n is None else n}" for t, n in status["consumer_lag"].items())
    lines.append(f"consumer lag:  {lag}")
    return "\n".join(lines)
