"""The end-to-end demo: platform up, job submitted, transactions sent, results printed.

Uses a 20-second timeout instead of the default two minutes so the expired partials show up
while you watch, the example rules per kind (`reference/rules.yaml`: refunds need three
types, card payments all five), `--late-policy amend`, so a part that arrives after its
partial expired completes it, and `--progress-interval-s 5`, so open transactions are
stored in PostgreSQL while they wait; everything else is the job's default configuration.
"""

from __future__ import annotations

import random
import time
from collections import Counter

from generator.outputs import read_topics, summarize
from generator.producer import Traffic, TransactionProducer
from generator.reference import publish, read_reference
from generator.transactions import Transaction, load_plans, new_id, plan, record_value
from job.config import JobConfig, WriterConfig
from stack.flink import FlinkCluster
from stack.kafka import KafkaBroker
from stack.paths import ROOT
from stack.postgres import PostgresServer
from stack.submit import submit_correlator, submit_writer
from store import __main__ as store_cli
from store import db

DEMO_TIMEOUT_S = 20.0
DEMO_PROGRESS_S = 5.0
REFERENCE_FILE = ROOT / "reference" / "services.yaml"
RULES_FILE = ROOT / "reference" / "rules.yaml"


def running_job(cluster: FlinkCluster, name: str) -> str | None:
    for job in cluster.api.jobs():
        if job["name"] == name and job["state"] in {"RUNNING", "CREATED", "INITIALIZING"}:
            return job["jid"]
    return None


def ensure_running(cluster: FlinkCluster, name: str, submit) -> str:
    """Submits a job unless one of that name already runs; waits until it runs."""
    job_id = running_job(cluster, name)
    if job_id is None:
        print(f"submitting {name} with flink run -py ...")
        job_id = submit()
    cluster.api.wait_until_running(job_id)
    print(f"{name} is RUNNING: {cluster.url}/#/job/running/{job_id}/overview")
    return job_id


