"""Watches a system's output topics as a `read_committed` consumer would.

Counts every output record as it becomes visible (aggregates and partials alike, for every
system: the same clock for all), keeps the output values of a throughput run so they can be
checked against the workload afterwards, and, for records of a tagged batch, the completion
latency: visibility time minus the last part's Kafka timestamp (`last_event_time` in an
aggregate; the record timestamp for the copy job, which writes one output per input). CPU
of the system's processes is sampled alongside, so CPU per record covers exactly the
windows the figures use: every process the system needs, and apart the ones that run its
tasks (for Flink, the TaskManagers; the client and the JobManager are the rest).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition


class SystemGone(RuntimeError):
    """The system under test stopped (exited, or its Flink job failed) before its outputs."""


@dataclass
class Sample:
    at: float  # wall-clock seconds
    outputs: int  # output records seen so far
    cpu_s: float  # the system's CPU seconds so far, every process it needs
    task_cpu_s: float | None = None  # of the processes that run the tasks (None: all do)

    @property
    def task_cpu(self) -> float:
        return self.cpu_s if self.task_cpu_s is None else self.task_cpu_s


@dataclass
class Watcher:
    bootstrap: str
    topics: list[str]
    cpu: Callable[[], float]
    task_cpu: Callable[[], float] | None = None  # None: the same processes as `cpu`
    samples: list[Sample] = field(default_factory=list)
    keep: bool = False  # keep every output value in `values` (the throughput run's check)
    values: list[bytes] = field(default_factory=list)
    _latency_tag: str | None = None
    _latencies: list[float] = field(default_factory=list)
    processing: list[float] = field(default_factory=list)  # emitted_at - last part, ms
    _count: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    def start(self, timeout: float = 60) -> Watcher:
        """Starts watching; returns once every output partition is assigned, or raises."""
        self._thread = threading.Thread(target=self._guarded_run, name="watcher", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"watcher: no partitions of {self.topics} after {timeout} s")
        self._raise_error()
        return self

    def _raise_error(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the output watcher failed: {self._error!r}") from self._error

    def _guarded_run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # re-raised by start() and wait_for()
            self._error = error
        finally:
            self._ready.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def count(self) -> int:
        return self._count

    def mark(self) -> int:
        """Takes a sample now (the system just started); returns its index."""
        self.samples.append(self._sample())
        return len(self.samples) - 1

    def _sample(self) -> Sample:
        task = self.task_cpu() if self.task_cpu else None
        return Sample(time.time(), self._count, self.cpu(), task)

    def measure_latency(self, tag: str) -> list[float]:
        """From now on, latencies (ms) of outputs whose transaction starts with `tag`."""
        self._latencies = []
        self.processing = []
        self._latency_tag = tag
        return self._latencies

    def wait_for(
        self,
        count: int,
        timeout: float,
        latencies: int | None = None,
        failure: Callable[[], str | None] = lambda: None,
    ) -> bool:
        """Until `count` outputs (and `latencies` latencies) were seen; False after `timeout`.
        Raises at once if the watcher fails, and `SystemGone` if `failure()` says the system
        can no longer produce output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._raise_error()
            if (why := failure()) is not None:
                raise SystemGone(why)
            if self._count >= count and (latencies is None or len(self._latencies) >= latencies):
                return True
            time.sleep(0.2)
        return False

    def _run(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            max_poll_records=5000,
        )
        partitions = partitions_of(consumer, self.topics, timeout=60)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        self._ready.set()
        last_sample = 0.0
        while not self._stop.is_set():
            batches = consumer.poll(timeout_ms=200)
            seen = time.time()
            for records in batches.values():
                self._count += len(records)
                if self.keep:
                    self.values.extend(r.value for r in records)
                if self._latency_tag is not None:
                    self._record_latencies(records, seen)
            if seen - last_sample >= 0.5:
                self.samples.append(self._sample())
                last_sample = seen
        consumer.close()

    def _record_latencies(self, records, seen: float) -> None:
        for record in records:
            value = json.loads(record.value)
            if not value.get("transaction", "").startswith(self._latency_tag):
                continue
            if value.get("status", "complete") != "complete":
                continue  # a latency transaction that expired has no completion latency
            sent = value.get("last_event_time", record.timestamp)
            self._latencies.append(seen * 1000 - sent)
            if "emitted_at" in value:  # the system's own share, before output is committed
                self.processing.append(value["emitted_at"] - sent)


def partitions_of(
    consumer: KafkaConsumer, topics: list[str], timeout: float
) -> list[TopicPartition]:
    """Every partition of the topics, once the consumer's metadata knows them all.

    Right after the topics are created the client may not know them yet and answers None or
    an empty set: watching nothing then would count 0 outputs for the whole run.
    """
    deadline = time.monotonic() + timeout
    while True:
        known = {t: consumer.partitions_for_topic(t) for t in topics}
        if all(known.values()):
            return [TopicPartition(t, p) for t, ps in known.items() for p in sorted(ps)]
        if time.monotonic() > deadline:
            missing = [t for t, ps in known.items() if not ps]
            raise TimeoutError(f"no partitions known for {missing} after {timeout} s")
        time.sleep(0.5)


def read_topic(bootstrap: str, topic: str, count: int, timeout: float) -> list[bytes]:
    """The values of a topic from its beginning as `read_committed` sees them: until `count`
    were read, or until `timeout` seconds passed."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    try:
        partitions = partitions_of(consumer, [topic], timeout=timeout)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(values) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                values.extend(r.value for r in records)
        return values
    finally:
        consumer.close()
