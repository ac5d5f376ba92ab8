"""Counts kept in Python and handed to Flink's counters in batches.

In thread mode every `Counter.inc()` is a call into Java that releases and re-takes the GIL
(about as dear as a state read), and the correlator would make two or three of them per
record. A `Tally` adds up in a dict instead and moves the sums into the Flink counters with
one `inc(n)`/`dec(n)` per counter when it is due: after `every_ms` of wall-clock time, and
whenever the function flushes it (on every timer). Plain Python with no Flink imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

# The correlator's counters, as the web UI and Prometheus show them under
# `correlate_transactions`; the status command and the benchmark read them by these names.
RECORDS_IN = "type.{}.records_in"  # one per record type
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

    def due(self, now_ms: int) -> bool:
        return bool(self.pending) and now_ms - self.flushed_at >= self.every_ms

    def flush(self, now_ms: int) -> None:
        """Moves every pending sum into its counter; counters that went down (the up-down
        counts of what the function holds) get `dec`."""
        pending, self.pending = self.pending, {}
        self.flushed_at = now_ms
        for name, n in pending.items():
            if n > 0:
                self.counters[name].inc(n)
            elif n < 0:
                self.counters[name].dec(-n)
