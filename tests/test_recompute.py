"""Recompute a time range (`stack recompute`, `store diff`): the range's arithmetic and the
diff as plain functions, then a day of traffic on the real broker, cluster and database."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from datetime import UTC, datetime

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from generator.transactions import load_plans, record_value
from job.config import JobConfig
from job.rules import RuleSet, read_rules
from job.sources import source_options
from stack.paths import PYTHON, ROOT
from stack.recompute import instant_ms, margin_ms, plan
from store import db, diff
from tests.kit import (
    both_jobs,
    stack_command,
    wait_for_checkpoint_after,
    wait_until_written,
    writer_for,
)

TYPES = ("TypeA", "TypeB", "TypeC", "TypeD", "TypeE")
DAY = datetime(2001, 3, 4, tzinfo=UTC)  # no other test sends records of that day
DAY_MS = int(DAY.timestamp() * 1000)
DAY_LONG_MS = 86_400_000


def _rules(tmp_path, name: str, refund: tuple[str, ...]) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"version": 1, "kinds": {"refund": {"required": list(refund)}}}))
    return str(path)


# --- the range and the diff, as functions ----------------------------------------------


def test_the_margin_is_the_longest_life_a_transaction_can_have(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"kinds": {
        "refund": {"required": ["TypeA"], "timeout_s": 30},
        "card": {"timeout_s": 20, "timeout_mode": "since-last", "max_duration_s": 90},
        "slow": {"timeout_s": 10, "timeout_mode": "since-last"},
    }}))  # fmt: skip
    base = JobConfig(timeout_s=60).option_rules()
    rules: RuleSet = read_rules(path, base, TYPES)
    # since-last without a cap: one timeout per type (10 s x 5); with one: the cap (90 s)
    assert margin_ms(rules, len(TYPES), 1_000) == 90_000 + 1_000
    assert margin_ms(base, len(TYPES), 0) == 60_000


def test_a_recompute_reads_around_its_range_and_writes_only_its_own_topics():
    live = JobConfig(timeout_s=120, out_of_orderness_s=5, closed_retention_s=600)
    recompute = plan(live, DAY_MS, DAY_MS + DAY_LONG_MS, "fix_1").job
    # a transaction's life, the out-of-orderness, and the retention its late parts count in
    assert recompute.read_from_ms == DAY_MS - 725_000
    assert recompute.read_until_ms == DAY_MS + DAY_LONG_MS + 725_000
    assert recompute.input_topics == live.input_topics
    assert recompute.reference_topic == live.reference_topic
    assert not set(recompute.sink_topics) & set(live.sink_topics)
    assert all(t.startswith("fix_1-") for t in recompute.sink_topics)
    assert (recompute.group_id, recompute.transactional_id_prefix) == ("fix_1", "fix_1")
    assert recompute.job_name != live.job_name
    options = source_options(recompute)
    assert options["scan.startup.mode"] == "timestamp"
    assert options["scan.startup.timestamp-millis"] == str(recompute.read_from_ms)
    assert options["scan.bounded.mode"] == "timestamp"
    assert options["scan.bounded.timestamp-millis"] == str(recompute.read_until_ms)
    assert "scan.bounded.mode" not in source_options(live)


@pytest.mark.parametrize("name", ["public", "Fix", "1st", "a-b", "x" * 41, "a;drop"])
def test_a_recompute_name_is_a_plain_identifier(name):
    with pytest.raises(ValueError):
        plan(JobConfig(), DAY_MS, DAY_MS + 1, name)


def test_instants_are_utc_unless_a_zone_is_given():
    assert instant_ms("2001-03-04") == DAY_MS
    assert instant_ms("2001-03-04T01:00:00+01:00") == DAY_MS


def test_the_minicluster_checkpoints_to_a_folder_as_the_cluster_does():
    """Without a checkpoint folder Flink keeps checkpoints in the JobManager's memory and
    refuses any state over 5 MB. The rest of flink-conf/ is kept, but the metrics reporter,
    the cluster's web UI port and its endless restarts."""
    import yaml

    from stack.flink import FLINK_CONF, minicluster_conf

    shipped = yaml.safe_load((FLINK_CONF / "config.yaml").read_text())
    conf = yaml.safe_load((minicluster_conf() / "config.yaml").read_text())
    checkpointing = conf["execution"]["checkpointing"]
    assert checkpointing.pop("dir").startswith("file:///")
    assert checkpointing == shipped["execution"]["checkpointing"]
    assert conf["state"] == shipped["state"] and conf["python"] == shipped["python"]
    assert "metrics" not in conf and conf["rest"]["bind-port"] == "0"
    assert conf["restart-strategy"]["fixed-delay"]["attempts"] == 3


