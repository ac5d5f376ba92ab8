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
from generator.transactions import load_plans, plan, record_value
from generator.verify import verify
from stack.submit import submit
from tests.kit import wait_for_checkpoint_after

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
        # Read once more after one more checkpoint, so a duplicate committed late shows.
        wait_for_checkpoint_after(flink, job_id, time.time())
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
        # Which timer closed each partial: with the producer stopped, event time stood still
        # and the wall-clock fallback expired them all.
        expired = [r.value for r in outputs if r.topic == config.expired_topic]
        assert {v["expired_by"] for v in expired} == {"wall_clock"}
        # Under live input the watermark passes a partial's deadline first: event time.
        assert _expired_by_under_live_input(config, rng, "tx-live") == "event_time"
        assert flink.api.rest(f"/jobs/{job_id}")["state"] == "RUNNING"
    finally:
        flink.api.cancel(job_id)


def test_the_silent_reference_topic_does_not_hold_back_event_time(flink, topics):
    """With the job's default idleness (30 s) a partial sent right after the start expires by
    event time under live input: the reference topic, silent here, goes idle within a second
    instead of holding the watermark back until the input's idleness."""
    config = topics.live(idleness_s=30)
    rng = random.Random(31)
    job_id = submit(flink, config.to_args())
    try:
        flink.api.wait_until_running(job_id)
        assert _expired_by_under_live_input(config, rng, "tx-early") == "event_time"
    finally:
        flink.api.cancel(job_id)


def _expired_by_under_live_input(config, rng, prefix: str) -> str:
    """Sends a partial, then complete transactions at 50/s for longer than its timeout;
    returns which timer closed the partial."""
    partial = plan(config.types, rng, omit=4, prefix=prefix)
    with TransactionProducer(config.bootstrap_servers, config.topic_prefix, rng) as producer:
        producer.send_all([partial])
        seconds = config.timeout_s + config.out_of_orderness_s + 3
        producer.send_all(load_plans(int(seconds * 50), config.types, 0, 0, rng), rate=50)
    found = read_topics(
        config.bootstrap_servers, [config.expired_topic],
        until=lambda rs: any(r.value["transaction"] == partial.id for r in rs),
        timeout_s=60,
    )  # fmt: skip
    return next(r.value["expired_by"] for r in found if r.value["transaction"] == partial.id)
