"""No record can restart the job: hundreds of records built to hurt, on the real broker and
cluster, interleaved with valid transactions.

The job reads event time from a field of the value (`--timestamp-field ts`), so the hostile
bytes also go through the Java SQL source's JSON extraction, not only through Python. After
the run: the job never restarted and has no exception in its history, every input record
is found exactly once across aggregates, partials, dead letters and late records, every
output record is strict JSON (RFC 8259, ASCII), and the valid transactions came out right.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from generator.hostile import hostile_values
from generator.outputs import OutputRecord, read_topics
from generator.producer import TransactionProducer
from generator.transactions import load_plans
from generator.verify import account, verify
from stack.submit import submit_correlator
from tests.kit import strict_json

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


def reference_hostile() -> list[tuple[bytes | None, bytes | None]]:
    """Reference-topic records that the job must count and skip."""
    return [
        (b'"TypeA"', b'{"duration_slo_ms": NaN}'),
        (b'"Type\\ud800"', b"{}"),
        (b"TypeB", b"[" * 3000 + b"]" * 3000),
        (b"TypeC", b"\xff\xfe"),
        (b"\xff", b"{}"),
    ]


def _strict_outputs(records: list[OutputRecord]) -> list[OutputRecord]:
    """Decodes every output strictly; a record a strict consumer refuses fails the test."""
    decoded = []
    for r in records:
        key = None if r.key is None else strict_json(r.key.decode("ascii"))
        value = strict_json(r.value.decode("ascii"))
        decoded.append(OutputRecord(r.topic, key, value, r.partition, r.offset))
    return decoded


def test_no_record_restarts_the_job(flink, topics):
    # The hook raises, returns NaN or mutates its input, depending on the transaction.
    # The job's default limits (--max-record-bytes, --max-output-bytes): the largest
    # records are just under and over them.
    config = topics.live(timestamp_field="ts", enrich_hook="generator.hooks:faulty")
    rng = random.Random(13)
    plans = load_plans(300, config.types, 0.1, 0.5, rng)
    hostile = hostile_values(rng)
    job_id = submit_correlator(flink, config)
    try:
        flink.api.wait_until_running(job_id)
        known = f"ts-known-{config.group_id}"  # event time from the value's `ts` field
        nan_hook = f"nan-hook-{config.group_id}"  # the hook returns NaN for this one
        base_ms = int(time.time() * 1000) - 1_000
        sent_at = time.time()
        with TransactionProducer(config.bootstrap_servers, config.topic_prefix, rng) as producer:
            for key, value in reference_hostile():
                producer.producer.send(config.reference_topic, key=key, value=value)
            for i, record_type in enumerate(config.types):
                value = {"transaction": known, "log": "x", "ts": base_ms + 100 * i}
                producer.send_record(record_type, value)
                producer.send_record(record_type, {"transaction": nan_hook, "log": "y"})
            for index, tx in enumerate(plans):
                producer.send_all([tx], rate=1e9)
                topic = config.topic_prefix + rng.choice(config.types)
                producer.send_raw(topic, hostile[index], key=b'"hostile"')

        inputs = read_topics(
            config.bootstrap_servers, config.input_topics, timeout_s=60, decode=False
        )
        sent = Counter((r.topic, r.partition, r.offset) for r in inputs)
        assert len(sent) == sum(len(p.sent_types) for p in plans) + len(hostile) + 10
        raw_outputs = read_topics(
            config.bootstrap_servers,
            config.output_topics,
            until=lambda rs: sum(account(_strict_outputs(rs), config).values()) >= len(sent),
            timeout_s=120,
            decode=False,
        )
        outputs = _strict_outputs(raw_outputs)
        seen = account(outputs, config)
        job = flink.api.rest(f"/jobs/{job_id}")
        exceptions = flink.api.rest(f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
        restarts = flink.api.rest(f"/jobs/{job_id}/metrics?get=numRestarts")
        print(
            f"\n{len(sent)} input records ({len(hostile)} hostile), outputs "
            f"{dict(Counter(r.topic for r in outputs))}, dead-letter reasons "
            f"{dict(Counter(r.value['reason'] for r in outputs if 'reason' in r.value))}"
        )
        assert job["state"] == "RUNNING"
        assert restarts == [{"id": "numRestarts", "value": "0"}], [
            e["exceptionName"] + ": " + e["stacktrace"][:2000] for e in exceptions
        ]
        assert exceptions == []
        assert seen == sent, {
            "missing": sorted(sent - seen)[:5],
            "extra": sorted(seen - sent)[:5],
            "doubled": sum(1 for c in seen.values() if c > 1),
        }
        by_id = {r.value.get("transaction"): r.value for r in outputs}
        # A hook's NaN never reaches the output; its in-place changes do not either.
        assert by_id[nan_hook]["enrichment_error"].startswith("ValueError")
        assert "extra" not in by_id[nan_hook] and len(by_id[nan_hook]["parts"]) == 5
        assert by_id[known]["extra"] == {"speed": "fast"}
        assert by_id[known]["status"] == "complete"
        assert (by_id[known]["first_event_time"], by_id[known]["duration_ms"]) == (base_ms, 400)
        # A non-numeric or out-of-range `ts` falls back to the Kafka timestamp.
        for fallback in ("ts-text", "ts-huge", "ts-neg", "ts-float"):
            assert abs(by_id[fallback]["first_event_time"] / 1000 - sent_at) < 120, fallback
        planned = {p.id for p in plans}
        report = verify(
            plans,
            [r for r in outputs if r.value.get("transaction") in planned],
            config.aggregated_topic,
            config.expired_topic,
        )
        assert report.ok, report.summary()
        reference = flink.api.operator_metrics(
            job_id,
            "correlate",
            "correlate_transactions.",
            until=lambda m: m.get("reference_errors") == len(reference_hostile()),
        )
        assert reference["reference_errors"] == len(reference_hostile())
    finally:
        flink.api.cancel(job_id)
