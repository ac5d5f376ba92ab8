"""A savepoint of every released version restores into this one, on the real cluster.

Each folder under `tests/savepoints/` holds a savepoint that a released version of the job
wrote (made by `python -m tests.savepoints.make COMMIT`, with the records it had seen).
This version restores it with `flink run -s`, as the runbook's upgrade does, and must read
the released state: the parts held by open transactions (they complete with the parts from
the savepoint, first in arrival order), their held types (a type sent again is a
duplicate) and the marker of a closed transaction (its straggler is late).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from generator.outputs import read_topics
from job.config import JobConfig
from stack.kafka import create_job_topics
from stack.submit import submit_correlator
from tests.kit import wait_for_checkpoint_after
from tests.savepoints import layout, scenario
from tests.savepoints.make import send

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

FIXTURES = Path(__file__).resolve().parent / "savepoints"
VERSIONS = sorted(p.parent.name for p in FIXTURES.glob("*/manifest.json"))


def test_fixtures_exist():
    """The released versions whose state this version must read (one before and one after
    the held types moved beside the deadlines, one before the broadcast counts, this one)."""
    assert len(VERSIONS) >= 4, VERSIONS


def _manifests() -> dict[str, dict]:
    return {v: json.loads((FIXTURES / v / "manifest.json").read_text()) for v in VERSIONS}


@pytest.mark.parametrize("version", VERSIONS)
def test_fixture_layout_is_its_versions(version):
    """A fixture's recorded layout is read off its own commit's code (not edited by hand)."""
    manifest = _manifests()[version]
    assert manifest["layout"] == layout.describe_commit(manifest["commit"])


def test_the_current_state_layout_has_a_savepoint():
    """Fails when the state layout changes and no savepoint of it is stored: the next change
    would then have no savepoint of the layout before it to restore."""
    problem = layout.uncovered(layout.describe(), _manifests())
    assert problem is None, problem


def test_a_layout_change_is_caught():
    """The check above can fail: a field added to a pickled tuple, a state's type changed,
    an operator renamed, each against the stored fixtures."""
    manifests = _manifests()
    current = layout.describe()
    changes = [
        {**current, "pickled": {**current["pickled"], "Open": [*current["pickled"]["Open"], "x"]}},
        {**current, "state": {**current["state"], "closed": {"kind": "ValueStateDescriptor",
                                                             "type": "Long"}}},
        {**current, "operators": ["correlate"]},
    ]  # fmt: skip
    for changed in changes:
        assert "the state layout changed" in layout.uncovered(changed, manifests)
    del manifests[VERSIONS[0]]["layout"]
    assert "do not record their layout" in layout.uncovered(current, manifests)


@pytest.mark.parametrize("version", VERSIONS)
def test_released_savepoint_restores(version, flink, kafka, tmp_path):
    manifest = json.loads((FIXTURES / version / "manifest.json").read_text())
    config = replace(
        JobConfig(bootstrap_servers=kafka.bootstrap).tagged(manifest["tag"]),
        checkpoint_interval_s=2.0,
        idleness_s=2.0,
    )
    create_job_topics(config, scenario.PARTITIONS)
    # The same records at the same offsets: the savepoint's source positions point past them.
    send(kafka.bootstrap, config, [scenario.Sent(**r) for r in manifest["before"]])
    savepoint = shutil.copytree(FIXTURES / version / "savepoint", tmp_path / "savepoint")
    job_id = submit_correlator(flink, config, restore_from=str(savepoint))
    try:
        flink.api.wait_until_running(job_id)
        send(kafka.bootstrap, config, scenario.after())
        outputs = _read_outputs(config, until_count=4)
        wait_for_checkpoint_after(flink, job_id, time.time())  # anything more would show now
        outputs = _read_outputs(config)
    finally:
        flink.api.cancel(job_id)

    held = {t: types for t, types in scenario.HELD.items() if types[1]}
    completed = {t: b for t, (b, a) in held.items() if set(b) | set(a) >= set(scenario.TYPES)}
    aggregated = outputs[config.aggregated_topic]
    assert sorted(v["transaction"] for v in aggregated) == sorted(completed)
    for value in aggregated:
        before = completed[value["transaction"]]
        # The held parts come first in arrival order (their sequence numbers from the state).
        assert set(value["arrival_order"][: len(before)]) == set(before)
        assert {t: p["log"] for t, p in value["parts"].items()} == {
            t: f"{'before' if t in before else 'after'} {t}" for t in scenario.TYPES
        }
    (late,) = outputs[config.late_topic]
    ((closed, (_, (late_type,))),) = scenario.CLOSED.items()
    assert (late["transaction"], late["type"], late["final_status"]) == (
        closed,
        late_type,
        "complete",
    )
    (duplicate,) = outputs[config.dead_letter_topic]
    assert (duplicate["reason"], duplicate["transaction"]) == ("duplicate", "sp-held-a")
    assert outputs[config.expired_topic] == []


def _read_outputs(config: JobConfig, until_count: int | None = None) -> dict[str, list[dict]]:
    """The output topics' committed records by topic; with `until_count`, read until that
    many arrived (120 s at most), otherwise until the topics are quiet."""
    topics = config.output_topics
    records = read_topics(
        config.bootstrap_servers,
        topics,
        until=None if until_count is None else (lambda rs: len(rs) >= until_count),
        timeout_s=120,
    )
    return {t: [r.value for r in records if r.topic == t] for t in topics}
