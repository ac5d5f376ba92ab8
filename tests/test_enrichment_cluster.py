"""Enrichment in the live job on the real cluster and broker.

Derived fields are checked against the event times the test gives its records; a reference
update published while the job runs changes the aggregates that close after it; a hook that
fails for some transactions is recorded on them and the job keeps running. Every output
record is validated against schemas/aggregate.schema.json.
"""

import json
import random
import time
from pathlib import Path

import jsonschema
import pytest

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from generator.reference import publish
from generator.transactions import record_value
from stack.submit import submit_correlator

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "schemas" / "aggregate.schema.json").read_text()
)


def _send(producer, tx: str, times: dict[str, int]) -> None:
    for record_type, at in times.items():
        producer.send_record(record_type, record_value(tx, record_type), timestamp_ms=at)
    producer.producer.flush()


def _closed(config, ids: set[str]) -> dict[str, dict]:
    topics = [config.aggregated_topic, config.expired_topic]
    records = read_topics(
        config.bootstrap_servers,
        topics,
        until=lambda rs: ids <= {r.value["transaction"] for r in rs},
        timeout_s=60,
    )
    return {r.value["transaction"]: r.value for r in records if r.value["transaction"] in ids}


def _reference_records_read(flink, job_id: str, above: float = -1) -> float:
    metrics = flink.api.operator_metrics(
        job_id, "Source: reference_services", "Source__reference_services",
        suffix=".numRecordsOut", until=lambda m: sum(m.values()) > above, timeout=60,
    )  # fmt: skip
    return sum(metrics.values())


def test_enrichment_live(flink, topics):
    config = topics.live(enrich_hook="generator.hooks:faulty")
    slow = {"duration_slo_ms": 60_000}
    publish(
        config.bootstrap_servers,
        {t: {"service": f"{t.lower()}-v1", **slow} for t in config.types},
        config.reference_topic,
    )
    job_id = submit_correlator(flink, config)
    try:
        flink.api.wait_until_running(job_id)
        now = int(time.time() * 1000)
        types = list(config.types)
        shuffled = random.Random(1).sample(types, len(types))
        batch1 = {
            "in-order": {t: now + 100 * i for i, t in enumerate(types)},
            "shuffled": {t: now + 70 * i for i, t in enumerate(shuffled)},
            "partial": {"TypeB": now + 50, "TypeD": now + 20},
            "boom-hook": {t: now for t in types},
        }
        ids = {name: f"{config.group_id}-{name}" for name in batch1}
        with TransactionProducer(
            config.bootstrap_servers, config.topic_prefix, random.Random()
        ) as p:
            for name, times in batch1.items():
                _send(p, ids[name], times)
        first = _closed(config, set(ids.values()))

        for name, times in batch1.items():
            record = first[ids[name]]
            jsonschema.validate(record, SCHEMA)
            start = min(times.values())
            assert record["offsets_ms"] == {t: at - start for t, at in times.items()}, name
            assert record["first_event_time"] == start
            assert record["duration_ms"] == max(times.values()) - start
            assert record["part_count"] == len(times)
            assert sorted(record["arrival_order"]) == sorted(times)
            assert set(record["reference"]) == set(types)
            assert record["reference"]["TypeA"]["service"] == "typea-v1"
            assert record["slo_breached"] is False
        assert first[ids["partial"]]["status"] == "expired"
        assert first[ids["partial"]]["missing"] == ["TypeA", "TypeC", "TypeE"]
        assert first[ids["in-order"]]["extra"] == {"speed": "fast"}
        assert first[ids["boom-hook"]]["enrichment_error"] == "RuntimeError: boom"

        # A reference update while the job runs: a new service name and a 1 ms SLO for TypeA.
        read_before = _reference_records_read(flink, job_id)
        publish(
            config.bootstrap_servers,
            {"TypeA": {"service": "typea-v2", "duration_slo_ms": 1}},
            config.reference_topic,
        )
        # Until the job's reference source has read the update (the REST metrics lag a bit).
        read = _reference_records_read(flink, job_id, above=read_before)
        assert read > read_before, "the job did not read the reference update"
        later = f"{config.group_id}-after-update"
        start = int(time.time() * 1000)
        with TransactionProducer(
            config.bootstrap_servers, config.topic_prefix, random.Random()
        ) as p:
            _send(p, later, {t: start + 10 * i for i, t in enumerate(types)})
        record = _closed(config, {later})[later]
        jsonschema.validate(record, SCHEMA)
        assert record["reference"]["TypeA"] == {"service": "typea-v2", "duration_slo_ms": 1}
        assert record["reference"]["TypeB"]["service"] == "typeb-v1"
        assert (record["slo_ms"], record["slo_breached"]) == (1, True)

        metrics = flink.api.operator_metrics(
            job_id,
            "correlate",
            "correlate_transactions.",
            until=lambda m: m.get("enrich_errors") == 1,
        )
        assert metrics["enrich_errors"] == 1
        assert flink.api.rest(f"/jobs/{job_id}")["state"] == "RUNNING"
    finally:
        flink.api.cancel(job_id)
