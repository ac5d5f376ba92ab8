"""Rules per kind, timeout modes, rule changes and amended partials in the Flink function
itself (`Correlate` over the in-memory driver, tests/driver.py), with a fake clock."""

from __future__ import annotations

import json
from dataclasses import replace

from pyflink.datastream import TimeDomain

from job.config import JobConfig
from job.correlate import CLOSED, PARTS
from job.records import DUPLICATE
from job.rules import RULES_KEY
from tests.driver import START_MS, Driver

TYPES = JobConfig().types
TIMEOUT, GRACE, RETENTION = 60_000, 10_000, 600_000
RULES = {
    "version": 1,
    "kinds": {
        "refund": {"required": ["TypeA", "TypeB", "TypeC"], "timeout_s": 20},
        "card": {"timeout_mode": "since-last", "timeout_s": 30, "max_duration_s": 100},
    },
}


def rules_config(tmp_path, **overrides) -> JobConfig:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(RULES))
    return JobConfig(
        timeout_s=TIMEOUT / 1000,
        expiry_grace_s=GRACE / 1000,
        closed_retention_s=RETENTION / 1000,
        rules_file=str(path),
        **overrides,
    )


def value(record_type: str, transaction: str = "tx-1", kind: str | None = None) -> dict:
    return {"transaction": transaction, "log": record_type, **({"kind": kind} if kind else {})}


def records(driver: Driver, topic: str) -> list[dict]:
    return driver.on(getattr(driver.config, topic))


def timers_of(driver: Driver, key: str, domain: TimeDomain) -> list[int]:
    return sorted(at for d, k, at in driver.timers if k == key and d is domain)


def test_two_kinds_complete_with_their_own_types_and_no_false_partials(tmp_path):
    driver = Driver(rules_config(tmp_path))
    for t in ("TypeA", "TypeB", "TypeC"):
        driver.send(t, value(t, "refund-1", "refund"))
    for t in TYPES:
        driver.send(t, value(t, "card-1", "card"))
    driver.advance(TIMEOUT * 10, watermark=START_MS + TIMEOUT * 10)
    done = {r["transaction"]: r for r in records(driver, "aggregated_topic")}
    assert set(done) == {"refund-1", "card-1"} and records(driver, "expired_topic") == []
    assert (done["refund-1"]["kind"], done["refund-1"]["rule_version"]) == ("refund", 1)
    assert done["refund-1"]["types"] == ["TypeA", "TypeB", "TypeC"]


def test_a_kind_learnt_from_a_later_part_moves_the_deadline_to_its_timeout(tmp_path):
    driver = Driver(rules_config(tmp_path))
    driver.send("TypeD", value("TypeD", "r"), event_ms=START_MS)  # no kind yet: default
    assert timers_of(driver, "r", TimeDomain.EVENT_TIME) == [START_MS + TIMEOUT]
    driver.send("TypeA", value("TypeA", "r", "refund"), event_ms=START_MS + 1_000)
    assert timers_of(driver, "r", TimeDomain.EVENT_TIME) == [START_MS + 20_000]
    (out,) = driver.advance(watermark=START_MS + 20_000)
    partial = json.loads(out[2])
    assert (partial["status"], partial["kind"]) == ("expired", "refund")
    assert partial["missing"] == ["TypeB", "TypeC"]  # the refund's, not every type


def test_since_last_each_part_moves_both_deadlines_up_to_the_cap(tmp_path):
    driver = Driver(rules_config(tmp_path))
    driver.send("TypeA", value("TypeA", "c", "card"), event_ms=START_MS)
    assert timers_of(driver, "c", TimeDomain.EVENT_TIME) == [START_MS + 30_000]
    driver.advance(25_000)
    driver.send("TypeB", value("TypeB", "c", "card"), event_ms=START_MS + 25_000)
    assert timers_of(driver, "c", TimeDomain.EVENT_TIME) == [START_MS + 55_000]
    wall = [at for at in timers_of(driver, "c", TimeDomain.PROCESSING_TIME) if at > driver.now]
    assert START_MS + 25_000 + 30_000 + GRACE in wall
    assert driver.advance(watermark=START_MS + 54_999) == []  # since-first would be gone
    driver.advance(35_000)  # wall clock 60 s: the fallback (65 s) has not fired
    driver.send("TypeC", value("TypeC", "c", "card"), event_ms=START_MS + 90_000)
    assert timers_of(driver, "c", TimeDomain.EVENT_TIME) == [START_MS + 100_000]  # the cap
    (out,) = driver.advance(watermark=START_MS + 100_000)
    assert json.loads(out[2])["missing"] == ["TypeD", "TypeE"]


def test_since_first_middle_records_still_cost_three_state_calls(tmp_path):
    driver = Driver(rules_config(tmp_path))
    driver.send("TypeA", value("TypeA", "r", "refund"))
    driver.calls.clear()
    driver.send("TypeB", value("TypeB", "r", "refund"))
    assert dict(driver.calls) == {"deadlines.value": 1, "parts.put": 1, "deadlines.update": 1}


