"""What the rules' tests share: a dict-backed transaction state and a strict JSON reader."""

from __future__ import annotations

import json

from job.aggregate import Part


class DictState:
    """`aggregate.TransactionState` over plain dicts, as the Flink shell does over state."""

    def __init__(self) -> None:
        self._parts: dict[str, Part] = {}
        self._closed: str | None = None

    def held_types(self) -> list[str]:
        return list(self._parts)

    def add_part(self, record_type: str, part: Part) -> None:
        self._parts[record_type] = part

    def parts(self) -> dict[str, Part]:
        return dict(self._parts)

    def clear_parts(self) -> None:
        self._parts.clear()

    def closed_status(self) -> str | None:
        return self._closed

    def mark_closed(self, status: str) -> None:
        self._closed = status


def strict_json(text: str) -> object:
    """What a strict consumer does: RFC 8259 only, and every string valid Unicode."""

    def reject(name: str):
        raise ValueError(f"{name} is not JSON")

    text.encode("ascii")  # outputs are ASCII: they cross into Java and decode anywhere
    value = json.loads(text, parse_constant=reject)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return value
