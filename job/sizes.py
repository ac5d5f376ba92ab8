"""Every output fits the Kafka sink's record size limit, whatever came in.

Plain Python with no Flink imports. An input record may be up to `--max-record-bytes`, so
what the job emits can be larger than Kafka takes: a dead letter carries its record in
base64 (4/3 of its size), a late record carries it as JSON, and an aggregate carries every
part. Kafka's producer refuses a record over `max.request.size` and the broker one over the
topic's `max.message.bytes` (both 1 MiB by default), and a refused record fails the job's
sink, which restarts the job, which emits it again: a loop that no restart ends.

So before an output leaves the job, `fit` checks its size (key and value; the JSON is ASCII,
so characters are bytes) against `--max-output-bytes`. An output over it leaves out the
copies of input it carries, in a fixed order, until it fits: an aggregate its parts' values
(then its enrichment), a dead letter or late record its copy of the record. The output then
says what was left out (`omitted`), and where each original is: its topic, partition and
offset, which are enough to read it from the input topic while Kafka retains it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

from job.aggregate import Outcome, Output
from job.records import to_json

TOO_LARGE = "too_large"

# What each kind of output may leave out, in this order, until it fits.
_DROPPABLE: dict[Outcome, tuple[str, ...]] = {
    Outcome.COMPLETE: ("parts", "extra", "reference", "enrichment_error"),
    Outcome.EXPIRED: ("parts", "extra", "reference", "enrichment_error"),
    Outcome.DEAD_LETTER: ("value_base64", "detail", "transaction"),
    Outcome.LATE: ("value",),
    Outcome.OPEN: ("arrival_order",),
}


# What an output keeps if even leaving its copies of input out is not enough.
_KEPT = ("transaction", "status", "reason", "type", "final_status", "topic", "partition",
         "offset", "timestamp", "types", "missing", "sources")  # fmt: skip


def size(output: Output) -> int:
    """Bytes of the record's key and value (both ASCII JSON)."""
    return len(output.key or "") + len(output.value or "")


def fit(output: Output, limit: int, topic_of: Callable[[str], str]) -> Output:
    """`output` if it fits `limit`; else the same output with fields left out (set to null)
    and an `omitted` object naming them, the original size and where the originals are.

    Aggregates name each part's place (`parts_at`: type -> topic, partition, offset); dead
    letters and late records already carry their record's topic, partition and offset.
    """
    if output.value is None or size(output) <= limit:
        return output
    document = json.loads(output.value)
    omitted: dict = {"reason": TOO_LARGE, "bytes": size(output), "limit": limit, "fields": []}
    if output.kind in (Outcome.COMPLETE, Outcome.EXPIRED):
        omitted["parts_at"] = {
            t: {"topic": topic_of(t), **at} for t, at in document.get("sources", {}).items()
        }
    for name in _DROPPABLE[output.kind]:
        if document.get(name) is None:
            continue
        document[name] = None
        omitted["fields"].append(name)
        value = to_json({**document, "omitted": omitted})
        if len(output.key or "") + len(value) <= limit:
            return replace(output, value=value)
    # Still too large (the ids and kinds the job accepts keep this from happening): only the
    # fields that say what and where, whose size the job bounds.
    omitted["fields"] = sorted(set(document) - set(_KEPT))
    stub = {k: document[k] for k in _KEPT if k in document}
    return replace(output, key=None, value=to_json({**stub, "omitted": omitted}))
