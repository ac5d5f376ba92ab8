"""Rules per kind, a rule change, since-last expiry and an amended partial, live: the real
broker, the job on the session's cluster, PostgreSQL through the writer job."""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections import Counter

import pytest

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from generator.transactions import plan, record_value
from stack.paths import PYTHON, ROOT
from stack.submit import submit_correlator
from store import db
from tests.kit import both_jobs, wait_for_checkpoint_after, writer_for

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

REFUND = ("TypeA", "TypeB", "TypeC")


def _rules_file(tmp_path, version: int, refund: tuple[str, ...]) -> str:
    path = tmp_path / f"rules-{version}.json"
    path.write_text(json.dumps({"version": version, "kinds": {"refund": {"required": refund}}}))
    return str(path)


def _send(config, plans, rng=None) -> None:
    with TransactionProducer(
        config.bootstrap_servers, config.topic_prefix, rng or random.Random(1)
    ) as p:
        p.send_all(plans, rate=200)


def _by_transaction(config, topic: str, until) -> dict[str, list[dict]]:
    records = read_topics(config.bootstrap_servers, [topic], until=until, timeout_s=120)
    found: dict[str, list[dict]] = {}
    for r in records:
        found.setdefault(r.value["transaction"], []).append(r.value)
    return found


def test_two_kinds_complete_at_once_and_a_rule_change_applies_to_new_ones(flink, topics, tmp_path):
    """Refunds need A, B, C and cards every type: both complete when their last part arrives
    (the timeout is far away), none expires; the generator sends both kinds, each with the
    types its rule requires. Then the loader command sends rules under which a refund
    needs only A and B: new refunds complete with those."""
    config = topics.live(timeout_s=120, rules_file=_rules_file(tmp_path, 1, REFUND))
    rng = random.Random(7)
    job_id = submit_correlator(flink, config)
    try:
        flink.api.wait_until_running(job_id)
        generator = [
            str(PYTHON), "-m", "generator", "shuffled", "--count", "40", "--max-delay", "0",
            "--kinds", "refund,card", "--rules-file", config.rules_file, "--json",
            "--bootstrap-servers", config.bootstrap_servers,
            "--topic-prefix", config.topic_prefix,
        ]  # fmt: skip
        sent = json.loads(
            subprocess.run(generator, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        )
        assert set(sent["kinds"]) == {"refund", "card"} and sent["complete"] == 40
        done = _by_transaction(config, config.aggregated_topic, lambda rs: len(rs) >= 40)
        required = {"refund": sorted(REFUND), "card": sorted(config.types)}
        assert Counter(r["kind"] for (r,) in done.values()) == sent["kinds"]
        for (record,) in done.values():
            assert record["missing"] == [] and sorted(record["types"]) == required[record["kind"]]
            assert record["emitted_at"] - record["last_event_time"] < 60_000  # not by expiry

        newer = tmp_path / "rules-2.yaml"
        newer.write_text("version: 2\nkinds:\n  refund:\n    required: [TypeA, TypeB]\n")
        loader = [
            str(PYTHON), "-m", "generator.rules", str(newer),
            "--bootstrap-servers", config.bootstrap_servers, "--topic", config.reference_topic,
        ]  # fmt: skip
        result = subprocess.run(loader, cwd=ROOT, capture_output=True, text=True, check=True)
        assert "sent rules version 2" in result.stdout
        # The rules reach the job on the broadcast side, in no fixed order with the records:
        # probes (A then B then C) complete at C under version 1, at B once version 2 rules.
        deadline = time.monotonic() + 60
        while True:
            probe = plan(REFUND, rng, kind="refund", prefix="probe")
            _send(config, [probe], rng)
            (record,) = _by_transaction(
                config,
                config.aggregated_topic,
                lambda rs, probe=probe: any(r.value["transaction"] == probe.id for r in rs),
            )[probe.id]
            if record["rule_version"] == 2:
                break
            assert time.monotonic() < deadline, "version 2 of the rules never applied"
        later = [plan(("TypeA", "TypeB"), rng, shuffle=True, kind="refund") for _ in range(10)]
        _send(config, later, rng)
        wanted = {p.id for p in later}
        done = _by_transaction(
            config,
            config.aggregated_topic,
            lambda rs: {r.value["transaction"] for r in rs} >= wanted,
        )
        for p in later:
            (record,) = done[p.id]
            assert (record["rule_version"], record["missing"]) == (2, [])
            assert sorted(record["types"]) == ["TypeA", "TypeB"]
        wait_for_checkpoint_after(flink, job_id, time.time())
        expired = read_topics(config.bootstrap_servers, [config.expired_topic], timeout_s=5)
        assert expired == [], [r.value["transaction"] for r in expired]  # no false partials
    finally:
        flink.api.cancel(job_id)


def test_since_last_a_new_part_postpones_expiry(flink, topics):
    """timeout 6 s since the last part: a part 5 s after the first keeps the transaction
    open until 6 s after it, where since-first would have closed it 1 s after it (event
    time) or 4 s after it (the wall-clock fallback)."""
    config = topics.live(timeout_s=6, expiry_grace_s=3, timeout_mode="since-last")
    job_id = submit_correlator(flink, config)
    try:
        flink.api.wait_until_running(job_id)
        with TransactionProducer(
            config.bootstrap_servers, config.topic_prefix, random.Random(2)
        ) as p:
            p.send_record("TypeA", record_value("gap-1", "TypeA"))
            p.producer.flush()
            time.sleep(5)
            p.send_record("TypeB", record_value("gap-1", "TypeB"))
        (record,) = _by_transaction(config, config.expired_topic, lambda rs: rs)["gap-1"]
        assert record["types"] == ["TypeA", "TypeB"]
        assert record["last_event_time"] - record["first_event_time"] >= 4_500
        assert record["emitted_at"] - record["last_event_time"] >= 6_000
    finally:
        flink.api.cancel(job_id)


def test_an_amended_partial_replaces_its_row_in_postgresql(flink, topics, postgres):
    """late-policy amend: a partial expires and is stored; its last part arrives within the
    retention; the complete record (amends 1) replaces the row."""
    config = topics.live(timeout_s=4, expiry_grace_s=2, late_policy="amend")
    writer = writer_for(config, postgres)
    tx = f"{config.group_id}-amended"
    with both_jobs(flink, config, writer) as (correlator_id, writer_id):
        with TransactionProducer(
            config.bootstrap_servers, config.topic_prefix, random.Random(3)
        ) as p:
            for t in config.types[:-1]:
                p.send_record(t, record_value(tx, t))
        row = _wait_for_row(postgres.url, tx, lambda r: r["status"] == "expired")
        assert (row["missing_types"], row["amends"]) == (["TypeE"], 0)
        with TransactionProducer(
            config.bootstrap_servers, config.topic_prefix, random.Random(4)
        ) as p:
            p.send_record("TypeE", record_value(tx, "TypeE"))
        row = _wait_for_row(postgres.url, tx, lambda r: r["status"] == "complete")
        assert (row["missing_types"], row["amends"], row["parts"]) == ([], 1, 5)
        assert row["aggregate"]["amends"] == 1
        expired = _by_transaction(config, config.expired_topic, lambda rs: rs)[tx]
        assert [r.get("amends") for r in expired] == [None]  # the first partial, not amended


def _wait_for_row(url: str, transaction: str, until, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        try:
            row = db.get_transaction(url, transaction)
        except db.UnknownTransaction:
            row = None
        if row is not None and until(row):
            return row
        time.sleep(0.5)
    raise AssertionError(f"row of {transaction} after {timeout} s: {row}")
