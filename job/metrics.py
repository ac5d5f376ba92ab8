"""Counts kept in Python and handed to Flink's counters in batches.

In thread mode every `Counter.inc()` is a call into Java that releases and re-takes the GIL
(about as dear as a state read), and the correlator would make two or three of them per
record. A `Tally` adds up in a dict instead and moves the sums into the Flink counters with
one `inc(n)`/`dec(n)` per counter when it is due: after `every_ms` of wall-clock time, and
whenever the function flushes it (on every timer). Plain Python with no Flink imports.

Distributions are histograms in Prometheus' form, kept as plain counters: one per bucket
(`le`, cumulative, the last `Inf`), a sum and a count. Counters live in Java and are safe to
read from Flink's metrics thread (Python gauges are not), a batch of observations costs one
`inc(n)` per bucket that changed, and Prometheus' `histogram_quantile` reads the buckets as
they are (the `le` metric group becomes a label).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

# The correlator's counters, as the web UI and Prometheus show them under
# `correlate_transactions`; the status command and the benchmark read them by these names.
RECORDS_IN = "type.{}.records_in"  # one per record type
MISSING = "type.{}.missing"  # expired partials that lacked the type: which service to blame
LATE_OF_TYPE = "type.{}.late"  # records of the type after their transaction closed
PROGRESS = "progress_records"  # open transactions reported on the progress topic
DEAD_LETTERS = "dead_letters"
AGGREGATED = "aggregated"
EXPIRED = "expired"
DUPLICATES = "duplicates"
LATE = "late"
AMENDED = "amended"  # late-policy amend: partials emitted again with a new part
ENRICH_ERRORS = "enrich_errors"
INTERNAL_ERRORS = "internal_errors"
REFERENCE_ERRORS = "reference_errors"
IN_FLIGHT = "transactions_in_flight"  # up-down: open transactions held
CLOSED_MARKERS = "closed_markers"  # up-down: closed transactions remembered
COUNTERS = (
    PROGRESS,
    DEAD_LETTERS,
    AGGREGATED,
    EXPIRED,
    DUPLICATES,
    LATE,
    AMENDED,
    ENRICH_ERRORS,
    INTERNAL_ERRORS,
    REFERENCE_ERRORS,
    IN_FLIGHT,
    CLOSED_MARKERS,
)


PER_TYPE = (RECORDS_IN, MISSING, LATE_OF_TYPE)

# Upper bounds of the histogram buckets, ms; the last bucket (Inf) counts every observation.
BUCKETS_MS = (50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000)
# Prometheus spells it "+Inf", but Flink's reporter turns "+" in label values into "_";
# "Inf" survives and Prometheus reads it as the same number (histogram_quantile needs it).
INF = "Inf"


@dataclass(frozen=True)
class Histogram:
    """A distribution of millisecond values as counters: `<group.>le.<bound>.<name>_bucket`
    (observations <= bound, `Inf` for all), `<group.>name_sum` and `<group.>name_count`."""

    name: str
    group: str = ""  # e.g. "type.TypeA."

    def bucket(self, bound: int | str) -> str:
        return f"{self.group}le.{bound}.{self.name}_bucket"

    @property
    def sum(self) -> str:
        return f"{self.group}{self.name}_sum"

    @property
    def count(self) -> str:
        return f"{self.group}{self.name}_count"

    def counter_names(self) -> list[str]:
        return [*(self.bucket(b) for b in (*BUCKETS_MS, INF)), self.sum, self.count]


COMPLETION = Histogram("completion_ms")  # first part's event time -> aggregate emitted


def arrival_offset(record_type: str) -> Histogram:
    """How long after its transaction's first part a type's part arrives (event time)."""
    return Histogram("arrival_offset_ms", f"type.{record_type}.")


def late_age(record_type: str) -> Histogram:
    """How long after its transaction closed a late record of the type arrived."""
    return Histogram("late_age_ms", f"type.{record_type}.")


def histograms(types: tuple[str, ...]) -> list[Histogram]:
    return [COMPLETION, *(h(t) for t in types for h in (arrival_offset, late_age))]


def counter_names(types: tuple[str, ...]) -> list[str]:
    """Every counter of the correlator, as the REST API names them (groups joined by dots)."""
    per_type = [name.format(t) for t in types for name in PER_TYPE]
    return [*COUNTERS, *per_type, *(n for h in histograms(types) for n in h.counter_names())]


def counter_path(name: str, types: tuple[str, ...]) -> tuple[list[tuple[str, str]], str]:
    """The metric groups (key, value) and the counter's own name behind a dotted name; a
    type's name may itself contain dots, so types are matched whole."""
    groups: list[tuple[str, str]] = []
    rest = name
    for t in types:
        if rest.startswith(f"type.{t}."):
            groups.append(("type", t))
            rest = rest[len(f"type.{t}.") :]
            break
    if rest.startswith("le."):
        bound, rest = rest[3:].split(".", 1)
        groups.append(("le", bound))
    return groups, rest


class Counter(Protocol):
    """The part of Flink's `Counter` a tally writes to."""

    def inc(self, n: int = 1) -> None: ...
    def dec(self, n: int = 1) -> None: ...


class Tally:
    def __init__(self, counters: Mapping[str, Counter], every_ms: int, now_ms: int) -> None:
        self.counters = counters
        self.every_ms = every_ms
        self.pending: dict[str, int] = {}
        self.flushed_at = now_ms

    def add(self, name: str, n: int = 1) -> None:
        if name not in self.counters:
            raise KeyError(f"no counter {name!r}")
        self.pending[name] = self.pending.get(name, 0) + n

    def observe(self, histogram: Histogram, value_ms: int) -> None:
        """One observation: its bucket, the sum and the count (buckets are made cumulative
        when flushed, so an observation costs a lookup and three additions)."""
        index = bisect.bisect_left(BUCKETS_MS, value_ms)
        bound = BUCKETS_MS[index] if index < len(BUCKETS_MS) else INF
        self.add(histogram.bucket(bound))
        self.add(histogram.sum, value_ms)
        self.add(histogram.count)

    def due(self, now_ms: int) -> bool:
        return bool(self.pending) and now_ms - self.flushed_at >= self.every_ms

    def flush(self, now_ms: int) -> None:
        """Moves every pending sum into its counter; counters that went down (the up-down
        counts of what the function holds) get `dec`. Buckets are cumulative: an observation
        counts in its own bucket and in every larger one."""
        pending, self.pending = _cumulative(self.pending), {}
        self.flushed_at = now_ms
        for name, n in pending.items():
            if n > 0:
                self.counters[name].inc(n)
            elif n < 0:
                self.counters[name].dec(-n)


_BUCKET = re.compile(r"^(?P<head>(?:.*\.)?)le\.(?P<bound>[^.]+)\.(?P<leaf>[^.]+_bucket)$")


def _cumulative(pending: dict[str, int]) -> dict[str, int]:
    """Pending observations per bucket, added to every bucket above theirs as well."""
    out = dict(pending)
    for name, n in pending.items():
        match = _BUCKET.match(name)
        if match is None or match["bound"] == INF:
            continue
        above = BUCKETS_MS[BUCKETS_MS.index(int(match["bound"])) + 1 :]
        for larger in (*above, INF):
            key = f"{match['head']}le.{larger}.{match['leaf']}"
            out[key] = out.get(key, 0) + n
    return out
