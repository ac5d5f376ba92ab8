"""The job's counters, read back exactly from the REST API, Prometheus and the status command,
and the Grafana dashboard's queries run on a real Prometheus scraping the same job.

A known input goes through the live job: 10 complete transactions, 3 partials, 2 malformed
records, 1 producer retry and 1 straggler after its transaction closed.
"""

import random
import re
import time
import urllib.request

import pytest

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from generator.transactions import Transaction, plan, record_value
from job.metrics import COMPLETION, INF, arrival_offset, late_age
from stack import status
from tests.kit import both_jobs, wait_until_written, writer_for
from tests.test_dashboard import metric_names, queries

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

PROMETHEUS_PORTS = range(9249, 9270)  # flink-conf/config.yaml metrics.reporter.prom.port


def _scrape_all() -> str:
    """Every Prometheus endpoint of the machine's Flink processes, concatenated."""
    texts = []
    for port in PROMETHEUS_PORTS:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                texts.append(r.read().decode())
        except OSError:
            continue
    return "\n".join(texts)


def _prometheus_value(text: str, name: str, job_id: str, **labels: str) -> float | None:
    for line in text.splitlines():
        match = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if found.get("job_id") == job_id and all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


def test_counters_in_rest_prometheus_and_status(flink, topics, prometheus, postgres):
    config = topics.live()
    types = list(config.types)
    rng = random.Random(8)
    complete = [plan(types, rng, prefix=config.group_id) for _ in range(10)]
    partial = [
        Transaction(f"{config.group_id}-partial-{i}", ("TypeA", "TypeB"), tuple(types[2:]))
        for i in range(3)
    ]
    writer = writer_for(config, postgres)
    with both_jobs(flink, config, writer) as (job_id, writer_id):
        with TransactionProducer(config.bootstrap_servers, config.topic_prefix, rng) as producer:
            producer.send_all(complete + partial)
            producer.send_record("TypeA", record_value(partial[0].id, "TypeA"))  # a retry
            producer.send_raw(config.topic_prefix + "TypeC", b"{oops")
            producer.send_raw(config.topic_prefix + "TypeD", b'{"no": "transaction"}')
        results = [config.aggregated_topic, config.expired_topic]
        read_topics(config.bootstrap_servers, results, until=lambda rs: len(rs) >= 13)
        with TransactionProducer(config.bootstrap_servers, config.topic_prefix, rng) as producer:
            producer.send_record("TypeA", record_value(complete[0].id, "TypeA"))  # straggler
        read_topics(config.bootstrap_servers, [config.late_topic], until=lambda rs: rs)

        expected = {
            "records_in": {"TypeA": 15, "TypeB": 13, "TypeC": 10, "TypeD": 10, "TypeE": 10},
            "progress_records": 0,  # no --progress-interval-s: tests/test_open_transactions.py
            "dead_letters": 2,
            "aggregated": 10,
            "expired": 3,
            "duplicates": 1,
            "late": 1,
            "amended": 0,
            "enrich_errors": 0,
            "internal_errors": 0,
            "reference_errors": 0,
            "transactions_in_flight": 0,
            "closed_markers": 13,
        }
        deadline = time.monotonic() + 60
        while True:  # the REST API refreshes metrics every 10 s
            report = status.collect(status.Product(flink, config, writer, flink.taskmanagers))
            lag = report["consumer_lag"]
            if (report["counters"] == expected and set(lag.values()) == {0}) or (
                time.monotonic() > deadline
            ):
                break
            time.sleep(2)
        assert report["job"]["state"] == "RUNNING"
        assert report["counters"] == expected
        wait_until_written(flink, writer_id, 13)
        stored = flink.api.operator_metrics(writer_id, "store transactions", "store_transactions.")
        assert (stored["rows_stored"], stored["records_diverted"]) == (13, 0)
        report = status.collect(status.Product(flink, config, writer, flink.taskmanagers))
        assert report["healthy"], report["problems"]
        assert report["writer"]["behind"] == 0 and report["jobs"]["writer"]["restarts"] == 0
        assert lag == {t: 0 for t in config.input_topics}
        assert report["missing"] == {"TypeC": 3, "TypeD": 3, "TypeE": 3}
        assert report["late"] == {"TypeA": 1}
        quality = flink.api.operator_metrics(job_id, "correlate", "correlate_transactions.")
        arrivals = {"TypeA": 13, "TypeB": 13, "TypeC": 10, "TypeD": 10, "TypeE": 10}
        for record_type, count in arrivals.items():
            assert quality[arrival_offset(record_type).bucket(INF)] == count, record_type
            assert quality[arrival_offset(record_type).count] == count, record_type
        assert quality[late_age("TypeA").count] == 1 and quality[late_age("TypeB").count] == 0
        assert quality[COMPLETION.bucket(INF)] == quality[COMPLETION.count] == 10

        scraped = _scrape_all()
        prefix = "flink_taskmanager_job_task_operator_"
        operator = {"operator_name": "correlate_transactions"}
        for name in ("aggregated", "expired", "duplicates", "late", "closed_markers"):
            value = _prometheus_value(scraped, prefix + name, job_id, **operator)
            assert value == expected[name], name
        for record_type, count in expected["records_in"].items():
            value = _prometheus_value(
                scraped, prefix + "type_records_in", job_id, type=record_type, **operator
            )
            assert value == count, record_type
        dead = _prometheus_value(
            scraped, prefix + "dead_letters", job_id, operator_name="correlate_transactions"
        )
        assert dead == 2
        for record_type in ("TypeC", "TypeD", "TypeE"):
            value = _prometheus_value(
                scraped, prefix + "type_missing", job_id, type=record_type, **operator
            )
            assert value == 3, record_type
        late = _prometheus_value(scraped, prefix + "type_late", job_id, type="TypeA", **operator)
        assert late == 1
        offsets = _prometheus_value(
            scraped, prefix + "type_le_arrival_offset_ms_bucket", job_id,
            type="TypeB", le=INF, **operator,
        )  # fmt: skip
        assert offsets == 13
        done = _prometheus_value(
            scraped, prefix + "le_completion_ms_bucket", job_id, le=INF, **operator
        )
        assert done == 10
        _dashboard_queries_run(prometheus, job_id)


