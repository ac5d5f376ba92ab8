"""The writer's PostgreSQL client: one chunk of records per database transaction.

A chunk's rows, diverted records and the offsets it reached commit together or not at all.
A write that fails because the database is away or busy (`job.storage.transient`) raises
`Unavailable` and changes nothing: the caller keeps the chunk and tries it again later. A row
that PostgreSQL refuses (any other error) does not fail the chunk: the rows are then written
one by one, each in a savepoint, and each refused one is diverted with PostgreSQL's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg

from job.records import printable
from job.storage import REFUSED, Coordinates, Diverted, Row, classify, transient

log = logging.getLogger(__name__)

# How long a connection attempt may take, how soon a silent server is given up on (TCP
# keepalives; tcp_user_timeout for unacknowledged data), and how long one statement may run
# or wait for a lock (a row another session holds, a migration's ALTER TABLE): a write
# never blocks the writer's task for long, however the database went away or stalls, so
# checkpoints go on and a cancel is never held up (Flink's cancellation watchdog exits the
# TaskManager after 180 s). Both timeouts are failures of the database's (SQLSTATE 57014,
# 55P03): the chunk waits and is tried again.
CONNECTION = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "options": "-c statement_timeout=30000 -c lock_timeout=10000",
    "application_name": "txn-correlator-writer",
}

INSERT_ROW = """
INSERT INTO transaction_records ("transaction", status, present_types, missing_types,
    first_event_ms, last_event_ms, duration_ms, emitted_at_ms, kind, amends, aggregate,
    aggregate_text)
VALUES (%s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)
"""
INSERT_DIVERTED = """
INSERT INTO diverted_records (topic, "partition", "offset", reason, detail, value)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (topic, "partition", "offset") DO NOTHING
"""
ADVANCE_OFFSET = """
INSERT INTO writer_offsets (group_id, topic, "partition", "offset") VALUES (%s, %s, %s, %s)
ON CONFLICT (group_id, topic, "partition") DO UPDATE
SET "offset" = GREATEST(writer_offsets."offset", EXCLUDED."offset"), stored_at = now()
"""

Record = tuple[Coordinates, bytes | None]


class Unavailable(Exception):
    """The database cannot take writes now; nothing of the chunk was written."""


@dataclass
class Written:
    rows: int = 0
    diverted: int = 0
    skipped: int = 0


def libpq_url(url: str) -> str:
    """A libpq URL; `jdbc:postgresql://...` (the writer's form before 2026-12) works too."""
    return url.removeprefix("jdbc:")


def user_for(url: str, user: str) -> str | None:
    """The user to connect as: the URL's own if it names one, else `--database-user`."""
    return None if urlsplit(libpq_url(url)).username else user


def in_schema(settings: dict, schema: str) -> dict:
    """Connection settings whose tables are those of `schema` (its search path)."""
    if schema == "public":
        return settings
    return {**settings, "options": f"{settings.get('options', '')} -c search_path={schema}".strip()}


class Database:
    def __init__(
        self, url: str, user: str, password: str | None, group_id: str, schema: str = "public"
    ) -> None:
        self.url, self.user, self.password = libpq_url(url), user, password
        self.group_id = group_id
        self.settings = in_schema(CONNECTION, schema)
        self._conn: psycopg.Connection | None = None

    def write(self, records: Sequence[Record]) -> Written:
        """Stores a chunk of records (in offset order per partition) in one transaction."""
        placed = [(at, value, classify(value, at)) for at, value in records]
        rows = [(at, value, p) for at, value, p in placed if isinstance(p, Row)]
        diverted = [p for _, _, p in placed if isinstance(p, Diverted)]
        conn = self._connection()
        try:
            with conn.transaction():
                refused = self._insert_rows(conn, rows)
                self._insert_diverted(conn, [*diverted, *refused])
                self._advance_offsets(conn, [at for at, _ in records])
        except psycopg.Error as error:
            self.close()
            raise Unavailable(_describe(error)) from error
        return Written(len(rows) - len(refused), len(diverted) + len(refused),
                       len(placed) - len(rows) - len(diverted))  # fmt: skip

    def _insert_rows(self, conn, rows) -> list[Diverted]:
        """Every row, in order; if PostgreSQL refuses any, each row alone to find which."""
        if not rows:
            return []
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(INSERT_ROW, [_params(row) for _, _, row in rows])
            return []
        except psycopg.Error as error:
            if transient(error.sqlstate) or conn.broken:
                raise
        refused = []
        for at, value, row in rows:
            try:
                with conn.transaction():
                    conn.execute(INSERT_ROW, _params(row))
            except psycopg.Error as error:
                if transient(error.sqlstate) or conn.broken:
                    raise
                refused.append(Diverted(at, REFUSED, _describe(error), value))
        return refused

    def _insert_diverted(self, conn, diverted: list[Diverted]) -> None:
        if diverted:
            with conn.cursor() as cur:
                cur.executemany(INSERT_DIVERTED, [_diverted_params(d) for d in diverted])

    def _advance_offsets(self, conn, read: list[Coordinates]) -> None:
        last: dict[tuple[str, int], int] = {}
        for at in read:
            key = (at.topic, at.partition)
            last[key] = max(last.get(key, -1), at.offset)
        if not last:
            return
        with conn.cursor() as cur:
            cur.executemany(
                ADVANCE_OFFSET, [(self.group_id, t, p, o) for (t, p), o in last.items()]
            )

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self.url, user=user_for(self.url, self.user), password=self.password,
                    autocommit=True, **self.settings,
                )  # fmt: skip
            except psycopg.Error as error:
                raise Unavailable(_describe(error)) from error
        return self._conn

    def close(self) -> None:
        """Drops the connection; never raises (a broken one is simply gone)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception as error:  # noqa: BLE001 - closing must not fail the writer
                log.debug("closing the database connection: %s", error)


def _params(row: Row) -> tuple:
    return (row.transaction, row.status, row.present_types, row.missing_types,
            row.first_event_ms, row.last_event_ms, row.duration_ms, row.emitted_at_ms,
            row.kind, row.amends, row.aggregate, row.aggregate_text)  # fmt: skip


def _diverted_params(d: Diverted) -> tuple:
    detail = printable(d.detail).replace("\x00", "\ufffd")[:1000]
    return (d.at.topic, d.at.partition, d.at.offset, d.reason, detail, d.value)


def _describe(error: psycopg.Error) -> str:
    """SQLSTATE and message, on one line, for logs and diverted records."""
    message = " ".join(str(error).split())
    return f"{error.sqlstate}: {message}" if error.sqlstate else message
