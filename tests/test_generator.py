"""The generator's plans: kinds send their rule's required types, omissions stay within
them, and no kind is today's behaviour. Pure: no Kafka (but the late sends, checked on the
real broker)."""

from __future__ import annotations

import json
import random
import subprocess
from collections import Counter

import pytest

from generator.__main__ import build_parser, main, scenario_plans
from generator.outputs import read_topics
from job.config import DEFAULT_TYPES
from stack.paths import PYTHON, ROOT

RULES = {
    "version": 3,
    "kinds": {"refund": {"required": ["TypeA", "TypeB", "TypeC"]}, "card": {}},
}


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(RULES))
    return str(path)


def _plans(*argv: str, seed: int = 5):
    args = build_parser().parse_args(list(argv))
    return scenario_plans(args, list(DEFAULT_TYPES), random.Random(seed))


@pytest.mark.parametrize("scenario", ["in-order", "shuffled", "omitted", "load", "demo"])
def test_a_kind_sends_the_types_its_rule_requires(scenario, rules_file):
    plans = _plans(scenario, "--count", "300", "--kinds", "refund,card,other",
                   "--rules-file", rules_file)  # fmt: skip
    required = {"refund": {"TypeA", "TypeB", "TypeC"}, "card": set(DEFAULT_TYPES)}
    required["other"] = set(DEFAULT_TYPES)  # a kind the rules do not name: the default
    for p in plans:
        assert set(p.sent_types) | set(p.omitted) == required[p.kind], p
        assert not set(p.sent_types) & set(p.omitted)
        assert p.sent_types, p  # never every type left out
    if scenario != "demo":
        assert set(Counter(p.kind for p in plans)) == {"refund", "card", "other"}
    if scenario == "omitted":
        assert all(p.omitted for p in plans)


def test_no_kind_sends_every_type_as_before():
    plans = _plans("load", "--count", "200", "--omit-probability", "0.3")
    assert {p.kind for p in plans} == {None}
    assert all(set(p.sent_types) | set(p.omitted) == set(DEFAULT_TYPES) for p in plans)
    assert 0 < sum(not p.complete for p in plans) < 200


def test_a_rules_file_the_job_refuses_is_refused_here(tmp_path, capsys):
    bad = tmp_path / "rules.yaml"
    bad.write_text("kinds:\n  refund:\n    required: [TypeZ]\n")
    with pytest.raises(SystemExit) as exit_:
        main(["in-order", "--kinds", "refund", "--rules-file", str(bad)])
    assert exit_.value.code == 2
    assert "TypeZ" in capsys.readouterr().err


@pytest.mark.kafka
def test_generator_sends_left_out_types_late(topics):
    """`--late-after-s`: every type an incomplete transaction left out is sent, that long
    after the rest; the summary counts them and the kinds."""
    config = topics.config
    command = [
        str(PYTHON), "-m", "generator", "omitted", "--count", "6", "--seed", "3", "--json",
        "--bootstrap-servers", config.bootstrap_servers, "--topic-prefix", config.topic_prefix,
        "--kinds", "refund,card", "--late-after-s", "2",
    ]  # fmt: skip
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout)
    assert summary["incomplete"] == 6 and sum(summary["kinds"].values()) == 6
    sent = summary["records"] + summary["late_records"]
    records = read_topics(
        config.bootstrap_servers, config.input_topics, until=lambda rs: len(rs) >= sent
    )
    by_tx: dict[str, list[tuple[int, dict]]] = {}
    for r in records:
        by_tx.setdefault(r.value["transaction"], []).append((r.timestamp, r.value))
    assert set(by_tx) == set(summary["transaction_ids"])
    assert len(records) == sent
    for parts in by_tx.values():
        assert len(parts) == 5  # no rules file: both kinds need every type, all sent in the end
        assert len({v["kind"] for _, v in parts}) == 1
        times = sorted(t for t, _ in parts)
        assert times[-1] - times[0] >= 2_000  # the left-out types came after the pause


def test_outputs_and_rows_compare_numbers_by_value():
    """jsonb returns `1.5e300` as its 301 digits: the same number, which a float of the
    text does not equal; different numbers still differ."""
    from generator.verify import by_value

    emitted = json.loads('{"ts": 1.5e300, "x": [0.1, 7]}')
    stored = {"ts": 15 * 10**299, "x": [0.1, 7]}
    assert emitted != stored and by_value(emitted) == by_value(stored)
    assert by_value({"ts": 1}) != by_value({"ts": 2})
