"""Example enrichment hooks (`--enrich-hook generator.hooks:NAME`), used by the demo and tests.

A hook receives a copy of the aggregate and returns a dict of extra fields; the job puts
them under `extra`. An exception is caught, counted (`enrich_errors`) and recorded on the
aggregate as `enrichment_error`; it never stops the job.
"""

from __future__ import annotations


def speed_class(aggregate: dict) -> dict:
    """Buckets the end-to-end duration, the kind of field a dashboard filters on."""
    duration = aggregate["duration_ms"]
    return {"speed": "fast" if duration < 1_000 else "normal" if duration < 60_000 else "slow"}


def faulty(aggregate: dict) -> dict:
    """A hook with bugs, for tests: raises for transactions whose id contains "boom",
    returns no strict JSON (NaN) for those whose id contains "nan-hook", and changes the
    record it was given in place (which must not reach the output) for all."""
    aggregate["parts"].clear()
    if "boom" in aggregate["transaction"]:
        raise RuntimeError("boom")
    if "nan-hook" in aggregate["transaction"]:
        return {"ratio": float("nan")}
    return speed_class(aggregate)
