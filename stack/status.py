"""`python -m stack status`: is the job healthy, how far behind is it, what has it done,
and which service is failing.

Reads the Flink REST API (job state, uptime, checkpoints, operator metrics), Kafka's admin
API (the source's committed offsets against the topics' ends) and, when the correlator
reports progress (`--progress-interval-s`), the open transactions stored in PostgreSQL.
Human-readable by default; `--json` for scripts.
"""

from __future__ import annotations

import time

from job.config import JobConfig
from job.metrics import COUNTERS, LATE_OF_TYPE, MISSING, RECORDS_IN
from stack.flink import FlinkCluster
from stack.kafka import consumer_lag
from store import db


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
        "records_in": _per_type(correlate, RECORDS_IN, config),
        **{name: int(correlate.get(name, 0)) for name in COUNTERS},
    }
    status["missing"] = dict(db.ranked(_per_type(correlate, MISSING, config)))
    status["late"] = dict(db.ranked(_per_type(correlate, LATE_OF_TYPE, config)))
    status["consumer_lag"] = consumer_lag(
        config.bootstrap_servers, config.group_id, config.input_topics
    )
    return status


def _per_type(metrics: dict, name: str, config: JobConfig) -> dict[str, int]:
    return {t: int(metrics.get(name.format(t), 0)) for t in config.types}


def open_transactions(database_url: str, now_ms: float | None = None) -> dict | None:
    """The open transactions stored in PostgreSQL: how many, and the oldest (None when the
    database cannot be reached)."""
    try:
        rows = db.open_transactions(database_url, 0, 1)
        count = db.counts(database_url, None, None).get("open", 0)
    except db.DatabaseUnavailable:
        return None
    now_ms = now_ms or time.time() * 1000
    oldest = rows[0] if rows else None
    return {
        "count": count,
        "oldest": oldest
        and {
            "transaction": oldest["transaction"],
            "age_s": round((now_ms - oldest["first_event_ms"]) / 1000),
            "kind": oldest["kind"],
            "present": oldest["present_types"],
            "missing": oldest["missing_types"],
        },
    }


def render(status: dict) -> str:
    """The human-readable form."""
    if status["cluster"] is None:
        return _row("Flink cluster", "not reachable")
    job = status["job"]
    if job is None:
        return "\n".join([_row("Flink cluster", status["cluster"]), _row("job", "not submitted")])
    lines = [
        _row("Flink cluster", status["cluster"]),
        _row("job", f"{job['name']} {job['id']} {job['state']}, up {job['uptime_s']} s"),
    ]
    if job["state"] != "RUNNING":
        return "\n".join(lines)
    checkpoint = status["last_checkpoint"]
    lines.append(_row(
        "checkpoint",
        "none completed yet" if not checkpoint
        else f"#{checkpoint['id']}, {checkpoint['age_s']} s ago, {checkpoint['size_bytes']:,} "
        f"bytes ({checkpoint['full_state_bytes']:,} full state)",
    ))  # fmt: skip
    lines.append(_row("input rate", f"{status['input_records_per_s']} records/s"))
    counters = status["counters"]
    lines.append(_row("records in", _pairs(counters["records_in"])))
    for name, value in counters.items():
        if name != "records_in":
            lines.append(_row(name, value))
    lag = {t: "-" if n is None else n for t, n in status["consumer_lag"].items()}
    lines.append(_row("consumer lag", _pairs(lag)))
    lines.append(_row("missing most", _pairs(status["missing"]) or "none"))
    lines.append(_row("late most", _pairs(status["late"]) or "none"))
    if "open" in status:  # the status command adds it; PostgreSQL may be down
        lines.append(_row("open", _render_open(status["open"])))
    return "\n".join(lines)


_LABEL = 24  # the longest counter name, transactions_in_flight, and its colon


def _row(label: str, value) -> str:
    return f"{label + ':':<{_LABEL}}{value}"


def _pairs(counts: dict) -> str:
    return ", ".join(f"{t} {n}" for t, n in counts.items())


def _render_open(open_: dict | None) -> str:
    if open_ is None:
        return "PostgreSQL not reachable"
    oldest = open_["oldest"]
    if oldest is None:
        return "none stored (the correlator stores them with --progress-interval-s)"
    return (
        f"{open_['count']} stored; oldest {oldest['transaction']}, {oldest['age_s']} s, "
        f"kind {oldest['kind'] or '-'}, has {','.join(oldest['present'])}, "
        f"missing {','.join(oldest['missing'])}"
    )
