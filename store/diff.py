"""What a recompute changed: the outcome of each transaction, live against recomputed.

Plain data in, plain data out (no database here): `store diff` reads both sides with
`store.db.outcomes` over the recompute's range and hands them to `differences`.

An outcome is what a transaction came to: complete or expired (`status`), the types it
lacked (`missing_types`), its `kind`, and how many late parts amended it (`amends`). A
transaction only one side has is a change of its own: `only_live` (the recompute did not
see it begin in the range: its records are past retention, or the rules now make it begin
elsewhere) or `only_recomputed` (the live job has not stored it, or stored it open).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

COMPARED = ("status", "missing_types", "kind", "amends")
ONLY_LIVE, ONLY_RECOMPUTED = "only_live", "only_recomputed"


def differences(live: Mapping[str, dict], recomputed: Mapping[str, dict]) -> list[dict]:
    """One entry per transaction whose outcome differs, in id order: its id, what changed
    (`changes`, in the order of COMPARED) and both outcomes (None where a side has none)."""
    found = []
    for transaction in sorted(live.keys() | recomputed.keys()):
        before, after = live.get(transaction), recomputed.get(transaction)
        if before is None:
            changes = [ONLY_RECOMPUTED]
        elif after is None:
            changes = [ONLY_LIVE]
        else:
            changes = [name for name in COMPARED if before[name] != after[name]]
        if changes:
            found.append(
                {"transaction": transaction, "changes": changes, "live": before,
                 "recomputed": after}
            )  # fmt: skip
    return found


def change_label(entry: dict, name: str) -> str:
    """How one change reads in the counts: a status change names both ends."""
    if name == "status":
        return f"status {entry['live']['status']} -> {entry['recomputed']['status']}"
    return name


def counts(found: list[dict]) -> dict[str, int]:
    """How many transactions changed in each way, most first."""
    tally = Counter(change_label(e, name) for e in found for name in e["changes"])
    return dict(sorted(tally.items(), key=lambda item: (-item[1], item[0])))


def render(found: list[dict], compared: int, limit: int = 50) -> str:
    """The counts, then one line per changed transaction (the first `limit`)."""
    if not found:
        return f"no outcome differs ({compared:,} transactions compared)"
    lines = [f"{len(found):,} of {compared:,} transactions differ:"]
    lines += [f"  {n:,}  {label}" for label, n in counts(found).items()]
    for entry in found[:limit]:
        lines.append(f"{entry['transaction']}  " + "; ".join(_described(entry)))
    if len(found) > limit:
        lines.append(f"... and {len(found) - limit:,} more (--json lists every one)")
    return "\n".join(lines)


def _described(entry: dict) -> list[str]:
    before, after = entry["live"], entry["recomputed"]
    if before is None or after is None:
        return [entry["changes"][0]]
    return [f"{name} {before[name]!r} -> {after[name]!r}" for name in entry["changes"]]