def test_a_local_run_applies_the_minicluster_conf(monkeypatch):
    """A local run (`python job/main.py`) applies the folder `local_environment()` names:
    thread mode, parallelism 1, RocksDB and checkpoints every 5 s into a folder, as on the
    cluster. Without it the recompute's minicluster ran in process mode at parallelism 2 with
    no checkpoint, so its outputs waited for the end."""
    from job.config import LOCAL_FLINK_CONF
    from job.pipeline import local_settings
    from stack.flink import local_environment
    from stack.paths import PYTHON

    monkeypatch.delenv(LOCAL_FLINK_CONF, raising=False)
    assert local_settings() == {}  # `flink run`: the cluster's configuration applies
    monkeypatch.setenv(LOCAL_FLINK_CONF, local_environment()[LOCAL_FLINK_CONF])
    settings = local_settings()
    assert settings["python.execution-mode"] == "thread"
    # The interpreter thread mode embeds is the `python` on PATH: the venv's, with PEMJA.
    assert local_environment()["PATH"].split(os.pathsep)[0] == str(PYTHON.parent)
    assert settings["parallelism.default"] == "1"
    assert settings["state.backend.type"] == "rocksdb"
    assert settings["execution.checkpointing.interval"] == "5s"
    assert settings["execution.checkpointing.incremental"] == "true"
    assert settings["execution.checkpointing.dir"].startswith("file:///")
    assert settings["restart-strategy.type"] == "fixed-delay"
    assert not any(k.startswith(("jobmanager.", "taskmanager.", "rest.", "env.")) for k in settings)


def test_diff_names_each_change_and_counts_them():
    live = {
        "a": {"status": "expired", "missing_types": ["TypeC"], "kind": "refund", "amends": 0},
        "b": {"status": "complete", "missing_types": [], "kind": None, "amends": 0},
        "c": {"status": "expired", "missing_types": ["TypeB", "TypeC"], "kind": "refund",
              "amends": 0},
        "d": {"status": "complete", "missing_types": [], "kind": None, "amends": 0},
    }  # fmt: skip
    recomputed = {
        **live,
        "a": {**live["a"], "status": "complete", "missing_types": []},
        "c": {**live["c"], "missing_types": ["TypeB"]},
        "e": {"status": "complete", "missing_types": [], "kind": None, "amends": 0},
    }
    del recomputed["d"]
    found = diff.differences(live, recomputed)
    assert [(e["transaction"], e["changes"]) for e in found] == [
        ("a", ["status", "missing_types"]),
        ("c", ["missing_types"]),
        ("d", ["only_live"]),
        ("e", ["only_recomputed"]),
    ]
    assert diff.counts(found) == {
        "missing_types": 2, "only_live": 1, "only_recomputed": 1,
        "status expired -> complete": 1,
    }  # fmt: skip
    text = diff.render(found, compared=5)
    assert text.startswith("4 of 5 transactions differ:")
    assert "a  status 'expired' -> 'complete'; missing_types ['TypeC'] -> []" in text
    assert diff.differences(live, live) == []
    assert diff.render([], compared=4) == "no outcome differs (4 transactions compared)"


# --- a day of traffic on the real services ---------------------------------------------


def _outcome(sent: tuple[str, ...], required: tuple[str, ...]) -> tuple[str, list[str]]:
    missing = [t for t in required if t not in sent]
    return ("expired" if missing else "complete"), missing


def _send_day(config: JobConfig, plans) -> None:
    """Each transaction's parts within a few milliseconds, the transactions spread evenly
    over the day by their record timestamps (sent in seconds: a day, compressed)."""
    producer = KafkaProducer(bootstrap_servers=config.bootstrap_servers, linger_ms=5)
    step = DAY_LONG_MS // len(plans)
    for index, plan_ in enumerate(plans):
        for offset, record_type in enumerate(plan_.sent_types):
            producer.send(
                config.topic_of(record_type),
                key=json.dumps(plan_.id).encode(),
                value=json.dumps(record_value(plan_.id, record_type, plan_.kind)).encode(),
                timestamp_ms=DAY_MS + index * step + offset,
            )
    producer.flush()
    producer.close()


def _live_state(config: JobConfig, writer, url: str) -> dict:
    """What a recompute must not touch: the live job's topics (their ends), its and its
    writer's consumer groups (their offsets, beside the ends of what each reads), and the
    live table (every row)."""
    consumer = KafkaConsumer(bootstrap_servers=config.bootstrap_servers)
    try:
        ends = consumer.end_offsets(
            [TopicPartition(t, p) for t in config.sink_topics for p in range(3)]
        )
        groups = {}
        watched = {
            config.group_id: config.input_topics,
            writer.group_id: [config.aggregated_topic, config.expired_topic],
        }
        for group, topics in watched.items():
            reader = KafkaConsumer(bootstrap_servers=config.bootstrap_servers, group_id=group)
            partitions = [TopicPartition(t, p) for t in topics for p in range(3)]
            read_ends = reader.end_offsets(partitions)
            groups[group] = {str(tp): (reader.committed(tp), read_ends[tp]) for tp in partitions}
            reader.close()
    finally:
        consumer.close()
    with db.connect(url) as conn:
        table = conn.execute(
            'SELECT count(*) AS n, md5(string_agg("transaction" || status || amends'
            " || coalesce(aggregate_text, aggregate::text), ',' ORDER BY \"transaction\"))"
            " AS digest FROM transactions"
        ).fetchone()
    return {"topic_ends": {str(k): v for k, v in ends.items()}, "groups": groups, **table}


