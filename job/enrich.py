"""Enrichment: reference data per type, the SLO flag, and an optional user hook.

Plain Python with no Flink imports. The job keeps the reference data in broadcast state fed
from a compacted Kafka topic (key: the type, value: a JSON object such as
`{"service": "payments", "team": "billing", "duration_slo_ms": 5000}`), and calls `enrich`
on every aggregate and partial just before it is emitted.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping

Hook = Callable[[dict], dict]
SLO_FIELD = "duration_slo_ms"


def parse_reference(key: bytes | str | None, value: bytes | str | None) -> tuple[str, dict | None]:
    """One record of the reference topic: (type, fields), or (type, None) to delete it.

    Raises ValueError for a record the job cannot use; the job counts and skips it.
    """
    if key is None:
        raise ValueError("reference record without a key (the key is the type)")
    record_type = key.decode() if isinstance(key, bytes) else key
    record_type = record_type.strip()
    if record_type.startswith('"'):
        record_type = json.loads(record_type)  # a JSON-quoted key, like the event topics use
    if value is None:
        return record_type, None  # a tombstone: forget this type's reference data
    fields = json.loads(value)
    if not isinstance(fields, dict):
        raise ValueError(f"reference value for {record_type!r} is not a JSON object")
    return record_type, fields


def enrich(record: dict, reference: Mapping[str, dict], hook: Hook | None = None) -> dict:
    """Adds reference data of every configured type, the SLO verdict and the hook's fields.

    The transaction's SLO is the strictest `duration_slo_ms` among the types it involves
    (present or missing): an end-to-end duration above it breaks the SLO. A partial is
    judged on the duration of the parts it has.
    """
    types = [*record["types"], *record["missing"]]
    record["reference"] = {t: dict(reference[t]) for t in types if t in reference}
    slos = [
        fields[SLO_FIELD]
        for fields in record["reference"].values()
        if isinstance(fields.get(SLO_FIELD), int | float)
    ]
    record["slo_ms"] = min(slos) if slos else None
    record["slo_breached"] = bool(slos) and record["duration_ms"] > min(slos)
    if hook is not None:
        try:
            extra = hook(dict(record))
            if not isinstance(extra, dict):
                raise TypeError(f"hook returned {type(extra).__name__}, expected a dict")
            record["extra"] = extra
        except Exception as error:  # noqa: BLE001 - a user's hook must never stop the job
            record["enrichment_error"] = f"{type(error).__name__}: {error}"[:500]
    return record


def load_hook(spec: str) -> Hook | None:
    """`package.module:function` -> the function; "" -> None. Fails fast on a bad spec."""
    if not spec:
        return None
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"enrichment hook {spec!r} is not of the form package.module:function")
    function = getattr(importlib.import_module(module_name), function_name)
    if not callable(function):
        raise TypeError(f"enrichment hook {spec!r} is not callable")
    return function
