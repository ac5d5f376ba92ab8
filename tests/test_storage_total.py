"""Storage is total: every class of record that PostgreSQL or Kafka could refuse goes
through the real correlator and the real writer into the real PostgreSQL, at the job's
default limits, and ends stored or diverted with its reason; no job restarts and no
TaskManager dies.

Decided where (docs/persistence.md):
- at the correlator: ids with U+0000 or over 1,024 bytes are dead letters `bad_transaction`
  (the table's key cannot hold them); lone surrogates are `not_strict_json`; an output over
  `--max-output-bytes` leaves its copies of input out and names where they are;
- at the writer: U+0000 in a log is stored readable (U+FFFD) and exactly (`aggregate_text`);
  whatever else is on the output topics and is no storable output is diverted with its bytes;
  a row PostgreSQL refuses is diverted with PostgreSQL's reason.
"""

from __future__ import annotations

import json
import random
import subprocess
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from stack.paths import PYTHON, ROOT
from store import db
from tests.kit import both_jobs, check_stored_as_emitted, restarts, writer_for

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

MB = 1_000_000
# A character of each of the 17 Unicode planes.
PLANES = "".join(chr(p * 0x10000 + (0x41 if p == 0 else 0x400)) for p in range(16)) + "\U0010fffd"


def _send_all_types(producer, types, transaction: str, logs: dict | None = None) -> None:
    for t in types:
        log = (logs or {}).get(t, f"{t} done")
        producer.send_record(t, {"transaction": transaction, "log": log})


def test_every_class_is_stored_or_diverted_and_nothing_restarts(flink, topics, postgres):
    config = topics.live()  # the default record and output limits
    tag = config.group_id
    types = config.types
    writer = writer_for(config, postgres)
    refuse = f"{tag}-refuse-me"
    with db.connect(postgres.url) as conn:  # a real refusal by PostgreSQL, for one id
        conn.execute(
            f'ALTER TABLE transactions ADD CONSTRAINT "{tag}" CHECK ("transaction" <> \'{refuse}\')'
        )
    try:
        with both_jobs(flink, config, writer) as (correlator_id, writer_id):
            taskmanagers = flink.running_taskmanagers()  # those the jobs run on
            ids = {
                "nul_log": f"{tag}-nul-log",
                "nul_nested": f"{tag}-nul-nested",
                "planes": f"{tag}-planes-{PLANES}",
                "huge": f"{tag}-huge",
                "refused": refuse,
                "plain": f"{tag}-plain",
            }
            with TransactionProducer(
                config.bootstrap_servers, config.topic_prefix, random.Random(1)
            ) as producer:
                _send_all_types(
                    producer, types, ids["nul_log"], {"TypeA": "a\x00b", "TypeC": "\x00"}
                )
                _send_all_types(producer, types, ids["planes"], {"TypeB": PLANES})
                _send_all_types(producer, types, ids["plain"])
                _send_all_types(producer, types, ids["refused"])
                producer.send_record(
                    "TypeB", {"transaction": ids["nul_nested"], "log": {"deep": [{"\x00": "\x00"}]}}
                )  # a partial: expires
                # An aggregate of five parts just under --max-record-bytes each: about 5 MB.
                _send_all_types(producer, types, ids["huge"], {t: "h" * (MB - 100) for t in types})
                # Dead letters at the correlator: ids the table cannot key, a lone surrogate, and
                # a record just under the record limit that is no JSON (its base64 is 1.33 MB).
                _send_all_types(producer, types[:1], f"{tag}-nul-\x00-id")
                _send_all_types(producer, types[:1], "L" * 3000)
                producer.send_raw(config.topic_of("TypeA"), b'{"transaction": "\\ud800"}')
                producer.send_raw(config.topic_of("TypeA"), b"\xff" * (MB - 10))
            # Records on the output topics that no correlator wrote.
            direct = _send_directly(config)

            stored = set(ids.values()) - {refuse} | {f"{tag}-direct-5mb"}
            latest = check_stored_as_emitted(config, postgres.url, stored)
            assert set(latest) == stored
            with db.connect(postgres.url) as conn:
                rows = {
                    r["transaction"]: r
                    for r in conn.execute(
                        'SELECT * FROM transactions WHERE "transaction" = ANY(%s)',
                        (list(ids.values()),),
                    )
                }
            # U+0000 in logs: readable in `aggregate`, exact in `aggregate_text`.
            nul = rows[ids["nul_log"]]
            assert nul["aggregate"]["parts"]["TypeA"]["log"] == "a\ufffdb"
            assert json.loads(nul["aggregate_text"])["parts"]["TypeA"]["log"] == "a\x00b"
            nested = rows[ids["nul_nested"]]
            assert nested["status"] == "expired"
            assert nested["aggregate"]["parts"]["TypeB"]["log"] == {"deep": [{"\ufffd": "\ufffd"}]}
            assert rows[ids["planes"]]["aggregate"]["parts"]["TypeB"]["log"] == PLANES
            assert rows[ids["plain"]]["aggregate_text"] is None
            # The 5 MB aggregate: stored without its parts, which are where it says.
            huge = rows[ids["huge"]]["aggregate"]
            assert huge["parts"] is None and huge["status"] == "complete"
            where = huge["omitted"]["parts_at"]["TypeD"]
            assert json.loads(_read_at(config, where))["log"] == "h" * (MB - 100)

            letters = read_topics(
                config.bootstrap_servers, [config.dead_letter_topic],
                until=lambda rs: len(rs) >= 4, timeout_s=60,
            )  # fmt: skip
            reasons = sorted(r.value["reason"] for r in letters)
            assert reasons == ["bad_transaction", "bad_transaction", "not_json", "not_strict_json"]
            big = next(r.value for r in letters if r.value["reason"] == "not_json")
            assert big["value_base64"] is None and big["omitted"]["bytes"] > 1_300_000
            assert _read_at(config, big, raw=True) == b"\xff" * (MB - 10)

            diverted = _diverted(postgres, tag, len(direct) + 1)
            assert {(d["topic"], d["partition"], d["offset"]): d["reason"] for d in diverted} == {
                **direct, _coordinates(config, refuse): "refused",
            }  # fmt: skip
            refused = next(d for d in diverted if d["reason"] == "refused")
            assert refused["detail"].startswith("23514")  # check_violation, PostgreSQL's reason

            assert (restarts(flink, correlator_id), restarts(flink, writer_id)) == (0, 0)
            assert (
                flink.api.rest(f"/jobs/{writer_id}/exceptions")["exceptionHistory"]["entries"] == []
            )
            assert flink.running_taskmanagers() == taskmanagers  # none died, none replaced
    finally:
        with db.connect(postgres.url) as conn:
            conn.execute(f'ALTER TABLE transactions DROP CONSTRAINT IF EXISTS "{tag}"')