def _at_end(committed: int | None, end: int) -> bool:
    """A group's committed offset at a partition's end: Flink's Kafka source commits the
    offset after the last record it emitted, so a partition that ends with a transaction's
    commit marker (the outputs) stays one short of it."""
    return (committed or 0) in (end, end - 1)


def _settled_live_state(flink, job_ids, config, writer, url: str) -> dict:
    """The live state once both live jobs have committed, at a checkpoint, offsets at the
    end of everything they read."""
    for _ in range(30):
        state = _live_state(config, writer, url)
        offsets = [pair for group in state["groups"].values() for pair in group.values()]
        if all(_at_end(committed, end) for committed, end in offsets):
            return state
        since = time.time()
        for job_id in job_ids:
            wait_for_checkpoint_after(flink, job_id, since)
    raise AssertionError(f"the live jobs did not commit the ends of their input: {offsets}")


def _recompute(flink, kafka, postgres, prometheus, config: JobConfig, rules: str, name: str):
    command = stack_command(
        flink, kafka, postgres, prometheus, "recompute",
        "--from", DAY.isoformat(), "--until", "2001-03-05T00:00:00+00:00", "--into", name,
        job=[*config.to_args(), "--rules-file", rules],
    )  # fmt: skip
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)


def _recomputed(*args) -> str:
    done = _recompute(*args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _store_diff(postgres, name: str) -> tuple[int, dict]:
    done = subprocess.run(
        [str(PYTHON), "-m", "store", "--database-url", postgres.url, "diff", "--live",
         "--against", name, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.mark.kafka
@pytest.mark.flink
def test_a_changed_rule_recomputed_over_a_day_names_exactly_what_it_changes(
    flink, topics, kafka, postgres, prometheus, tmp_path
):
    """A day of traffic with kinds (records timestamped over 2001-03-04, sent in seconds)
    goes through the live jobs into the live table. Recomputing the day with refunds no
    longer needing TypeC changes exactly the refunds that lacked TypeC (now complete) or
    lacked more (fewer missing), and nothing else; recomputing with the live rules changes
    nothing. The live job's topics, groups and table are the same before and after."""

    live_rules = _rules(tmp_path, "live", ("TypeA", "TypeB", "TypeC"))
    changed_rules = _rules(tmp_path, "changed", ("TypeA", "TypeB"))
    # The job's default idleness: while the day is sent no partition may count as idle and
    # let event time run past records still on their way (the live outcomes would then have
    # late parts the recompute, reading all at once, does not).
    config = topics.live(rules_file=live_rules, idleness_s=30)
    kinds = {"refund": TYPES[:3], "card": TYPES, None: TYPES}
    plans = load_plans(1200, TYPES, 0.3, 0.2, random.Random(7), kinds=kinds)
    writer = writer_for(config, postgres)
    with both_jobs(flink, config, writer) as (correlator_id, writer_id):
        _send_day(config, plans)
        wait_until_written(flink, writer_id, len(plans), timeout=240)
        stored = db.outcomes(postgres.url, "public", DAY_MS, DAY_MS + DAY_LONG_MS)
        assert len(stored) == len(plans)
        jobs = (correlator_id, writer_id)
        before = _settled_live_state(flink, jobs, config, writer, postgres.url)

        out = _recomputed(flink, kafka, postgres, prometheus, config, changed_rules, "rc_changed")
        print(out)  # the summary: records read, seconds, records/s
        assert "records_per_s" in out and "store diff --live --against rc_changed" in out
        code, found = _store_diff(postgres, "rc_changed")

        expected = {
            p.id
            for p in plans
            if p.kind == "refund"
            and _outcome(p.sent_types, TYPES[:3]) != _outcome(p.sent_types, TYPES[:2])
        }
        assert len(expected) > 50
        assert code == 1 and found["compared"] == len(plans)
        unexpected = [c for c in found["changes"] if c["transaction"] not in expected]
        assert not unexpected, unexpected[:5]
        assert {c["transaction"] for c in found["changes"]} == expected
        assert {n for c in found["changes"] for n in c["changes"]} <= {"status", "missing_types"}
        became_complete = sum(1 for p in plans if p.kind == "refund"
                              and set(p.sent_types) == {"TypeA", "TypeB"})  # fmt: skip
        assert found["counts"].get("status expired -> complete") == became_complete

        _recomputed(flink, kafka, postgres, prometheus, config, live_rules, "rc_same")
        # A name already used is refused: its outputs would mix with the earlier run's.
        again = _recompute(flink, kafka, postgres, prometheus, config, live_rules, "rc_same")
        assert again.returncode != 0 and "'rc_same' is taken" in again.stderr, again.stderr
        code, same = _store_diff(postgres, "rc_same")
        assert (code, same["differ"], same["compared"]) == (0, 0, len(plans))

        assert _settled_live_state(flink, jobs, config, writer, postgres.url) == before
