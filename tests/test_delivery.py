"""`--delivery-guarantee at-least-once`: output is visible without waiting for a checkpoint.

With checkpoints every 10 minutes, no checkpoint completes during this test, so under the
default exactly-once sink a read_committed consumer would see nothing; at-least-once output
must be there at once, each transaction exactly once while nothing fails.
"""

import random

import pytest

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from generator.transactions import load_plans
from generator.verify import verify
from job.config import AT_LEAST_ONCE
from stack.submit import submit

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


def test_at_least_once_output_is_visible_before_any_checkpoint(flink, topics):
    config = topics.live(checkpoint_interval_s=600, delivery_guarantee=AT_LEAST_ONCE)
    rng = random.Random(17)
    plans = load_plans(100, config.types, 0.0, 0.5, rng)
    job_id = submit(flink, config.to_args())
    try:
        flink.api.wait_until_running(job_id)
        with TransactionProducer(config.bootstrap_servers, config.topic_prefix, rng) as producer:
            producer.send_all(plans)
        outputs = read_topics(
            config.bootstrap_servers,
            [config.aggregated_topic],
            until=lambda rs: len(rs) >= len(plans),
            timeout_s=90,
        )
        checkpoints = flink.api.rest(f"/jobs/{job_id}/checkpoints")["counts"]
        assert checkpoints["completed"] == 0, checkpoints
        report = verify(plans, outputs, config.aggregated_topic, config.expired_topic)
        assert report.ok, report.summary()
        assert report.seen == len(plans)
    finally:
        flink.api.cancel(job_id)
