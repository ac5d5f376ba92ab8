"""`python -m stack status`: is the product healthy, how far behind is it, what has it done,
and which service is failing.

Reads the Flink REST API (both jobs' state, restarts, last exception, checkpoints, the
correlator's metrics, the TaskManagers registered), Kafka (the correlator's consumer lag,
the output topics' ends) and PostgreSQL (how far the writer got, what it diverted, the open
transactions). Every dependency may be away: what cannot be read says so, and counts as a
problem. `problems` lists what is unhealthy; the command exits 1 when there is any, so it
serves as a probe. Human-readable by default; `--json` for scripts.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from kafka.errors import KafkaError

from job.clients import QUICK
from job.config import JobConfig, WriterConfig
from job.metrics import COUNTERS, LATE_OF_TYPE, MISSING, RECORDS_IN
from job.offsets import backlog, stored_offsets, writer_topics
from stack.kafka import consumer_lag
from store import db

# A running job with no completed checkpoint for this many of its intervals (and at least
# STALE_MIN_S) is unhealthy: its output has stopped becoming visible.
STALE_INTERVALS = 3
STALE_MIN_S = 60
# A record of the output topics not stored this long after it was emitted is a problem: the
# writer stalled on its partition, or the database is away.
WRITER_IDLE_S = 60


@dataclass(frozen=True)
class Product:
    """What the status command looks at: a cluster (FlinkCluster or HostsCluster, anything
    with `url` and `api`), the two jobs' settings and how many TaskManagers should run."""

    cluster: object
    job: JobConfig
    writer: WriterConfig | None  # None: a cluster that runs the correlator only
    taskmanagers: int
    alerts: object | None = None  # a Prometheus with `firing()`; None: not shown


def collect(product: Product) -> dict:
    """Everything the status command shows, as plain data, with `problems` and `healthy`."""
    status: dict = {"cluster": product.cluster.url, "job": None, "jobs": {}, "problems": []}
    problems = status["problems"]
    overview = product.cluster.api.rest("/overview", quiet=True)
    if overview is None:
        status["cluster"] = None
        problems.append(f"Flink cluster at {product.cluster.url} not reachable")
        return _verdict(status)
    status["taskmanagers"] = {"registered": overview["taskmanagers"],
                              "expected": product.taskmanagers}  # fmt: skip
    if overview["taskmanagers"] < product.taskmanagers:
        problems.append(
            f"{overview['taskmanagers']} TaskManager(s) registered, {product.taskmanagers} expected"
        )
    jobs = product.cluster.api.jobs()
    roles = {"correlator": product.job, "writer": product.writer}
    for role, config in roles.items():
        if config is not None:
            status["jobs"][role] = _job(product.cluster.api, jobs, config.job_name, problems)
    status["job"] = status["jobs"]["correlator"]
    if status["job"] and status["job"]["state"] == "RUNNING":
        _correlator(product, status)
    if product.writer is not None:
        _writer(product, status)
    if product.alerts is not None:
        _alerts(product.alerts, status)
    return _verdict(status)


def _alerts(prometheus, status: dict) -> None:
    """The alerts firing (deploy/prometheus/alerts.yml), shown beside the verdict: they
    name what an operator would be paged for, and are not counted as problems here (a
    service that stopped sending is not the product's fault)."""
    try:
        status["alerts"] = prometheus.firing()
    except (OSError, ValueError, KeyError):
        status["alerts"] = None


def _verdict(status: dict) -> dict:
    status["healthy"] = not status["problems"]
    return status


def _job(api, jobs: list[dict], name: str, problems: list[str]) -> dict | None:
    """The newest job of that name: state, uptime, restarts, last exception, checkpoint."""
    mine = [j for j in jobs if j["name"] == name]
    if not mine:
        problems.append(f"job {name} not submitted")
        return None
    job = max(mine, key=lambda j: j["start-time"])
    job_id, now_ms = job["jid"], time.time() * 1000
    report = {
        "id": job_id,
        "name": name,
        "state": job["state"],
        "uptime_s": round((now_ms - job["start-time"]) / 1000) if job["state"] == "RUNNING" else 0,
        "tasks": job.get("tasks", {}),
        "restarts": _restarts(api, job_id),
        "last_exception": _last_exception(api, job_id),
    }
    if job["state"] != "RUNNING":
        problems.append(f"job {name} is {job['state']}")
        return report
    tasks = report["tasks"]
    if tasks.get("running", 0) != tasks.get("total", 0):
        problems.append(f"job {name}: {tasks.get('running', 0)} of {tasks.get('total')} tasks run")
    report["last_checkpoint"] = _checkpoint(api, job_id, now_ms)
    stale = _stale_checkpoints(report, api, job_id)
    if stale:
        problems.append(f"job {name}: {stale}")
    return report


