"""The job keys records in SQL, not in Python: what that rests on, checked against Flink.

- `sql/keyed_records.sql`, run by Flink itself, gives every record the parser accepts the
  key the parser reads (`transaction`), so no valid record reaches another transaction's
  state; the documented exception (a number of over 1,000 digits, which Java's JSON reader
  refuses) gets the key '' and becomes a dead letter. No key carries a lone surrogate (it
  could not cross into Python), and event time arrives as exact epoch milliseconds.
- The job graph has one Python operator, fed by a hash partitioning on that key: PyFlink's
  internals used in `job.sources.keyed_input_records` (`KeyByKeySelector` on (key, record)
  rows) still produce what `DataStream.key_by` would, minus its Python key selector.
"""

from __future__ import annotations

import base64
import json
import random

import pytest

from job.config import JobConfig
from job.records import DeadLetter, Event, Source, keyed, parse
from job.sql import sql_text

pytestmark = pytest.mark.flink

KAFKA_MS = 1_764_000_045_123
HOSTILE = [
    b'{"transaction": "a", "transaction": "b"}',  # duplicate keys: both read the last
    b'{"transaction": "a", "\\u0074ransaction": "b"}',  # the same, the second escaped
    b'{"transaction": "first", "nested": {"transaction": "inner"}}',
    b' \n\t{ "transaction" :\r"spaced", "log": "x"}',
    b'{"transaction": "esc\\u0041aped"}',
    b'{"transaction": "a\\u00e9\\n\\"q\\\\"}',
    b'{"transaction": "\\ud83d\\ude00 pair"}',
    b'{"transaction": "\\ud800 lone"}',
    b'{"transaction": "x\\udc00"}',
    b'{"transaction": 12}',
    b'{"transaction": true}',
    b'{"transaction": ["a"]}',
    b'{"transaction": null}',
    b'{"transaction": ""}',
    b'{"x": NaN, "transaction": "nan"}',
    b'{"x": 1e999, "transaction": "inf"}',
    b'{"x": ' + b"1" * 2000 + b', "transaction": "long-number"}',
    b'{"x": ' + b"[" * 900 + b"]" * 900 + b', "transaction": "deep-900"}',
    b'{"x": ' + b"[" * 1200 + b"]" * 1200 + b', "transaction": "deep-1200"}',
    b'\xef\xbb\xbf{"transaction": "bom"}',
    b'{"transaction": "a"} trailing',
    b"{'transaction': 'single'}",
    b'{"Transaction": "case"}',
    b'{"nested": {"transaction": "inner"}}',
    b"\xff\xfe not utf-8",
    b'{"transaction": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 (CESU)
    b"[1]",
    b"",
    None,
]
# Java's JSON reader refuses numbers of more than 1,000 digits; Python reads up to 4,300.
KEYED_AS_DEAD_LETTER = {"long-number"}


def _random_payloads(count: int, seed: int = 5) -> list[bytes]:
    rng = random.Random(seed)
    # U+0000 in an id makes it a dead letter (the table cannot key it): U+0001 instead.
    pool = ['"', "\\", "/", "\n", "\t", "\x01", "\x7f", "é", "€", "中", "😀", "a", "Z", "0", " "]
    payloads = []
    for _ in range(count):
        transaction = "".join(rng.choice(pool) for _ in range(rng.randint(1, 12)))
        fields = {"log": "x" * rng.randint(0, 50), "n": rng.randint(-(10**20), 10**20)}
        if rng.random() < 0.5:
            fields["nested"] = {"transaction": "not this one", "list": [1.5, None, True]}
        items = list(fields.items()) + [("transaction", transaction)]
        rng.shuffle(items)
        ascii_only = rng.random() < 0.5
        payloads.append(json.dumps(dict(items), ensure_ascii=ascii_only).encode())
    return payloads


def _keyed_by_flink(payloads: list[bytes | None]) -> list[tuple]:
    from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("table.local-time-zone", "UTC")  # as job.pipeline sets it
    t_env.get_config().set("parallelism.default", "1")
    schema = DataTypes.ROW(
        [DataTypes.FIELD("payload", DataTypes.BYTES()), DataTypes.FIELD("i", DataTypes.BIGINT())]
    )
    rows = [(None if raw is None else bytearray(raw), i) for i, raw in enumerate(payloads)]
    values = t_env.from_elements(rows, schema)
    t_env.create_temporary_view("literal_records", values)
    t_env.execute_sql(
        "CREATE TEMPORARY VIEW input_records AS SELECT payload, 'Events-TypeA' AS topic, "
        "0 AS `partition`, i AS `offset`, "
        f"TO_TIMESTAMP_LTZ({KAFKA_MS} + i, 3) AS event_time FROM literal_records"
    )
    # The payload comes back as base64: PyFlink's collect cannot return an empty BYTES.
    query = (
        "SELECT k, q.`record`.`k`, TO_BASE64(q.`record`.`payload`), q.`record`.`topic`, "
        "q.`record`.`partition`, q.`record`.`offset`, q.`record`.`event_ms` "
        f"FROM (\n{sql_text('keyed_records.sql')}\n) AS q"
    )
    with t_env.execute_sql(query).collect() as results:
        out = [(row[0], (row[1], _bytes(row[2]), *row[3:])) for row in results]
    return sorted(out, key=lambda r: r[1][4])


def _bytes(b64: str | None) -> bytes | None:
    return None if b64 is None else base64.b64decode(b64)


def test_sql_keys_every_record_the_parser_accepts_by_its_transaction():
    payloads = HOSTILE + _random_payloads(300)
    keyed_rows = _keyed_by_flink(payloads)
    assert len(keyed_rows) == len(payloads)
    config = JobConfig()
    events = 0
    for raw, (key, record) in zip(payloads, keyed_rows, strict=True):
        k, payload, topic, _, offset, event_ms = record
        assert key == k and payload == raw and event_ms == KAFKA_MS + offset
        key.encode("utf-8")  # raises on a lone surrogate: none may reach Python
        source = Source(topic, 0, offset, event_ms)
        result = parse(raw, source, config.type_of, config.max_record_bytes)
        if isinstance(result, Event) and result.transaction in KEYED_AS_DEAD_LETTER:
            assert key == "" and isinstance(keyed(result, key), DeadLetter)
        elif isinstance(result, Event):
            events += 1
            assert key == result.transaction, raw[:80]
            assert keyed(result, key) is result
    assert events >= 300  # the random payloads and the readable hostile ones


def test_the_job_graph_has_one_python_operator_fed_by_a_hash_partitioning():
    from job.pipeline import build
    from stack.jars import connector_jars

    config = JobConfig(jars=tuple(str(j) for j in connector_jars()))
    plan = json.loads(build(config).get_execution_plan())
    names = [node["type"] for node in plan["nodes"]]
    assert not any("key_by" in n.lower() or "parse" in n.lower() for n in names), names
    (correlate,) = [n for n in plan["nodes"] if n["type"] == "correlate transactions"]
    strategies = [p["ship_strategy"] for p in correlate["predecessors"]]
    assert strategies == ["HASH", "BROADCAST"]
    # What feeds the hash partitioning is SQL (Calc) and its conversion, no Python operator.
    by_id = {n["id"]: n for n in plan["nodes"]}
    upstream = by_id[correlate["predecessors"][0]["id"]]
    assert upstream["type"].startswith(("SinkConversion", "TableToDataStream")), upstream
