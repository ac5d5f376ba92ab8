"""Open transactions in PostgreSQL: the job's progress records, stored by the writer as rows
with status `open`, replaced by the final row and never open again; `store open` lists the
stuck ones with what they miss; the view's precedence rules on the real database."""

from __future__ import annotations

import json
import random
import subprocess
import time
from dataclasses import replace

import pytest

from generator.outputs import read_topics
from generator.producer import Traffic, TransactionProducer
from generator.transactions import record_value
from stack.paths import PYTHON, ROOT
from stack.submit import submit_correlator, submit_writer
from store import db
from tests.kit import wait_until_written, writer_for

ROW = (
    'INSERT INTO transaction_records ("transaction", status, present_types, missing_types,'
    " first_event_ms, last_event_ms, duration_ms, emitted_at_ms, kind, amends, aggregate)"
    " VALUES (%s, %s, %s, '[]', 0, 0, 0, %s, NULL, %s, '{}')"
)


def _record(url: str, tx: str, status: str, types: list[str], emitted: int, amends: int = 0):
    with db.connect(url) as conn:
        conn.execute(ROW, (tx, status, json.dumps(types), emitted, amends))


def test_the_view_keeps_final_rows_final_and_the_most_amended_row(postgres):
    """What the writer inserts, in every order it may read it: an open record never replaces
    a final row; a final record replaces an open one; among finals the most amended wins."""
    url, tx = postgres.url, "view-1"
    try:
        _record(url, tx, "open", ["TypeA"], 1)
        _record(url, tx, "open", ["TypeA", "TypeB"], 2)
        assert db.get_transaction(url, tx)["present_types"] == ["TypeA", "TypeB"]
        _record(url, tx, "expired", ["TypeA", "TypeB"], 3)
        _record(url, tx, "open", ["TypeA", "TypeB", "TypeC"], 4)  # an older progress record
        row = db.get_transaction(url, tx)
        assert (row["status"], row["emitted_at_ms"]) == ("expired", 3)
        _record(url, tx, "complete", ["TypeA", "TypeB", "TypeC"], 5, amends=1)
        _record(url, tx, "expired", ["TypeA", "TypeB"], 3)  # a replay of the first partial
        _record(url, tx, "open", ["TypeA"], 1)
        row = db.get_transaction(url, tx)
        assert (row["status"], row["amends"], row["emitted_at_ms"]) == ("complete", 1, 5)
    finally:
        with db.connect(url) as conn:
            conn.execute('DELETE FROM transactions WHERE "transaction" = %s', (tx,))


def _open_rows(url: str, prefix: str) -> dict[str, dict]:
    with db.connect(url) as conn:
        rows = conn.execute(
            'SELECT * FROM transactions WHERE "transaction" LIKE %s', (prefix + "%",)
        ).fetchall()
    return {r["transaction"]: r for r in rows}


def _wait(url: str, prefix: str, until, timeout: float = 120) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    rows: dict[str, dict] = {}
    while time.monotonic() < deadline:
        rows = _open_rows(url, prefix)
        if until(rows):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"rows after {timeout} s: {[(t, r['status']) for t, r in rows.items()]}")


def _store(postgres, *args: str) -> str:
    command = [str(PYTHON), "-m", "store", "--database-url", postgres.url, *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout


@pytest.mark.kafka
@pytest.mark.flink
def test_open_transactions_are_stored_then_replaced_and_never_open_again(
    flink, topics, postgres, tmp_path
):
    rules = tmp_path / "rules.yaml"  # a quick kind whose partial expires within the test
    rules.write_text("version: 1\nkinds:\n  quick:\n    timeout_s: 4\n")
    # Progress and expiry by event time: a steady trickle of other transactions moves it,
    # as live traffic does (out-of-orderness 1 s: the watermark trails it by 1 s).
    config = topics.live(
        timeout_s=60, progress_interval_s=2, rules_file=str(rules), out_of_orderness_s=1
    )
    writer = writer_for(config, postgres)
    prefix = f"{config.group_id}-"
    waiting = [f"{prefix}wait-{i}" for i in range(4)]  # A and B now, the rest later
    quick = f"{prefix}quick"  # A only, expires after 4 s
    correlator_id = submit_correlator(flink, config)
    writer_id = submit_writer(flink, writer)
    traffic = Traffic(config.bootstrap_servers, config.topic_prefix, config.types)
    try:
        flink.api.wait_until_running(correlator_id)
        flink.api.wait_until_running(writer_id)
        traffic.start()
        with TransactionProducer(
            config.bootstrap_servers, config.topic_prefix, random.Random(5)
        ) as producer:
            for tx in waiting:
                for t in ("TypeA", "TypeB"):
                    producer.send_record(t, record_value(tx, t))
            producer.send_record("TypeA", record_value(quick, "TypeA", "quick"))
        rows = _wait(postgres.url, prefix, lambda rs: all(
            rs.get(tx, {}).get("status") == "open" for tx in waiting
        ))  # fmt: skip
        for tx in waiting:
            assert rows[tx]["present_types"] == ["TypeA", "TypeB"]
            assert rows[tx]["missing_types"] == ["TypeC", "TypeD", "TypeE"]
        assert json.loads(_store(postgres, "get", waiting[0]))["status"] == "open"
        listed = _store(postgres, "open", "--older-than", "1s", "-n", "1000")
        assert all(tx in listed for tx in waiting)
        assert "missing most: TypeC" in listed

        rows = _wait(postgres.url, prefix, lambda rs: rs.get(quick, {}).get("status") == "expired")
        assert rows[quick]["missing_types"] == ["TypeB", "TypeC", "TypeD", "TypeE"]
        with TransactionProducer(
            config.bootstrap_servers, config.topic_prefix, random.Random(6)
        ) as producer:
            for tx in waiting:
                for t in ("TypeC", "TypeD", "TypeE"):
                    producer.send_record(t, record_value(tx, t))
        rows = _wait(postgres.url, prefix, lambda rs: all(
            rs[tx]["status"] == "complete" for tx in waiting
        ))  # fmt: skip
        assert all(rows[tx]["parts"] == 5 for tx in waiting)
        assert prefix not in _store(postgres, "open", "--older-than", "0s", "-n", "1000")

        # The progress topic: each reported transaction's record, then its tombstone.
        progress = read_topics(
            config.bootstrap_servers, [config.progress_topic], decode=False,
            until=lambda rs: sum(r.value is None for r in rs) >= len(waiting) + 1,
        )  # fmt: skip
        reported = {json.loads(r.key) for r in progress if r.value is not None}
        deleted = {json.loads(r.key) for r in progress if r.value is None}
        assert reported == deleted == {*waiting, quick}

        traffic.stop()
        # A replay of every topic from the beginning by a new writer: still final.
        flink.api.cancel(writer_id)
        writer_id = submit_writer(flink, replace(writer, from_beginning=True, group_id=prefix))
        flink.api.wait_until_running(writer_id)
        # 5 open and 5 final records of ours, and the other transactions' final records.
        wait_until_written(flink, writer_id, len(waiting) * 2 + 2 + traffic.sent)
        rows = _open_rows(postgres.url, prefix)
        assert {tx: r["status"] for tx, r in rows.items()} == {
            **{tx: "complete" for tx in waiting}, quick: "expired",
        }  # fmt: skip
    finally:
        traffic.stop()
        for job_id in (correlator_id, writer_id):
            flink.api.cancel(job_id)
