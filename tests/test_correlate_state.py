"""The state layout of `correlate transactions`: part of the savepoint format.

A savepoint stores each held part as a tuple in the order of `Part`'s fields, typed as the
`parts` MapState descriptor says. Reordering the dataclass, or its types drifting from the
descriptor's, would make every savepoint taken before unreadable: these tests stop that.
"""

from __future__ import annotations

import typing
from dataclasses import fields

from job.aggregate import Part
from job.correlate import CLOSED, DEADLINES, PARTS, part_from_state, part_to_state

SAVEPOINT_ORDER = ["seq", "event_time", "value", "partition", "offset"]


def test_part_fields_are_in_savepoint_order():
    assert [f.name for f in fields(Part)] == SAVEPOINT_ORDER


def test_a_part_round_trips_through_its_state_tuple():
    part = Part(seq=2, event_time=1_764_000_000_123, value='{"transaction": "t"}', partition=1,
                offset=41)  # fmt: skip
    assert part_to_state(part) == (2, 1_764_000_000_123, '{"transaction": "t"}', 1, 41)
    assert part_from_state(part_to_state(part)) == part


def test_the_descriptor_types_follow_the_dataclass():
    value_types = [str(t) for t in PARTS.type_info._value_type_info.get_field_types()]
    hints = typing.get_type_hints(Part)
    assert len(value_types) == len(SAVEPOINT_ORDER)
    for name, flink_type in zip(SAVEPOINT_ORDER, value_types, strict=True):
        expected = {"Integer", "Long"} if hints[name] is int else {"String"}
        assert flink_type in expected, (name, flink_type)
    # seq and partition are small; event times and offsets need 64 bits.
    assert value_types == ["Integer", "Long", "String", "Integer", "Long"]


def test_state_names_are_stable():
    assert (PARTS.name, CLOSED.name, DEADLINES.name) == ("parts", "closed", "deadlines")