def test_rules_from_the_topic_apply_to_new_transactions_and_survive_a_restart(tmp_path):
    driver = Driver(rules_config(tmp_path))
    driver.send("TypeA", value("TypeA", "old", "refund"))
    newer = {"version": 2, "kinds": {"refund": {"required": ["TypeA", "TypeB"]}}}
    assert driver.reference(RULES_KEY, newer) == []
    (done,) = [o for t in ("TypeA", "TypeB") for o in driver.send(t, value(t, "new", "refund"))]
    record = json.loads(done[2])
    assert (record["transaction"], record["rule_version"]) == ("new", 2)
    # An older version is ignored; after a restart the topic's rules are still in force.
    driver.reference(RULES_KEY, {**RULES, "version": 1})
    driver.restart()
    (again,) = [o for t in ("TypeA", "TypeB") for o in driver.send(t, value(t, "n2", "refund"))]
    assert json.loads(again[2])["rule_version"] == 2


def test_a_bad_rules_record_is_counted_and_changes_nothing(tmp_path):
    driver = Driver(rules_config(tmp_path))
    driver.reference(RULES_KEY, {"version": 5, "kinds": {"x": {"required": ["TypeZ"]}}})
    driver.advance(1_000)
    driver.send("TypeA", value("TypeA"))  # counts reach Flink with the next record
    assert driver.counter("reference_errors") == 1
    assert driver.function.rules.version == 1
    assert RULES_KEY not in driver.broadcast


def test_rules_are_not_reference_data(tmp_path):
    driver = Driver(rules_config(tmp_path))
    driver.reference("TypeA", {"service": "orders"})
    driver.reference(RULES_KEY, {**RULES, "version": 2})
    (out,) = [
        o for t in ("TypeA", "TypeB", "TypeC") for o in driver.send(t, value(t, "r", "refund"))
    ]
    assert set(json.loads(out[2])["reference"]) == {"TypeA"}


def test_amend_a_late_part_completes_an_expired_partial_and_state_is_freed(tmp_path):
    driver = Driver(rules_config(tmp_path, late_policy="amend"))
    driver.send("TypeA", value("TypeA", "r", "refund"), event_ms=START_MS)
    driver.send("TypeB", value("TypeB", "r"), event_ms=START_MS)
    (expired,) = driver.advance(watermark=START_MS + 20_000)
    assert json.loads(expired[2])["missing"] == ["TypeC"]
    assert set(driver.state[PARTS.name]["r"]) == {"TypeA", "TypeB"}  # kept for amending
    (dup,) = driver.send("TypeB", value("TypeB", "r"))
    assert json.loads(dup[2])["reason"] == DUPLICATE
    (amended,) = driver.send("TypeC", value("TypeC", "r"))
    record = json.loads(amended[2])
    assert amended[0] == driver.config.aggregated_topic
    assert (record["status"], record["amends"], record["kind"]) == ("complete", 1, "refund")
    assert set(record["parts"]) == {"TypeA", "TypeB", "TypeC"}
    assert "r" not in driver.state.get(PARTS.name, {})  # complete is final
    (late,) = driver.send("TypeD", value("TypeD", "r"))
    assert late[0] == driver.config.late_topic
    driver.advance(RETENTION)
    assert "r" not in driver.state[CLOSED.name]
    assert driver.counter("amended") == 1


def test_amend_an_updated_partial_and_the_retention_forgets_its_parts(tmp_path):
    config = replace(rules_config(tmp_path, late_policy="amend"), rules_file="")
    driver = Driver(config)
    driver.send("TypeA", value("TypeA", "p"))
    (first,) = driver.advance(TIMEOUT + GRACE)
    (second,) = driver.send("TypeB", value("TypeB", "p"))
    record = json.loads(second[2])
    assert second[0] == driver.config.expired_topic
    assert (record["status"], record["amends"], record["missing"]) == (
        "expired",
        1,
        ["TypeC", "TypeD", "TypeE"],
    )
    driver.advance(RETENTION)
    assert "p" not in driver.state[CLOSED.name] and "p" not in driver.state[PARTS.name]
    assert driver.send("TypeC", value("TypeC", "p")) == []  # a new transaction now


def test_route_keeps_no_parts_after_expiry(tmp_path):
    driver = Driver(rules_config(tmp_path))
    driver.send("TypeA", value("TypeA", "p"))
    driver.advance(TIMEOUT + GRACE)
    assert "p" not in driver.state[PARTS.name]
    (late,) = driver.send("TypeB", value("TypeB", "p"))
    assert late[0] == driver.config.late_topic


def test_an_open_transaction_new_rules_find_complete_closes_complete_at_its_timer(tmp_path):
    driver = Driver(rules_config(tmp_path))
    driver.send("TypeA", value("TypeA", "r", "refund"), event_ms=START_MS)
    driver.send("TypeB", value("TypeB", "r"), event_ms=START_MS)
    fewer = {"version": 2, "kinds": {"refund": {"required": ["TypeA", "TypeB"]}}}
    driver.reference(RULES_KEY, fewer)
    (out,) = driver.advance(watermark=START_MS + 20_000)
    record = json.loads(out[2])
    assert out[0] == driver.config.aggregated_topic
    assert (record["status"], record["missing"], record["rule_version"]) == ("complete", [], 2)
    assert "expired_by" not in record