def _restarts(api, job_id: str) -> int | None:
    values = api.rest(f"/jobs/{job_id}/metrics?get=numRestarts", quiet=True) or []
    return int(float(values[0]["value"])) if values else None


def _last_exception(api, job_id: str) -> dict | None:
    """The newest failure of the job: when, and its root cause's first line."""
    history = api.rest(f"/jobs/{job_id}/exceptions", quiet=True) or {}
    entries = history.get("exceptionHistory", {}).get("entries", [])
    if not entries:
        return None
    newest = max(entries, key=lambda e: e.get("timestamp", 0))
    lines = (newest.get("stacktrace") or newest.get("exceptionName", "")).splitlines()
    return {
        "age_s": round(time.time() - newest.get("timestamp", 0) / 1000),
        "cause": lines[0][:300] if lines else newest.get("exceptionName"),
        "task": newest.get("taskName"),
    }


def _checkpoint(api, job_id: str, now_ms: float) -> dict | None:
    checkpoints = api.rest(f"/jobs/{job_id}/checkpoints", quiet=True) or {}
    latest = (checkpoints.get("latest") or {}).get("completed")
    return latest and {
        "id": latest["id"],
        "age_s": round((now_ms - latest["latest_ack_timestamp"]) / 1000, 1),
        "size_bytes": latest["checkpointed_size"],
        "full_state_bytes": latest["state_size"],
    }


def _stale_checkpoints(report: dict, api, job_id: str) -> str | None:
    config = api.rest(f"/jobs/{job_id}/checkpoints/config", quiet=True) or {}
    interval_s = config.get("interval", 0) / 1000
    if not interval_s:
        return None
    limit = max(STALE_INTERVALS * interval_s, STALE_MIN_S)
    checkpoint = report["last_checkpoint"]
    age = checkpoint["age_s"] if checkpoint else report["uptime_s"]
    return f"no checkpoint completed for {age:.0f} s" if age > limit else None


def _correlator(product: Product, status: dict) -> None:
    config, api, job_id = product.job, product.cluster.api, status["job"]["id"]
    status["last_checkpoint"] = status["job"]["last_checkpoint"]
    correlate = api.operator_metrics(job_id, "correlate", "correlate_transactions.")
    status["input_records_per_s"] = round(correlate.get("numRecordsInPerSecond", 0.0), 1)
    status["counters"] = {
        "records_in": _per_type(correlate, RECORDS_IN, config),
        **{name: int(correlate.get(name, 0)) for name in COUNTERS},
    }
    status["missing"] = dict(db.ranked(_per_type(correlate, MISSING, config)))
    status["late"] = dict(db.ranked(_per_type(correlate, LATE_OF_TYPE, config)))
    try:
        status["consumer_lag"] = consumer_lag(
            config.bootstrap_servers, config.group_id, config.input_topics,
            config.kafka_properties, **QUICK,
        )  # fmt: skip
    except KafkaError as error:
        status["consumer_lag"] = None
        status["problems"].append(f"Kafka at {config.bootstrap_servers} not reachable: {error}")