def _dashboard_queries_run(prometheus, job_id: str, timeout: float = 60) -> None:
    """Every metric the dashboard names is in the real Prometheus' scrape of this job, and
    every query of the dashboard runs; the missing-type ranking shows this input's."""
    wanted = set().union(*(metric_names(q) for q in queries()))
    deadline = time.monotonic() + timeout
    while not wanted <= (names := prometheus.metric_names()):
        assert time.monotonic() < deadline, f"never scraped: {sorted(wanted - names)}"
        time.sleep(1)
    results = {q: prometheus.query(q) for q in queries()}  # raises for a bad query
    ranking = next(r for q, r in results.items() if "type_missing" in q)
    assert {r["metric"]["type"] for r in ranking} >= {"TypeC", "TypeD", "TypeE"}
    missing = prometheus.query(
        f'sum by (type) (flink_taskmanager_job_task_operator_type_missing{{job_id="{job_id}"}})'
    )
    assert {r["metric"]["type"]: float(r["value"][1]) for r in missing} == {
        "TypeA": 0, "TypeB": 0, "TypeC": 3, "TypeD": 3, "TypeE": 3,
    }  # fmt: skip
    # The buckets form a histogram Prometheus can read (the last one's `le` parses as +Inf):
    # all 10 complete transactions took at most 5 s from first part to aggregate.
    (p99,) = prometheus.query(
        "histogram_quantile(0.99, sum by (le) (flink_taskmanager_job_task_operator_le_"
        f'completion_ms_bucket{{job_id="{job_id}"}}))'
    )
    assert 0 < float(p99["value"][1]) <= 5_000, p99
