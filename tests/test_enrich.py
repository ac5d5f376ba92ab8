"""Enrichment without Flink: reference data, the SLO flag, the user hook, the output schema."""

import json
from pathlib import Path

import jsonschema
import pytest

from job.aggregate import Outcome, Part, build_aggregate
from job.enrich import enrich, load_hook, parse_reference

TYPES = ("TypeA", "TypeB", "TypeC")
SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "schemas" / "aggregate.schema.json").read_text()
)
REFERENCE = {
    "TypeA": {"service": "orders", "team": "checkout", "duration_slo_ms": 500},
    "TypeB": {"service": "payments", "duration_slo_ms": 200},
    "TypeZ": {"service": "not involved"},
}


def _record(times: dict[str, int], status: str = Outcome.COMPLETE) -> dict:
    parts = {
        t: Part(seq, at, json.dumps({"transaction": "tx-1", "log": t}), 0, seq)
        for seq, (t, at) in enumerate(times.items())
    }
    return build_aggregate("tx-1", parts, TYPES, status, emitted_at=99)


def test_derived_fields_of_a_shuffled_complete_transaction():
    record = _record({"TypeC": 1_000, "TypeA": 1_150, "TypeB": 1_100})
    assert record["arrival_order"] == ["TypeC", "TypeA", "TypeB"]
    assert record["offsets_ms"] == {"TypeC": 0, "TypeA": 150, "TypeB": 100}
    assert record["part_count"] == 3
    assert (record["first_event_time"], record["last_event_time"]) == (1_000, 1_150)
    assert record["duration_ms"] == 150


def test_reference_fields_and_strictest_slo():
    record = enrich(_record({"TypeA": 0, "TypeB": 300, "TypeC": 400}), REFERENCE)
    assert record["reference"] == {"TypeA": REFERENCE["TypeA"], "TypeB": REFERENCE["TypeB"]}
    assert record["slo_ms"] == 200
    assert record["slo_breached"] is True
    jsonschema.validate(record, SCHEMA)


def test_partial_is_judged_on_its_parts_and_gets_reference_of_missing_types():
    record = enrich(_record({"TypeA": 0}, Outcome.EXPIRED), REFERENCE)
    assert record["missing"] == ["TypeB", "TypeC"]
    assert set(record["reference"]) == {"TypeA", "TypeB"}
    assert record["slo_breached"] is False
    jsonschema.validate(record, SCHEMA)


def test_no_reference_data_means_no_slo():
    record = enrich(_record({"TypeC": 0}), {})
    assert (record["reference"], record["slo_ms"], record["slo_breached"]) == ({}, None, False)
    jsonschema.validate(record, SCHEMA)


def test_hook_fields_go_under_extra():
    record = enrich(_record({"TypeA": 0}), {}, load_hook("generator.hooks:speed_class"))
    assert record["extra"] == {"speed": "fast"}
    jsonschema.validate(record, SCHEMA)


@pytest.mark.parametrize(
    ("hook", "error"),
    [
        (lambda r: 1 / 0, "ZeroDivisionError"),
        (lambda r: ["not", "a", "dict"], "TypeError"),
    ],
)
def test_failing_hook_is_recorded_not_raised(hook, error):
    record = enrich(_record({"TypeA": 0}), REFERENCE, hook)
    assert record["enrichment_error"].startswith(error)
    assert "extra" not in record
    jsonschema.validate(record, SCHEMA)


def test_hook_cannot_change_the_aggregate_itself():
    def meddle(record):
        record["status"] = "meddled"
        return {}

    assert enrich(_record({"TypeA": 0}), {}, meddle)["status"] == Outcome.COMPLETE


def test_load_hook_rejects_bad_specs():
    assert load_hook("") is None
    with pytest.raises(ValueError):
        load_hook("no_colon")
    with pytest.raises(ModuleNotFoundError):
        load_hook("no.such.module:f")


def test_parse_reference_records():
    assert parse_reference(b'"TypeA"', b'{"team": "x"}') == ("TypeA", {"team": "x"})
    assert parse_reference(b"TypeB", None) == ("TypeB", None)  # tombstone
    for key, value in [(None, b"{}"), (b"TypeA", b"[1]"), (b"TypeA", b"not json")]:
        with pytest.raises(ValueError):
            parse_reference(key, value)


def test_schema_rejects_a_record_missing_derived_fields():
    record = enrich(_record({"TypeA": 0}), {})
    del record["offsets_ms"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(record, SCHEMA)
