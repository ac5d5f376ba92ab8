"""A test driver for the job's Flink function, in the spirit of Kafka Streams'
TopologyTestDriver: `Correlate` itself runs over in-memory keyed state, timers and counters,
with a fake clock and a watermark the test moves. No JVM, milliseconds per test.

It routes records as the job does (by the `transaction` that SQL's JSON_VALUE reads; here
Python's lenient `json`, which agrees on every record the parser accepts) and counts every
call the function makes into state and timers, each of which is a call into Java in thread
mode, so tests can pin how few a record costs.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from dataclasses import dataclass, field

from pyflink.datastream import TimeDomain

from job.config import JobConfig
from job.correlate import Correlate

START_MS = 1_764_000_000_000


class _Keyed:
    """Keyed state of one descriptor: a dict per key, the driver's current key."""

    def __init__(self, driver: Driver, name: str):
        self.driver, self.name = driver, name

    def _store(self) -> dict:
        return self.driver.state.setdefault(self.name, {})

    def _call(self, what: str) -> None:
        self.driver.calls[f"{self.name}.{what}"] += 1


class ValueState(_Keyed):
    def value(self):
        self._call("value")
        return self._store().get(self.driver.key)

    def update(self, value) -> None:
        self._call("update")
        self._store()[self.driver.key] = value

    def clear(self) -> None:
        self._call("clear")
        self._store().pop(self.driver.key, None)


class MapState(_Keyed):
    def _map(self) -> dict:
        return self._store().setdefault(self.driver.key, {})

    def put(self, key, value) -> None:
        self._call("put")
        self._map()[key] = value

    def get(self, key):
        self._call("get")
        return self._map().get(key)

    def keys(self):
        self._call("keys")
        return list(self._map())

    def items(self):
        self._call("items")
        return list(self._map().items())

    def remove(self, key) -> None:
        self._call("remove")
        entries = self._map()
        entries.pop(key, None)
        if not entries:  # as in RocksDB: a key with no entries holds nothing
            self._store().pop(self.driver.key, None)

    def is_empty(self) -> bool:
        self._call("is_empty")
        return not self._map()

    def clear(self) -> None:
        self._call("clear")
        self._store().pop(self.driver.key, None)


@dataclass
class FakeCounter:
    count: int = 0
    calls: int = 0

    def inc(self, n: int = 1) -> None:
        self.count += n
        self.calls += 1

    def dec(self, n: int = 1) -> None:
        self.count -= n
        self.calls += 1


@dataclass
class FakeDistribution:
    values: list[int] = field(default_factory=list)

    def update(self, value: int) -> None:
        self.values.append(value)


class MetricGroup:
    def __init__(self, driver: Driver, prefix: str = ""):
        self.driver, self.prefix = driver, prefix

    def counter(self, name: str) -> FakeCounter:
        return self.driver.counters.setdefault(self.prefix + name, FakeCounter())

    def distribution(self, name: str) -> FakeDistribution:
        return self.driver.distributions.setdefault(self.prefix + name, FakeDistribution())

    def add_group(self, key: str, value: str) -> MetricGroup:
        return MetricGroup(self.driver, f"{self.prefix}{key}.{value}.")


class RuntimeContext:
    def __init__(self, driver: Driver):
        self.driver = driver

    def get_state(self, descriptor) -> ValueState:
        return ValueState(self.driver, descriptor.name)

    def get_map_state(self, descriptor) -> MapState:
        return MapState(self.driver, descriptor.name)

    def get_metrics_group(self) -> MetricGroup:
        return MetricGroup(self.driver)

    def get_index_of_this_subtask(self) -> int:
        return self.driver.subtask

    def get_number_of_parallel_subtasks(self) -> int:
        return self.driver.parallelism


class TimerService:
    def __init__(self, driver: Driver):
        self.driver = driver

    def _call(self, what: str) -> None:
        self.driver.calls[f"timers.{what}"] += 1

    def current_watermark(self) -> int:
        self._call("watermark")
        return self.driver.watermark

    def register_event_time_timer(self, at: int) -> None:
        self._call("register")
        self.driver.timers.add((TimeDomain.EVENT_TIME, self.driver.key, at))

    def register_processing_time_timer(self, at: int) -> None:
        self._call("register")
        self.driver.timers.add((TimeDomain.PROCESSING_TIME, self.driver.key, at))

    def delete_event_time_timer(self, at: int) -> None:
        self._call("delete")
        self.driver.timers.discard((TimeDomain.EVENT_TIME, self.driver.key, at))

    def delete_processing_time_timer(self, at: int) -> None:
        self._call("delete")
        self.driver.timers.discard((TimeDomain.PROCESSING_TIME, self.driver.key, at))


