"""Rules per transaction kind, timeout modes and amended partials, as pure functions
(hypothesis), without Flink: `job.rules` and `job.aggregate` over a dict state."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from job import aggregate
from job.aggregate import Outcome, Verdict
from job.config import JobConfig
from job.records import Event, Source, parse
from job.rules import (
    SINCE_FIRST,
    SINCE_LAST,
    Rule,
    RulesError,
    RuleSet,
    newer,
    parse_rules,
    read_rules,
    to_document,
)
from stack.paths import ROOT
from tests.kit import DictState

TYPES = ("TypeA", "TypeB", "TypeC", "TypeD")
BASE = RuleSet(Rule(TYPES, 60_000))
RULES = parse_rules(
    {
        "version": 3,
        "kinds": {
            "refund": {"required": ["TypeA", "TypeB"], "timeout_s": 10},
            "card": {"required": ["TypeA", "TypeC", "TypeD"], "timeout_mode": "since-last"},
        },
    },
    BASE,
    TYPES,
)


def test_a_rules_file_fills_unset_keys_from_the_default_and_the_options():
    assert RULES.version == 3
    assert RULES.rule(None) == RULES.rule("unknown") == BASE.default
    assert RULES.rule("refund") == Rule(("TypeA", "TypeB"), 10_000, SINCE_FIRST, 0)
    assert RULES.rule("card") == Rule(("TypeA", "TypeC", "TypeD"), 60_000, SINCE_LAST, 0)


def test_the_example_rules_file_reads():
    rules = read_rules(
        ROOT / "reference" / "rules.yaml", JobConfig().option_rules(), JobConfig().types
    )
    assert set(rules.kinds) == {"refund", "card"} and rules.version == 1


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be a mapping"),
        ({"versoin": 2}, "unknown keys ['versoin']"),
        ({"version": -1}, "version: -1"),
        ({"version": True}, "version: True"),
        ({"kinds": ["refund"]}, "kinds: expected a mapping"),
        ({"kinds": {"refund": {"required": ["TypeZ"]}}}, "kinds.refund.required: ['TypeZ'] not"),
        ({"kinds": {"refund": {"required": []}}}, "kinds.refund.required: expected a non-empty"),
        ({"kinds": {"refund": {"required": "TypeA"}}}, "kinds.refund.required: expected"),
        ({"kinds": {"r": {"timeout_s": 0}}}, "kinds.r.timeout_s: must be more than 0"),
        ({"kinds": {"r": {"timeout_s": "10"}}}, "kinds.r.timeout_s: '10' is not a number"),
        ({"default": {"timeout_mode": "lazy"}}, "default.timeout_mode: 'lazy' is not one of"),
        ({"kinds": {"r": {"max_duration_s": -5}}}, "kinds.r.max_duration_s: -5"),
        ({"kinds": {"r": {"requried": ["TypeA"]}}}, "kinds.r: unknown keys ['requried']"),
        ({"kinds": {"": {}}}, "is not a kind name"),
    ],
)
def test_a_bad_rules_document_is_refused_saying_where_and_why(document, message):
    with pytest.raises(RulesError) as error:
        parse_rules(document, BASE, TYPES)
    assert message in str(error.value)


def test_a_bad_rules_file_fails_the_job_options(tmp_path):
    bad = tmp_path / "rules.yaml"
    bad.write_text("kinds:\n  refund:\n    required: [TypeZ]\n")
    from job.config import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--rules-file", str(bad)])


def test_rules_round_trip_through_the_topics_document():
    assert parse_rules(to_document(RULES), BASE, TYPES) == RULES


def test_only_a_higher_version_replaces_the_rules():
    text = json.dumps({"version": 4, "kinds": {"x": {"required": ["TypeA"]}}})
    assert newer(RULES, BASE, text, TYPES).rule("x").required == ("TypeA",)
    same = json.dumps({"version": 3})
    assert newer(RULES, BASE, same, TYPES) is None
    with pytest.raises(RulesError):
        newer(RULES, BASE, "{not json", TYPES)


def test_the_kind_comes_from_the_configured_field_and_only_as_a_non_empty_string():
    def kind(value: dict, field: str = "kind"):
        raw = json.dumps({"transaction": "t", **value}).encode()
        return parse(raw, Source("Events-TypeA", 0, 0, 0), JobConfig().type_of, 1000, field).kind

    assert kind({"kind": "refund"}) == "refund"
    assert kind({"flow": "refund"}, "flow") == "refund"
    assert kind({"kind": ""}) is kind({"kind": 7}) is kind({"kind": None}) is kind({}) is None
    assert kind({"kind": "refund"}, "") is None


def _event(tx: str, record_type: str, offset: int, kind: str | None = None) -> Event:
    value = json.dumps({"transaction": tx, "n": offset, **({"kind": kind} if kind else {})})
    return Event(tx, record_type, value, Source("Events-" + record_type, 0, offset, offset), kind)


def test_a_kind_completes_with_its_own_required_types_and_keeps_optional_extras():
    state = DictState()
    assert aggregate.on_event(state, _event("t", "TypeD", 0), RULES, 0).verdict is Verdict.OPENED
    # The kind arrives with the second part: refund needs A and B, D is an optional extra.
    assert aggregate.on_event(state, _event("t", "TypeA", 1, "refund"), RULES, 0).verdict is (
        Verdict.HELD
    )
    step = aggregate.on_event(state, _event("t", "TypeB", 2), RULES, 5)
    assert step.verdict is Verdict.COMPLETE
    record = step.output.record
    assert (record["kind"], record["rule_version"], record["missing"]) == ("refund", 3, [])
    assert record["types"] == ["TypeA", "TypeB", "TypeD"]  # required, then the extras


def test_the_first_kind_named_wins():
    state = DictState()
    aggregate.on_event(state, _event("t", "TypeA", 0, "card"), RULES, 0)
    # refund would now be complete (A, B); the transaction is a card payment.
    step = aggregate.on_event(state, _event("t", "TypeB", 1, "refund"), RULES, 0)
    assert step.verdict is Verdict.HELD and state.kind() == "card"


def test_since_last_deadlines_follow_each_part_and_are_capped():
    gap = Rule(TYPES, 10_000, SINCE_LAST, max_duration_ms=25_000)
    assert gap.deadline(first_ms=0, last_ms=0) == 10_000
    assert gap.deadline(first_ms=0, last_ms=9_000) == 19_000
    assert gap.deadline(first_ms=0, last_ms=20_000) == 25_000
    assert Rule(TYPES, 10_000, SINCE_FIRST).deadline(0, 9_000) == 10_000


# A run: each transaction has a kind (or none), its parts name it or not; parts arrive in
# any order with duplicates; a transaction may expire at any point; late parts follow.
KINDS = (None, "refund", "card")
runs = st.lists(
    st.one_of(
        st.tuples(st.just("part"), st.integers(0, 3), st.sampled_from(TYPES), st.booleans()),
        st.tuples(st.just("expire"), st.integers(0, 3), st.none(), st.none()),
    ),
    max_size=60,
)


def _play(run, kinds, amend: bool):
    """Plays a run through the rules; returns (outputs, offsets of the records sent)."""
    states: dict[str, DictState] = defaultdict(DictState)
    outputs, sent = [], []
    for offset, (action, index, record_type, names_kind) in enumerate(run):
        tx, state = f"tx-{index}", states[f"tx-{index}"]
        if action == "part":
            kind = kinds[index] if names_kind else None
            sent.append(offset)
            step = aggregate.on_event(state, _event(tx, record_type, offset, kind), RULES, offset,
                                      amend=amend)  # fmt: skip
            if step.output is not None:
                outputs.append(step.output)
        elif state.held_types():
            kind = state.kind()
            outputs.append(aggregate.close(state, tx, RULES.rule(kind).required, Outcome.EXPIRED,
                                           offset, kind=kind, keep_parts=amend))  # fmt: skip
    for tx, state in states.items():  # end of input: every open partial expires
        if state.held_types():
            kind = state.kind()
            outputs.append(aggregate.close(state, tx, RULES.rule(kind).required, Outcome.EXPIRED,
                                           len(run), kind=kind, keep_parts=amend))  # fmt: skip
    return outputs, sent


def _kind_expected(run, kinds, tx_index: int) -> set[str | None]:
    """The kinds the transaction may end with: its own if every part named it, else its
    own or none (a part that names it may be a duplicate or late, which teaches nothing)."""
    parts = [names for action, index, _, names in run if action == "part" and index == tx_index]
    if kinds[tx_index] and all(parts):
        return {kinds[tx_index]}
    return {None, kinds[tx_index]}


@settings(max_examples=300)
@given(runs, st.tuples(*[st.sampled_from(KINDS)] * 4))
def test_route_every_transaction_ends_once_and_every_record_is_accounted_for(run, kinds):
    outputs, sent = _play(run, kinds, amend=False)
    finals = Counter()
    accounted = Counter()
    for output in outputs:
        doc = json.loads(output.value)
        if output.kind in (Outcome.COMPLETE, Outcome.EXPIRED):
            finals[doc["transaction"]] += 1
            rule = RULES.rule(doc["kind"])
            assert (output.kind == Outcome.COMPLETE) == rule.is_complete(doc["types"])
            assert doc["missing"] == [t for t in rule.required if t not in doc["types"]]
            assert doc["kind"] in _kind_expected(run, kinds, int(doc["transaction"][3:]))
            accounted.update(s["offset"] for s in doc["sources"].values())
        else:
            accounted[doc["offset"]] += 1
    opened = {index for action, index, _, _ in run if action == "part"}
    assert finals == Counter({f"tx-{i}": 1 for i in opened})
    assert accounted == Counter(sent)


@settings(max_examples=300)
@given(runs, st.tuples(*[st.sampled_from(KINDS)] * 4))
def test_amend_the_last_record_of_each_transaction_is_the_right_one(run, kinds):
    outputs, sent = _play(run, kinds, amend=True)
    last: dict[str, dict] = {}
    others = Counter()
    for output in outputs:
        doc = json.loads(output.value)
        if output.kind in (Outcome.COMPLETE, Outcome.EXPIRED):
            previous = last.get(doc["transaction"])
            amends = doc.get("amends", 0)
            assert amends == (0 if previous is None else previous.get("amends", 0) + 1)
            assert previous is None or previous["status"] == Outcome.EXPIRED  # complete is final
            last[doc["transaction"]] = doc
        else:
            others[doc["offset"]] += 1
    for tx, doc in last.items():
        index = int(tx.split("-")[1])
        assert doc["kind"] in _kind_expected(run, kinds, index)
        rule = RULES.rule(doc["kind"])
        assert (doc["status"] == Outcome.COMPLETE) == rule.is_complete(doc["types"])
    # Every record: a part of its transaction's last record, a duplicate or a late one.
    accounted = Counter(others)
    for doc in last.values():
        accounted.update(s["offset"] for s in doc["sources"].values())
    assert accounted == Counter(sent)
