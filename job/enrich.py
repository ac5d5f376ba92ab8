"""Enrichment: reference data per type, the SLO flag, and an optional user hook.

Plain Python with no Flink imports. The job keeps the reference data in broadcast state fed
from a compacted Kafka topic (key: the type, value: a JSON object such as
`{"service": "payments", "team": "billing", "duration_slo_ms": 5000}`), and calls `enrich`
on every aggregate and partial just before it is emitted.
"""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Callable, Mapping

from job.records import printable, strict_loads

Hook = Callable[[dict], dict]
SLO_FIELD = "duration_slo_ms"


def parse_reference(key: bytes | str | None, value: bytes | str | None) -> tuple[str, dict | None]:
    """One record of the reference topic: (type, fields), or (type, None) to delete it.

    Raises ValueError for a record the job cannot use, whatever its bytes (not UTF-8, not
    strict JSON, nested too deeply); the job counts and skips it.
    """
    if key is None:
        raise ValueError("reference record without a key (the key is the type)")
    try:
        record_type = key.decode() if isinstance(key, bytes) else key
        record_type = record_type.strip()
        if record_type.startswith('"'):
            record_type = strict_loads(record_type)  # JSON-quoted, like the event topics' keys
        if not isinstance(record_type, str) or printable(record_type) != record_type:
            raise ValueError(f"reference key {printable(str(record_type))!r} is not a type name")
        if value is None:
            return record_type, None  # a tombstone: forget this type's reference data
        fields = strict_loads(value.decode() if isinstance(value, bytes) else value)
    except RecursionError as error:
        raise ValueError(f"reference record nested too deeply: {error}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"reference value for {record_type!r} is not a JSON object")
    return record_type, fields


def enrich(record: dict, reference: Mapping[str, dict], hook: Hook | None = None) -> dict:
    """Adds reference data of every configured type, the SLO verdict and the hook's fields.

    The transaction's SLO is the strictest `duration_slo_ms` among the types it involves
    (present or missing): an end-to-end duration above it breaks the SLO. A partial is
    judged on the duration of the parts it has.

    Returns a new record; `record` is left as it was. The hook gets a deep copy, so what it
    changes in place never reaches the output, and what it returns must be a dict of strict
    JSON (no NaN, no lone surrogates, nothing `json` cannot encode), else the record carries
    `enrichment_error` instead of `extra`.
    """
    types = [*record["types"], *record["missing"]]
    found = {t: dict(reference[t]) for t in types if t in reference}
    slos = [
        fields[SLO_FIELD]
        for fields in found.values()
        if isinstance(fields.get(SLO_FIELD), int | float)
    ]
    enriched = {
        **record,
        "reference": found,
        "slo_ms": min(slos) if slos else None,
        "slo_breached": bool(slos) and record["duration_ms"] > min(slos),
    }
    if hook is not None:
        try:
            extra = hook(copy.deepcopy(enriched))
            _check_hook_output(extra)
            enriched["extra"] = extra
        except Exception as error:  # noqa: BLE001 - a user's hook must never stop the job
            enriched["enrichment_error"] = printable(f"{type(error).__name__}: {error}")[:500]
    return enriched


def _check_hook_output(extra: object) -> None:
    """Raises unless `extra` is a dict that encodes as strict JSON in UTF-8."""
    if not isinstance(extra, dict):
        raise TypeError(f"hook returned {type(extra).__name__}, expected a dict")
    json.dumps(extra, ensure_ascii=False, allow_nan=False).encode("utf-8")


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
