"""Every input record is accounted for, exactly once, on a mixed stream of 10,000+ records.

Valid transactions (some abandoned half-way), malformed records of every kind, producer
retries (duplicates) and stragglers after their transaction closed (late) all go through the
live job on the real cluster. Each input record, named by topic/partition/offset, must end up
in exactly one place: a part of an aggregate, a part of an expired partial, a dead letter or a
late record. Partials must expire within the documented bound after the producers stop, and
once every transaction is closed and the retention has passed the job holds no state for them.
"""

import random
import time
from collections import Counter

import pytest

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from generator.transactions import load_plans, record_value
from generator.verify import account, verify
from stack.submit import submit

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

MALFORMED = [
    b"not json at all",
    b"\xff\xfe\xfa",
    b"[1, 2, 3]",
    b'"just a string"',
    b'{"log": "no transaction"}',
    b'{"transaction": ""}',
    b'{"transaction": 42}',
    b'{"transaction": "x", "pad": "' + b"p" * 3000 + b'"}',  # over --max-record-bytes
    None,  # a tombstone
]


def test_mixed_stream_is_accounted_for_to_the_record(flink, topics):
    # Stragglers follow their transactions' close within seconds: a 25 s retention keeps
    # them, and the test waits it out to see every closed marker forgotten.
    config = topics.live(closed_retention_s=25, max_record_bytes=2000)
    rng = random.Random(99)
    plans = load_plans(2100, config.types, 0.2, 0.5, rng)
    job_id = submit(flink, config.to_args())
    try:
        flink.api.wait_until_running(job_id)
        malformed = retries = 0
        with TransactionProducer(config.bootstrap_servers, config.topic_prefix, rng) as producer:
            for index, tx in enumerate(plans):
                producer.send_all([tx], rate=1e9)
                if index % 7 == 0:  # a producer retry: the same record sent again
                    record_type = rng.choice(tx.sent_types)
                    producer.send_record(record_type, record_value(tx.id, record_type))
                    retries += 1
                if index % 3 == 0:
                    topic = config.topic_prefix + rng.choice(config.types)
                    producer.send_raw(topic, rng.choice(MALFORMED), key=b'"k"')
                    malformed += 1
                if index % 100 == 0:
                    time.sleep(0.05)  # ~2,000 transactions/s, so event time moves on
            # Stragglers for transactions that closed long ago: the retention remembers them.
            late = 300
            for tx in rng.sample([p for p in plans[:1000] if p.complete], late):
                record_type = rng.choice(tx.sent_types)
                producer.send_record(record_type, record_value(tx.id, record_type))
        stopped = time.monotonic()

        results = [config.aggregated_topic, config.expired_topic]
        read_topics(
            config.bootstrap_servers, results, until=lambda rs: len(rs) >= len(plans), timeout_s=120
        )
        expired_after_stop = time.monotonic() - stopped

        inputs = read_topics(
            config.bootstrap_servers, config.input_topics, timeout_s=60, decode=False
        )
        sent = Counter((r.topic, r.partition, r.offset) for r in inputs)
        outputs = read_topics(
            config.bootstrap_servers,
            config.output_topics,
            until=lambda rs: sum(account(rs, config).values()) >= len(sent),
            timeout_s=120,
        )
        seen = account(outputs, config)
        report = verify(plans, outputs, config.aggregated_topic, config.expired_topic)
        by_topic = Counter(r.topic for r in outputs)
        valid = sum(len(p.sent_types) for p in plans)
        print(
            f"\n{len(sent)} input records: {valid} valid in {len(plans)} transactions "
            f"({sum(not p.complete for p in plans)} abandoned), {malformed} malformed, "
            f"{retries} retries, {late} late; outputs {dict(by_topic)}; "
            f"last partial out {expired_after_stop:.1f}s after the producers stopped"
        )
        assert len(sent) == valid + malformed + retries + late >= 10_000
        assert report.ok, report.summary()  # and no false partial from a straggler
        assert seen == sent, {
            "missing": len(sent - seen),
            "extra": len(seen - sent),
            "doubled": sum(1 for c in seen.values() if c > 1),
        }
        assert by_topic[config.late_topic] >= late
        # Documented bound: timeout + grace after the last record, plus a checkpoint to commit.
        assert expired_after_stop <= config.timeout_s + config.expiry_grace_s + 2 + 5

        # Bounded state: after the retention every closed marker is forgotten.
        wait_s = stopped + config.closed_retention_s + 60 - time.monotonic()
        metrics = flink.api.operator_metrics(
            job_id,
            "correlate",
            "correlate_transactions.",
            # Fresh numbers (all transactions counted) and the retention over.
            until=lambda m: (
                m.get("aggregated", 0) + m.get("expired", 0) == len(plans)
                and m.get("closed_markers") == 0
            ),
            timeout=wait_s,
        )
        assert metrics["transactions_in_flight"] == 0
        assert metrics["closed_markers"] == 0
        assert metrics["aggregated"] == sum(p.complete for p in plans)
        assert metrics["expired"] == sum(not p.complete for p in plans)
        assert metrics["duplicates"] + metrics["late"] == retries + late
        records_in = sum(v for k, v in metrics.items() if k.endswith(".records_in"))
        assert records_in == valid + retries + late
        assert metrics["dead_letters"] == malformed
    finally:
        flink.api.cancel(job_id)