def _send_directly(config) -> dict[tuple[str, int, int], str]:
    """Records on the result topics from another producer: garbage, ids the key cannot hold,
    and a 5 MB aggregate on a topic that allows it. Returns the diverted ones' places."""
    output = {
        "status": "expired", "types": ["TypeA"], "missing": [], "first_event_time": 1,
        "last_event_time": 1, "duration_ms": 0, "emitted_at": 2, "parts": {},
    }  # fmt: skip
    admin = KafkaAdminClient(bootstrap_servers=config.bootstrap_servers)
    resource = ConfigResource(
        ConfigResourceType.TOPIC, config.aggregated_topic, configs={"max.message.bytes": "8000000"}
    )
    admin.alter_configs([resource])
    admin.close()
    producer = KafkaProducer(
        bootstrap_servers=config.bootstrap_servers, max_request_size=8_000_000, acks="all"
    )
    sent = {
        (config.expired_topic, b"not json at all"): "not_json",
        (config.expired_topic, b'{"transaction": "x"}'): "not_an_output",
        (config.expired_topic, json.dumps({**output, "transaction": "a\x00b"}).encode()):
            "unstorable_id",
        (config.aggregated_topic, json.dumps({**output, "transaction": "k" * 3000}).encode()):
            "unstorable_id",
    }  # fmt: skip
    places = {}
    for (topic, value), reason in sent.items():
        metadata = producer.send(topic, value=value, partition=0).get(timeout=30)
        places[(topic, 0, metadata.offset)] = reason
    big = {**output, "transaction": f"{config.group_id}-direct-5mb", "parts": {"x": "b" * 5 * MB}}
    producer.send(config.aggregated_topic, value=json.dumps(big).encode()).get(timeout=30)
    producer.close()
    return places


def _read_at(config, where: dict, raw: bool = False):
    """The record at a place an output names (topic, partition, offset)."""
    consumer = KafkaConsumer(bootstrap_servers=config.bootstrap_servers)
    tp = TopicPartition(where["topic"], where["partition"])
    consumer.assign([tp])
    consumer.seek(tp, where["offset"])
    try:
        for _ in range(20):
            for record in consumer.poll(timeout_ms=1000).get(tp, []):
                if record.offset == where["offset"]:
                    return record.value if raw else record.value.decode()
        raise AssertionError(f"nothing at {where}")
    finally:
        consumer.close()


def _coordinates(config, transaction: str) -> tuple[str, int, int]:
    for record in read_topics(config.bootstrap_servers, [config.aggregated_topic], timeout_s=30):
        if record.value["transaction"] == transaction:
            return record.topic, record.partition, record.offset
    raise AssertionError(f"{transaction} was not emitted")


def _diverted(postgres, tag: str, count: int) -> list[dict]:
    """`python -m store diverted --json`, the command users run: the diverted records of
    the test's topics, once `count` are there."""
    deadline = time.monotonic() + 120
    while True:
        result = subprocess.run(
            [str(PYTHON), "-m", "store", "--database-url", postgres.url, "diverted", "--json",
             "-n", "1000"],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        rows = [json.loads(line) for line in result.stdout.splitlines()]
        mine = [r for r in rows if r["topic"].startswith(tag)]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(1)