class Context:
    def __init__(self, driver: Driver, domain: TimeDomain | None = None):
        self.driver, self.domain = driver, domain

    def timer_service(self) -> TimerService:
        return TimerService(self.driver)

    def get_broadcast_state(self, descriptor):
        return self.driver.broadcast

    def time_domain(self) -> TimeDomain:
        return self.domain

    def get_current_key(self) -> str:
        return self.driver.key


class BroadcastState(dict):
    """One instance's copy of the broadcast state; writes are counted like state calls."""

    def __init__(self, driver: Driver):
        super().__init__()
        self.driver = driver

    def put(self, key, value) -> None:
        self.driver.calls["broadcast.put"] += 1
        self[key] = value

    def remove(self, key) -> None:
        self.pop(key, None)


class Driver:
    """One `Correlate` instance (one parallel subtask) with everything it talks to."""

    def __init__(self, config: JobConfig | None = None, now_ms: int = START_MS):
        self.config = config or JobConfig(timeout_s=60, expiry_grace_s=10, closed_retention_s=600)
        self.now = now_ms
        self.watermark = -(2**63)
        self.key = ""
        self.state: dict[str, dict] = {}
        self.timers: set[tuple[TimeDomain, str, int]] = set()
        self.calls: Counter[str] = Counter()
        self.counters: dict[str, FakeCounter] = {}
        self.distributions: dict[str, FakeDistribution] = {}
        self.broadcast = BroadcastState(self)
        self.subtask, self.parallelism = 0, 1
        self.outputs: list[tuple[str, str | None, str]] = []
        self.offsets: Counter[str] = Counter()
        self.function = Correlate(self.config, clock=lambda: self.now)
        self.function.open(RuntimeContext(self))

    def send(self, record_type: str, value: bytes | dict | None, event_ms: int | None = None):
        """One input record on the type's topic; returns what the function emitted for it."""
        raw = json.dumps(value).encode() if isinstance(value, dict) else value
        topic = self.config.topic_of(record_type)
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        self.key = routing_key(raw)
        row = (self.key, raw, topic, 0, offset, self.now if event_ms is None else event_ms)
        return self._collect(self.function.process_element(row, Context(self)))

    def reference(self, key: str, value: dict | None) -> list:
        """One record of the reference topic (a type's reference data, or `@rules`)."""
        raw = None if value is None else json.dumps(value)
        return self._collect(
            self.function.process_broadcast_element((json.dumps(key), raw), Context(self))
        )

    def restart(self, parallelism: int | None = None) -> None:
        """The job restarts from a checkpoint: a new function instance over the same state
        (keyed and broadcast), timers and clock, as Flink restores them, and new counters
        (Flink's metrics start again at zero). `parallelism`: restored at another one."""
        self.parallelism = parallelism or self.parallelism
        self.counters = {}
        self.function = Correlate(self.config, clock=lambda: self.now)
        self.function.open(RuntimeContext(self))

    def advance(self, ms: int = 0, watermark: int | None = None) -> list:
        """Moves the clock by `ms` (and the watermark, if given), firing due timers in order."""
        self.now += ms
        if watermark is not None:
            self.watermark = max(self.watermark, watermark)
        emitted = []
        while due := self._due():
            self.timers.discard(due)
            domain, self.key, at = due
            emitted += self._collect(self.function.on_timer(at, Context(self, domain)))
        return emitted

    def _due(self):
        due = [
            (at, domain.value, key)
            for domain, key, at in self.timers
            if at <= (self.now if domain is TimeDomain.PROCESSING_TIME else self.watermark)
        ]
        if not due:
            return None
        at, domain, key = heapq.nsmallest(1, due)[0]
        return TimeDomain(domain), key, at

    def _collect(self, rows) -> list:
        out = [(row[0], row[1], row[2]) for row in rows]
        self.outputs += out
        return out

    def counter(self, name: str) -> int:
        return self.counters[name].count

    def on(self, topic: str) -> list[dict]:
        return [None if v is None else json.loads(v) for t, _, v in self.outputs if t == topic]


def routing_key(raw: bytes | None) -> str:
    """The key the job's SQL gives a record (sql/keyed_records.sql), for valid records."""
    try:
        transaction = json.loads(raw)["transaction"]
    except Exception:  # noqa: BLE001 - anything unreadable shares the key ''
        return ""
    return transaction if isinstance(transaction, str) else ""
