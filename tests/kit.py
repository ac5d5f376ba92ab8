"""What the tests share: a dict-backed transaction state, a strict JSON reader, and the
runbook's `python -m stack` command pointed at the test session's services."""

from __future__ import annotations

import json
import time

from job.aggregate import Closed, Part


class DictState:
    """`aggregate.TransactionState` over plain dicts, as the Flink shell does over state."""

    def __init__(self) -> None:
        self._parts: dict[str, Part] = {}
        self._open = False
        self._kind: str | None = None
        self._closed: Closed | None = None

    def held_types(self) -> list[str]:
        return list(self._parts) if self._open else []

    def kind(self) -> str | None:
        return self._kind if self._open else None

    def add_part(self, record_type: str, part: Part, kind: str | None = None) -> None:
        self._parts[record_type] = part
        self._open = self._closed is None
        self._kind = kind

    def parts(self) -> dict[str, Part]:
        return dict(self._parts)

    def clear_parts(self) -> None:
        self._parts.clear()

    def closed(self) -> Closed | None:
        return self._closed

    def closed_status(self) -> str | None:
        return None if self._closed is None else self._closed.status

    def mark_closed(self, closed: Closed) -> None:
        self._closed = closed
        self._open = False

    def forget(self) -> None:
        """The retention timer: the transaction is forgotten, parts and all."""
        self._closed = None
        self._parts.clear()


def strict_json(text: str) -> object:
    """What a strict consumer does: RFC 8259 only, and every string valid Unicode."""

    def reject(name: str):
        raise ValueError(f"{name} is not JSON")

    text.encode("ascii")  # outputs are ASCII: they cross into Java and decode anywhere
    value = json.loads(text, parse_constant=reject)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return value


def stack_command(flink, kafka, postgres, *args: str, job: list[str] = ()) -> list[str]:
    """`python -m stack ...` as the runbook gives it, pointed at the test session's services;
    `job` are the correlator's options (after `--`)."""
    from stack.paths import PYTHON

    return [
        str(PYTHON), "-m", "stack", *args,
        "--kafka-port", str(kafka.port), "--postgres-port", str(postgres.port),
        "--rest-port", str(flink.rest_port), "--rpc-port", str(flink.rpc_port),
        "--taskmanagers", str(flink.taskmanagers),
        *(["--", *job] if job else []),
    ]  # fmt: skip


def wait_for_checkpoint_after(flink, job_id: str, since: float) -> None:
    """Until a checkpoint triggered after `since` (time.time()) completed."""
    deadline = time.monotonic() + 120
    while True:
        latest = flink.api.rest(f"/jobs/{job_id}/checkpoints")["latest"]["completed"]
        if latest and latest["trigger_timestamp"] > since * 1000:
            return
        assert time.monotonic() < deadline, f"no checkpoint of {job_id} completed in 120 s"
        time.sleep(0.5)


def writer_for(config, postgres):
    """The writer job for a test's correlator topics, into the session's PostgreSQL."""
    from job.config import WriterConfig

    return WriterConfig(
        bootstrap_servers=config.bootstrap_servers,
        aggregated_topic=config.aggregated_topic,
        expired_topic=config.expired_topic,
        database_url=postgres.jdbc_url,
        group_id=f"{config.group_id}-writer",
    )
