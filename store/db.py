"""The transactions table in PostgreSQL: migrations and the queries users run.

Migrations are the plain SQL files in `sql/migrations/`, applied in name order, each once,
recorded in `schema_migrations`; every file is written to be idempotent as well.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from job.config import redacted
from job.database import in_schema
from sql import FILES

MIGRATIONS = FILES / "migrations"  # the `sql` package's, so a wheel carries them


class DatabaseUnavailable(RuntimeError):
    pass


class UnknownTransaction(LookupError):
    pass


def connect(url: str, schema: str = "public") -> psycopg.Connection:
    """A connection whose tables are those of `schema` (a recompute's, `stack recompute
    --into`; the live ones by default)."""
    try:
        return psycopg.connect(
            url, row_factory=dict_row, **in_schema({"connect_timeout": 5}, schema)
        )
    except psycopg.OperationalError as error:
        raise DatabaseUnavailable(
            f"cannot reach the database at {redacted(url)}: {error}".strip()
        ) from None


def schema_name(text: str) -> str:
    """A name for a recompute's schema and topics: lower-case letters, digits and `_`,
    starting with a letter (PostgreSQL keeps it as written, Kafka takes it in a topic)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", text) or text == "public":
        raise ValueError(
            f"{text!r}: a recompute's name is 1-40 lower-case letters, digits or _, "
            "starting with a letter, and not public"
        )
    return text


def migrate(url: str, schema: str = "public") -> list[str]:
    """Applies the migrations not applied yet (in `schema`, created if need be); returns
    their names."""
    applied = []
    if schema != "public":
        with connect(url) as conn:
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema_name(schema)}"')
    with connect(url, schema) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in conn.execute("SELECT name FROM schema_migrations")}
        for path in sorted((m for m in MIGRATIONS.iterdir() if m.name.endswith(".sql")),
                           key=lambda m: m.name):  # fmt: skip
            if path.name not in done:
                conn.execute(path.read_text())
                conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
                applied.append(path.name)
    return applied


def rows_of(conn: psycopg.Connection, transactions: list[str]) -> dict[str, dict]:
    """The stored form of these transactions by id (`aggregate`, `aggregate_text`): what
    the checks that a transaction is stored as emitted compare."""
    return {
        r["transaction"]: r
        for r in conn.execute(
            'SELECT "transaction", aggregate, aggregate_text FROM transactions'
            ' WHERE "transaction" = ANY(%s)',
            (transactions,),
        )
    }


def get_transaction(url: str, transaction: str) -> dict:
    with connect(url) as conn:
        row = conn.execute(
            'SELECT * FROM transactions WHERE "transaction" = %s', (transaction,)
        ).fetchone()
    if row is None:
        raise UnknownTransaction(f"no stored transaction {transaction!r}")
    return row


def latest(url: str, status: str | None, limit: int) -> list[dict]:
    query = "SELECT * FROM transactions"
    params: list = []
    if status:
        query += " WHERE status = %s"
        params.append(status)
    query += " ORDER BY emitted_at DESC LIMIT %s"
    params.append(limit)
    with connect(url) as conn:
        return conn.execute(query, params).fetchall()


def counts(url: str, since: datetime | None, until: datetime | None) -> dict[str, int]:
    """Stored transactions per status with emitted_at in [since, until)."""
    with connect(url) as conn:
        rows = conn.execute(
            "SELECT status, count(*) AS n FROM transactions"
            " WHERE (%(since)s::timestamptz IS NULL OR emitted_at >= %(since)s)"
            " AND (%(until)s::timestamptz IS NULL OR emitted_at < %(until)s)"
            " GROUP BY status ORDER BY status",
            {"since": since, "until": until},
        ).fetchall()
    return {r["status"]: r["n"] for r in rows}


def open_transactions(url: str, older_than_ms: int, limit: int) -> list[dict]:
    """Open transactions whose first part is older than `older_than_ms`, oldest first."""
    with connect(url) as conn:
        return conn.execute(
            "SELECT * FROM transactions WHERE status = 'open'"
            " AND first_event_ms <= (extract(epoch FROM now()) * 1000)::bigint - %s"
            " ORDER BY first_event_ms LIMIT %s",
            (older_than_ms, limit),
        ).fetchall()


def diverted(url: str, reason: str | None, limit: int) -> list[dict]:
    """Records the writer diverted instead of storing (newest first), with their reason."""
    query = (
        'SELECT topic, "partition", "offset", reason, detail, octet_length(value) AS bytes,'
        " diverted_at FROM diverted_records"
    )
    params: list = []
    if reason:
        query += " WHERE reason = %s"
        params.append(reason)
    query += ' ORDER BY diverted_at DESC, topic, "partition", "offset" LIMIT %s'
    params.append(limit)
    with connect(url) as conn:
        return conn.execute(query, params).fetchall()


def diverted_value(url: str, topic: str, partition: int, offset: int) -> bytes | None:
    """The bytes of one diverted record, as the writer read them."""
    with connect(url) as conn:
        row = conn.execute(
            'SELECT value FROM diverted_records WHERE topic = %s AND "partition" = %s'
            ' AND "offset" = %s',
            (topic, partition, offset),
        ).fetchone()
    if row is None:
        raise UnknownTransaction(f"no diverted record at {topic}/{partition}/{offset}")
    return row["value"]


def diverted_count(url: str) -> int:
    with connect(url) as conn:
        return conn.execute("SELECT count(*) AS n FROM diverted_records").fetchone()["n"]


def last_stored(url: str, group: str) -> datetime | None:
    """When the writer of consumer group `group` last stored a chunk."""
    with connect(url) as conn:
        row = conn.execute(
            "SELECT max(stored_at) AS at FROM writer_offsets WHERE group_id = %s", (group,)
        ).fetchone()
    return row["at"]


def missing_ranking(rows: list[dict]) -> list[tuple[str, int]]:
    """How many of the rows lack each type, most often missing first: the service to blame."""
    return ranked(Counter(t for row in rows for t in row["missing_types"]))


def ranked(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Types by count, most first (then by name), zeros left out."""
    return sorted(((t, n) for t, n in counts.items() if n), key=lambda item: (-item[1], item[0]))


def to_json(row: dict) -> str:
    return json.dumps(row, default=_json_default, sort_keys=True)


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


# --- recomputes (`stack recompute`): their range, and the outcomes to compare -------------

RECOMPUTES = """
CREATE TABLE IF NOT EXISTS recompute_runs (
    from_ms BIGINT NOT NULL, until_ms BIGINT NOT NULL, summary JSONB NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""


def schema_exists(url: str, schema: str) -> bool:
    with connect(url) as conn:
        found = conn.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchone()
    return found is not None


def record_recompute(url: str, schema: str, from_ms: int, until_ms: int, summary: dict) -> None:
    """Notes a finished recompute in its own schema: `store diff` reads its range there."""
    with connect(url, schema) as conn:
        conn.execute(RECOMPUTES)
        conn.execute(
            "INSERT INTO recompute_runs (from_ms, until_ms, summary) VALUES (%s, %s, %s)",
            (from_ms, until_ms, json.dumps(summary)),
        )


def recompute_range(url: str, schema: str) -> tuple[int, int]:
    """[from, until) in epoch ms of the latest recompute stored in `schema`."""
    with connect(url, schema) as conn:
        exists = conn.execute("SELECT to_regclass('recompute_runs') AS t").fetchone()["t"]
        row = None
        if exists:
            row = conn.execute(
                "SELECT from_ms, until_ms FROM recompute_runs ORDER BY finished_at DESC LIMIT 1"
            ).fetchone()
    if row is None:
        raise UnknownTransaction(f"no recompute stored in schema {schema!r}")
    return row["from_ms"], row["until_ms"]


def outcomes(url: str, schema: str, from_ms: int, until_ms: int) -> dict[str, dict]:
    """The final outcome of each transaction that began in [from, until): what `store diff`
    compares (open ones have none yet)."""
    with connect(url, schema) as conn:
        rows = conn.execute(
            'SELECT "transaction", status, missing_types, kind, amends FROM transactions'
            " WHERE status <> 'open' AND first_event_ms >= %s AND first_event_ms < %s",
            (from_ms, until_ms),
        ).fetchall()
    return {r.pop("transaction"): r for r in rows}
