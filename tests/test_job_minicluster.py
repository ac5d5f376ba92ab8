"""The whole job in a local minicluster over a bounded Kafka source on the real broker.

One run covers the rules end to end: in order, shuffled, omitted, interleaved, malformed and
duplicate input. At the end of a bounded input the watermark jumps to the end of time, so
every partial still open expires, as it would after its timeout in a live job.
"""

import random
from collections import Counter

import pytest

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from generator.transactions import Transaction, plan, record_value
from generator.verify import verify
from job import records
from stack.flink import run_local

pytestmark = [pytest.mark.kafka, pytest.mark.flink]


def test_bounded_run_emits_each_transaction_once_in_the_right_topic(topics):
    config = topics.config
    types = list(config.types)
    rng = random.Random(7)
    in_order = plan(types, rng)
    shuffled = plan(types, rng, shuffle=True)
    omitted = Transaction("tx-omitted", tuple(t for t in types if t != "TypeC"), ("TypeC",))
    first, second = plan(types, rng), plan(types, rng)
    with_duplicate = Transaction("tx-duplicate", ("TypeA", "TypeB"), ("TypeC", "TypeD", "TypeE"))
    plans = [in_order, shuffled, omitted, first, second, with_duplicate]

    with TransactionProducer(config.bootstrap_servers, config.topic_prefix, rng) as producer:
        producer.send_all([in_order, shuffled, omitted])
        for record_type in types:  # interleaved: the two transactions alternate record by record
            producer.send_record(record_type, record_value(first.id, record_type))
            producer.send_record(record_type, record_value(second.id, record_type))
        producer.send_all([with_duplicate])
        producer.send_record("TypeA", record_value(with_duplicate.id, "TypeA"))  # a retry
        topic_a = config.topic_prefix + "TypeA"
        producer.send_raw(topic_a, b"{broken json")
        producer.send_raw(topic_a, b'{"log": "no transaction id"}')
        producer.send_raw(topic_a, b'["not", "an", "object"]')

    result = run_local([*config.to_args(), "--bounded"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    outputs = read_topics(config.bootstrap_servers, config.output_topics, timeout_s=30)
    report = verify(plans, outputs, config.aggregated_topic, config.expired_topic)
    assert report.ok, report.summary()
    assert report.seen == len(plans)

    expired = {r.value["transaction"]: r.value for r in outputs if r.topic == config.expired_topic}
    assert expired["tx-omitted"]["missing"] == ["TypeC"]
    assert expired["tx-duplicate"]["missing"] == ["TypeC", "TypeD", "TypeE"]

    dead = [r.value for r in outputs if r.topic == config.dead_letter_topic]
    assert Counter(d["reason"] for d in dead) == {
        records.NOT_JSON: 1,
        records.NO_TRANSACTION: 1,
        records.NOT_OBJECT: 1,
        records.DUPLICATE: 1,
    }
    duplicate = next(d for d in dead if d["reason"] == records.DUPLICATE)
    assert duplicate["transaction"] == "tx-duplicate"
