"""The job submitted with `flink run -py` to the real standalone cluster, under live load.

1,000 transactions in the original format (about 10% incomplete, half shuffled) go to the
type topics while the job runs; a read_committed consumer must then see every transaction
exactly once, in the right topic, with exactly its parts. Partials expire through the
processing-time fallback after the producer stops, and a record arriving after its
transaction closed goes to the late topic instead of opening a false partial.
"""

import random
import time

import pytest

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from generator.transactions import load_plans, record_value
from generator.verify import verify
from stack.submit import submit

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


def test_live_job_emits_every_transaction_exactly_once(flink, topics):
    config = topics.live()
    rng = random.Random(2024)
    plans = load_plans(1000, config.types, 0.1, 0.5, rng)
    job_id = submit(flink, config.to_args())
    try:
        flink.api.wait_until_running(job_id)
        started = time.monotonic()
        with TransactionProducer(config.bootstrap_servers, config.topic_prefix, rng) as producer:
            producer.send_all(plans, rate=500)
        sent_s = time.monotonic() - started

        results = (config.aggregated_topic, config.expired_topic)
        outputs = read_topics(
            config.bootstrap_servers,
            list(results),
            until=lambda rs: len(rs) >= len(plans),
            timeout_s=120,
        )
        drained_s = time.monotonic() - started
        # Read once more after a pause so any duplicate committed late would be seen too.
        time.sleep(3)
        outputs = read_topics(config.bootstrap_servers, list(results), timeout_s=30)
        report = verify(plans, outputs, *results)
        incomplete = sum(not p.complete for p in plans)
        print(
            f"\n{len(plans)} transactions ({incomplete} incomplete, "
            f"{sum(len(p.sent_types) for p in plans)} records) sent in {sent_s:.1f}s, "
            f"all out after {drained_s:.1f}s: {report.summary()}"
        )
        assert report.ok, report.summary()
        assert 50 <= incomplete <= 150

        complete = next(p for p in plans if p.complete)
        with TransactionProducer(config.bootstrap_servers, config.topic_prefix, rng) as producer:
            producer.send_record("TypeA", record_value(complete.id, "TypeA"))
        late = read_topics(
            config.bootstrap_servers, [config.late_topic], until=lambda rs: rs, timeout_s=30
        )
        assert [(r.value["transaction"], r.value["final_status"]) for r in late] == [
            (complete.id, "complete")
        ]
        assert flink.api.rest(f"/jobs/{job_id}")["state"] == "RUNNING"
    finally:
        flink.api.cancel(job_id)