def run(
    broker: KafkaBroker, cluster: FlinkCluster, database: PostgresServer, load: int = 500
) -> None:
    config = JobConfig(
        bootstrap_servers=broker.bootstrap,
        timeout_s=DEMO_TIMEOUT_S,
        enrich_hook="generator.hooks:speed_class",
        rules_file=str(RULES_FILE),
        late_policy="amend",
        progress_interval_s=DEMO_PROGRESS_S,
    )
    writer = WriterConfig.for_job(config, database_url=database.url)
    reference = read_reference(REFERENCE_FILE)
    publish(broker.bootstrap, reference, config.reference_topic)
    print(f"loaded reference data for {len(reference)} types from {REFERENCE_FILE.name}")
    ensure_running(cluster, config.job_name, lambda: submit_correlator(cluster, config))
    ensure_running(cluster, writer.job_name, lambda: submit_writer(cluster, writer))

    rng = random.Random()
    types = list(config.types)
    scenarios = {
        "in order": plan(types, rng),
        "shuffled": plan(types, rng, shuffle=True),
        "two types omitted": plan(types, rng, omit=2),
        "kind refund": plan(["TypeA", "TypeB", "TypeC"], rng, shuffle=True, kind="refund"),
        "kind card": plan(types, rng, shuffle=True, kind="card"),
        # Its last type is sent only after its partial expired: the partial is amended.
        "amended later": Transaction(new_id(), tuple(types[:-1]), (types[-1],)),
    }
    plans = list(scenarios.values()) + load_plans(load, types, 0.1, 0.5, rng)
    with TransactionProducer(broker.bootstrap, config.topic_prefix, rng) as producer:
        producer.send_all(plans, rate=200, progress=True)
        producer.send_raw(config.topic_prefix + "TypeA", b"{not json")
    print(f"sent {len(plans)} transactions ({sum(not p.complete for p in plans)} incomplete)")
    # The services go on: a few complete transactions a second move event time, so waiting
    # transactions are reported (progress) and expire by event time, as in production.
    traffic = Traffic(broker.bootstrap, config.topic_prefix, types).start()
    for name, tx in scenarios.items():
        print(f"  {name:<18} {tx.id}  sent {','.join(tx.sent_types)}")

    show_open(database, config)
    wait_s = DEMO_TIMEOUT_S + config.expiry_grace_s + 10
    print(f"waiting up to {wait_s:.0f}s for the partials to expire ...")
    ids = {p.id for p in plans}
    deadline = time.monotonic() + wait_s
    outputs = []
    while time.monotonic() < deadline:
        outputs = read_topics(broker.bootstrap, config.output_topics, timeout_s=10)
        if ids <= {r.value.get("transaction") for r in outputs}:
            break
    late = scenarios["amended later"]
    print(f"sending {types[-1]} of {late.id} after its partial expired ...")
    with TransactionProducer(broker.bootstrap, config.topic_prefix, rng) as producer:
        producer.send_record(types[-1], record_value(late.id, types[-1]))
    outputs = read_topics(
        broker.bootstrap,
        config.output_topics,
        until=lambda rs: any(
            r.value.get("amends") and r.value["transaction"] == late.id for r in rs
        ),
        timeout_s=30,
    )
    ours = {p.id: p for p in scenarios.values()}
    print(f"\nthe {len(scenarios)} scenario transactions:")
    for r in outputs:
        if r.value.get("transaction") in ours and "status" in r.value:
            print(f"  {r.topic:<18} {summarize(r.value)}")
            v = r.value
            print(
                f"  {'':<18} duration={v['duration_ms']}ms offsets={v['offsets_ms']} "
                f"slo_ms={v['slo_ms']} breached={v['slo_breached']} extra={v.get('extra')}"
            )
    mine = Counter(
        r.topic for r in outputs if r.value.get("transaction") in ids and not r.value.get("amends")
    )
    print(f"\nthis run's {len(plans)} transactions by output topic:")
    for topic in (config.aggregated_topic, config.expired_topic):
        print(f"  {topic:<18} {mine[topic]}")
    traffic.stop()
    show_stored(database, ours, late.id)
    print(f"\nFlink web UI: {cluster.url}   (stop everything with: bin/stop)")


def show_open(database: PostgresServer, config: JobConfig) -> None:
    """The incomplete transactions as stored while they wait (progress records), once the
    first of them is there."""
    deadline = time.monotonic() + DEMO_PROGRESS_S + 20
    rows = []
    while not rows and time.monotonic() < deadline:
        time.sleep(1)
        rows = db.open_transactions(database.url, int(DEMO_PROGRESS_S * 1000), 5)
    print(f"\nopen transactions stored in PostgreSQL ({DEMO_PROGRESS_S:.0f} s old and more):")
    print("  " + store_cli.render_open(rows).replace("\n", "\n  "))
    print("  list them with: .venv/bin/python -m store open --older-than 10s")


def show_stored(database: PostgresServer, transactions: dict, amended: str) -> None:
    """The scenario transactions as stored in PostgreSQL by the writer job (the amended
    one once its amended row is there)."""
    print(f"\nstored in PostgreSQL ({database.url}):")
    deadline = time.monotonic() + 30
    for tx in transactions:
        row = None
        while time.monotonic() < deadline:
            try:
                row = db.get_transaction(database.url, tx)
            except db.UnknownTransaction:
                row = None
            if row is not None and (tx != amended or row["amends"] >= 1):
                break
            time.sleep(1)
        if row is None:
            print(f"  {tx} not stored yet")
            continue
        print(
            f"  {row['transaction']} {row['status']:<8} parts={row['parts']} "
            f"missing={row['missing_types']} kind={row['kind']} amends={row['amends']} "
            f"emitted_at={row['emitted_at']:%H:%M:%S}"
        )
    print(f"  rows per status: {db.counts(database.url, None, None)}")
    print("  query more with: .venv/bin/python -m store latest --status expired")
