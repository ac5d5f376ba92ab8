"""Generator -> Kafka -> correlator -> Kafka -> writer -> PostgreSQL, checked row by row.

Both jobs run on the session's real cluster; the table is the real one from
`sql/migrations/`. A replay of the output topics from the beginning must leave the table
exactly as it was: same rows, same contents.
"""

import json
import random
import time
from dataclasses import replace

import pytest

from generator.producer import TransactionProducer
from generator.transactions import load_plans, record_value
from stack.submit import submit_writer
from store import __main__ as store_cli
from store import db
from tests.kit import both_jobs, wait_until_written, writer_for

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

SNAPSHOT = 'SELECT * FROM transactions WHERE "transaction" LIKE %s ORDER BY "transaction"'


def _rows(url: str, prefix: str) -> list[dict]:
    with db.connect(url) as conn:
        return conn.execute(SNAPSHOT, (prefix + "%",)).fetchall()


def _wait_for_rows(url: str, prefix: str, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _rows(url, prefix)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def _damage(url: str, ids: list[str], rng: random.Random) -> tuple[list[str], list[str]]:
    """Rewrites 20 rows with wrong contents and deletes 20 others."""
    damaged = rng.sample(ids, 20)
    deleted = rng.sample([i for i in ids if i not in damaged], 20)
    with db.connect(url) as conn:
        conn.execute(
            "UPDATE transactions SET status = 'expired', present_types = '[]',"
            " missing_types = '[\"TypeX\"]', duration_ms = -1, aggregate = '{}'"
            ' WHERE "transaction" = ANY(%s)',
            (damaged,),
        )
        conn.execute('DELETE FROM transactions WHERE "transaction" = ANY(%s)', (deleted,))
    return damaged, deleted


def test_every_transaction_is_stored_once_and_a_replay_restores_it(flink, topics, postgres):
    config = topics.live()
    prefix = f"{config.group_id}-"
    writer = writer_for(config, postgres)
    rng = random.Random(4)
    plans = load_plans(1000, config.types, 0.1, 0.5, rng, prefix=config.group_id)
    with both_jobs(flink, config, writer) as (_, writer_id):
        started = time.monotonic()
        with TransactionProducer(config.bootstrap_servers, config.topic_prefix, rng) as producer:
            producer.send_all(plans, rate=500)
        rows = _wait_for_rows(postgres.url, prefix, len(plans), timeout=120)
        stored_s = time.monotonic() - started

        by_id = {p.id: p for p in plans}
        assert len(rows) == len(plans)
        for row in rows:
            plan = by_id[row["transaction"]]
            assert row["status"] == ("complete" if plan.complete else "expired")
            assert sorted(row["present_types"]) == sorted(plan.sent_types)
            assert sorted(row["missing_types"]) == sorted(plan.omitted)
            assert row["parts"] == len(plan.sent_types)
            assert row["aggregate"]["parts"] == {
                t: record_value(plan.id, t) for t in plan.sent_types
            }
            assert row["duration_ms"] == row["last_event_ms"] - row["first_event_ms"]
            assert row["emitted_at"].timestamp() * 1000 == pytest.approx(row["emitted_at_ms"])

        # Replay: a new writer reads both topics from the beginning. Before it, some rows
        # are damaged and some deleted: the replay must bring every one of them back.
        flink.api.cancel(writer_id)
        damaged, deleted = _damage(postgres.url, [r["transaction"] for r in rows], rng)
        assert _rows(postgres.url, prefix) != rows
        replay_id = submit_writer(flink, replace(writer, from_beginning=True))
        try:
            flink.api.wait_until_running(replay_id)
            replay_s = wait_until_written(flink, replay_id, len(plans))
        finally:
            flink.api.cancel(replay_id)
        assert _rows(postgres.url, prefix) == rows, f"damaged {damaged}, deleted {deleted}"
        print(
            f"\n{len(plans)} transactions stored {stored_s:.1f}s after the load started "
            f"(sent at 500 tx/s, timeout 5 s); replay of {len(plans)} rows from a running "
            f"writer in {replay_s:.1f}s (~{len(plans) / replay_s:.0f} rows/s, 1 s metric "
            f"polling); table unchanged"
        )


def test_query_command(postgres, capsys):
    url = postgres.url
    aggregate = {"transaction": "q-1", "status": "expired", "types": ["TypeA"]}
    with db.connect(url) as conn:
        conn.execute(
            "INSERT INTO transactions VALUES (%s, 'expired', '[\"TypeA\"]', '[\"TypeB\"]',"
            " 1000, 1000, 0, 4102444800000, %s)",
            ("q-1", json.dumps(aggregate)),
        )
    try:
        assert store_cli.main(["--database-url", url, "get", "q-1"]) == 0
        row = json.loads(capsys.readouterr().out)
        assert (row["transaction"], row["status"], row["missing_types"]) == (
            "q-1",
            "expired",
            ["TypeB"],
        )
        assert store_cli.main(["--database-url", url, "latest", "--status", "expired"]) == 0
        assert "q-1" in capsys.readouterr().out
        since = ["--since", "2100-01-01T00:00:00+00:00", "--until", "2100-01-02T00:00:00+00:00"]
        assert store_cli.main(["--database-url", url, "counts", *since]) == 0
        assert json.loads(capsys.readouterr().out) == {"expired": 1}

        assert store_cli.main(["--database-url", url, "get", "nope"]) == 2
        assert "no stored transaction 'nope'" in capsys.readouterr().err
        bad = "postgresql://postgres@127.0.0.1:1/none"
        assert store_cli.main(["--database-url", bad, "latest"]) == 2
        assert "cannot reach the database" in capsys.readouterr().err
    finally:
        with db.connect(url) as conn:
            conn.execute("DELETE FROM transactions WHERE \"transaction\" = 'q-1'")