def _writer(product: Product, status: dict) -> None:
    """How far behind the output topics the table is, what was diverted, and whether any
    partition's records wait too long (the writer stalled there, or the database is away)."""
    writer = product.writer
    report: dict = {"database": "reachable"}
    status["writer"] = report
    password = os.environ.get(writer.database_password_env)
    try:
        stored = stored_offsets(
            writer.database_url, writer.database_user, password, writer.group_id
        )
        report["diverted"] = db.diverted_count(writer.database_url)
        last_stored = db.last_stored(writer.database_url, writer.group_id)
    except Exception as error:  # noqa: BLE001 - whatever keeps the database from answering
        report["database"] = f"not reachable: {_one_line(error)}"
        status["problems"].append(f"PostgreSQL not reachable: {_one_line(error)}")
        return
    try:
        waiting = backlog(
            writer.bootstrap_servers, writer_topics(writer), stored,
            kafka_properties=writer.kafka_properties, **QUICK,
        )  # fmt: skip
    except KafkaError as error:
        report["behind"] = None
        status["problems"].append(f"Kafka at {writer.bootstrap_servers} not reachable: {error}")
        return
    report["behind"] = sum(b.records for b in waiting.values())
    report["last_stored_s_ago"] = (
        None if last_stored is None else round(time.time() - last_stored.timestamp())
    )
    now_ms = time.time() * 1000
    for (topic, partition), gap in sorted(waiting.items()):
        age_s = (now_ms - gap.oldest_ms) / 1000 if gap.oldest_ms is not None else 0
        if age_s > WRITER_IDLE_S:
            status["problems"].append(
                f"writer: {gap.records} record(s) of {topic}/{partition} wait, the oldest "
                f"for {age_s:.0f} s"
            )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


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
    """The human-readable form: the verdict first, then each part."""
    problems = status["problems"]
    lines = [_row("health", "OK" if not problems else f"UNHEALTHY ({len(problems)})")]
    lines += [_row("", f"- {p}") for p in problems]
    if status["cluster"] is None:
        return "\n".join([*lines, _row("Flink cluster", "not reachable")])
    tms = status["taskmanagers"]
    lines.append(_row("Flink cluster", status["cluster"]))
    lines.append(
        _row("TaskManagers", f"{tms['registered']} registered, {tms['expected']} expected")
    )
    for role, job in status["jobs"].items():
        lines += _render_job(role, job)
    job = status["job"]
    if job is not None and job["state"] == "RUNNING" and "counters" in status:
        lines += _render_correlator(status)
    if "writer" in status:
        lines += _render_writer(status["writer"])
    if "open" in status:  # the status command adds it; PostgreSQL may be down
        lines.append(_row("open", _render_open(status["open"])))
    if "alerts" in status:
        lines += _render_alerts(status["alerts"])
    return "\n".join(lines)


def _render_alerts(alerts: list[dict] | None) -> list[str]:
    if alerts is None:
        return [_row("alerts", "Prometheus not reachable")]
    if not alerts:
        return [_row("alerts", "none firing")]
    return [_row("alerts" if i == 0 else "", f"{a['alert']}: {a['summary']}")
            for i, a in enumerate(alerts)]  # fmt: skip


def _render_job(role: str, job: dict | None) -> list[str]:
    if job is None:
        return [_row(role, "not submitted")]
    lines = [_row(role, f"{job['name']} {job['id']} {job['state']}, up {job['uptime_s']} s, "
                        f"{job['restarts']} restart(s)")]  # fmt: skip
    checkpoint = job.get("last_checkpoint")
    if job["state"] == "RUNNING":
        lines.append(_row(
            "  checkpoint",
            "none completed yet" if not checkpoint
            else f"#{checkpoint['id']}, {checkpoint['age_s']} s ago, "
            f"{checkpoint['size_bytes']:,} bytes ({checkpoint['full_state_bytes']:,} full state)",
        ))  # fmt: skip
    failure = job["last_exception"]
    if failure:
        lines.append(_row("  last exception", f"{failure['age_s']} s ago: {failure['cause']}"))
    return lines


def _render_correlator(status: dict) -> list[str]:
    lines = [_row("input rate", f"{status['input_records_per_s']} records/s")]
    counters = status["counters"]
    lines.append(_row("records in", _pairs(counters["records_in"])))
    for name, value in counters.items():
        if name != "records_in":
            lines.append(_row(name, value))
    lag = status["consumer_lag"]
    shown = "Kafka not reachable" if lag is None else _pairs(
        {t: "-" if n is None else n for t, n in lag.items()}
    )  # fmt: skip
    lines.append(_row("consumer lag", shown))
    lines.append(_row("missing most", _pairs(status["missing"]) or "none"))
    lines.append(_row("late most", _pairs(status["late"]) or "none"))
    return lines


def _render_writer(writer: dict) -> list[str]:
    if writer["database"] != "reachable":
        return [_row("writer", f"PostgreSQL {writer['database']}")]
    waiting = "-" if writer.get("behind") is None else f"{writer['behind']:,}"
    ago = writer.get("last_stored_s_ago")
    last = "nothing stored yet" if ago is None else f"last stored {ago} s ago"
    return [
        _row("writer behind", f"{waiting} record(s) of the output topics not stored; {last}"),
        _row("diverted", f"{writer['diverted']:,} (python -m store diverted)"),
    ]


_LABEL = 24  # the longest counter name, transactions_in_flight, and its colon


def _row(label: str, value) -> str:
    return f"{label + ':' if label else '':<{_LABEL}}{value}"


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
