"""What the tests share: a dict-backed transaction state, a strict JSON reader, and the
runbook's `python -m stack` command pointed at the test session's services."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path

from generator.outputs import read_topics
from generator.producer import TransactionProducer
from generator.transactions import load_plans
from generator.verify import stored_as_emitted, verify
from job.aggregate import Closed, Part
from stack.submit import submit_correlator, submit_writer


class DictState:
    """`aggregate.TransactionState` over plain dicts, as the Flink shell does over state."""

    def __init__(self) -> None:
        self._parts: dict[str, Part] = {}
        self._open = False
        self._kind: str | None = None
        self._closed: Closed | None = None

    def held_types(self) -> list[str]:
        return list(self._parts) if self._open else []

    def kind(self) -> str | None:
        return self._kind if self._open else None

    def add_part(self, record_type: str, part: Part, kind: str | None = None) -> None:
        self._parts[record_type] = part
        self._open = self._closed is None
        self._kind = kind

    def parts(self) -> dict[str, Part]:
        return dict(self._parts)

    def clear_parts(self) -> None:
        self._parts.clear()

    def closed(self) -> Closed | None:
        return self._closed

    def closed_status(self) -> str | None:
        return None if self._closed is None else self._closed.status

    def mark_closed(self, closed: Closed) -> None:
        self._closed = closed
        self._open = False

    def forget(self) -> None:
        """The retention timer: the transaction is forgotten, parts and all."""
        self._closed = None
        self._parts.clear()


def strict_json(text: str) -> object:
    """What a strict consumer does: RFC 8259 only, and every string valid Unicode."""

    def reject(name: str):
        raise ValueError(f"{name} is not JSON")

    text.encode("ascii")  # outputs are ASCII: they cross into Java and decode anywhere
    value = json.loads(text, parse_constant=reject)
    json.dumps(value, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate
    return value


def stack_command(flink, kafka, postgres, prometheus, *args: str, job: list[str] = ()) -> list[str]:
    """`python -m stack ...` as the runbook gives it, pointed at the test session's services
    (Prometheus too: `up` would otherwise start one on the default port that no test stops);
    `job` are the correlator's options (after `--`)."""
    from stack.paths import PYTHON

    return [
        str(PYTHON), "-m", "stack", *args,
        "--kafka-port", str(kafka.port), "--postgres-port", str(postgres.port),
        "--rest-port", str(flink.rest_port), "--rpc-port", str(flink.rpc_port),
        "--taskmanagers", str(flink.taskmanagers), "--prometheus-port", str(prometheus.port),
        *(["--", *job] if job else []),
    ]  # fmt: skip


def wait_for_checkpoint_after(flink, job_id: str, since: float) -> None:
    """Until a checkpoint triggered after `since` (time.time()) completed."""
    deadline = time.monotonic() + 120
    while True:
        latest = flink.api.rest(f"/jobs/{job_id}/checkpoints")["latest"]["completed"]
        if latest and latest["trigger_timestamp"] > since * 1000:
            return
        assert time.monotonic() < deadline, f"no checkpoint of {job_id} completed in 120 s"
        time.sleep(0.5)


def writer_for(config, postgres):
    """The writer job for a test's correlator topics, into the session's PostgreSQL."""
    from job.config import WriterConfig

    return WriterConfig.for_job(config, database_url=postgres.url)


@contextlib.contextmanager
def both_jobs(flink, config, writer) -> Iterator[tuple[str, str]]:
    """The correlator on `config` and the `writer` submitted and running, as
    (correlator id, writer id); both cancelled at the end, whatever happens."""
    submitted: list[str] = []
    try:
        submitted.append(submit_correlator(flink, config))
        submitted.append(submit_writer(flink, writer))
        for job_id in submitted:
            flink.api.wait_until_running(job_id)
        correlator_id, writer_id = submitted
        yield correlator_id, writer_id
    finally:
        for job_id in submitted:
            flink.api.cancel_if_running(job_id)


def wait_until_written(flink, job_id: str, records: int, timeout: float = 120) -> float:
    """Until the writer job has put `records` records where they belong (rows stored,
    diverted or skipped tombstones: each is in PostgreSQL, with its offset, when counted).
    Returns the seconds it took."""
    from job.writer import RECORDS_DIVERTED, RECORDS_SKIPPED, ROWS_STORED

    started = time.monotonic()
    deadline = started + timeout
    done = 0.0
    while done < records:
        assert time.monotonic() < deadline, f"the writer put {done} of {records} records"
        time.sleep(1)
        with contextlib.suppress(urllib.error.HTTPError, StopIteration):  # not up yet
            metrics = flink.api.operator_metrics(
                job_id, "store transactions", "store_transactions."
            )
            done = sum(metrics.get(n, 0) for n in (ROWS_STORED, RECORDS_DIVERTED, RECORDS_SKIPPED))
    return time.monotonic() - started


class Load:
    """Sends the plans in a background thread, at `rate` transactions a second, while the
    test breaks things."""

    def __init__(self, config, plans, rate: float):
        self.config, self.plans, self.rate = config, plans, rate
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            rng = random.Random(5)
            with TransactionProducer(
                self.config.bootstrap_servers, self.config.topic_prefix, rng
            ) as producer:
                producer.send_all(self.plans, rate=self.rate)
        except BaseException as error:  # reported by join()
            self.error = error

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(timeout=300)
        assert not self.thread.is_alive(), "the load was still sending after 300 s"
        assert self.error is None, self.error

    def __exit__(self, *exc) -> None:
        self.thread.join(timeout=300)


def wait_recovered(flink, job_id: str, since: float) -> float:
    """Seconds from `since` (time.time()) until the job runs and completed a checkpoint
    triggered after it: proof that every task is back, not just scheduled."""
    flink.api.wait_until_running(job_id, timeout=240)
    deadline = time.monotonic() + 240
    while True:
        latest = flink.api.rest(f"/jobs/{job_id}/checkpoints")["latest"]["completed"]
        if latest and latest["trigger_timestamp"] > since * 1000:
            return latest["latest_ack_timestamp"] / 1000 - since
        assert time.monotonic() < deadline, "no checkpoint completed after the fault"
        time.sleep(0.5)


def check_exactly_once(
    name: str, flink, job_id: str, config, plans, recovered_s: float, bound_s: float = 60
) -> list:
    """A read_committed consumer sees every transaction once, in the right topic, with
    exactly its parts; prints records in, out, lost, duplicated and the recovery time, which
    must be at most `bound_s`."""
    results = [config.aggregated_topic, config.expired_topic]
    first = read_topics(
        config.bootstrap_servers, results, until=lambda rs: len(rs) >= len(plans), timeout_s=180
    )
    assert len(first) >= len(plans), (
        f"{len(first)} of {len(plans)} transactions out after 180 s; job "
        f"{flink.api.rest(f'/jobs/{job_id}', quiet=True)}"
    )
    # A duplicate committed late would be visible once one more checkpoint has completed.
    wait_for_checkpoint_after(flink, job_id, time.time())
    outputs = read_topics(config.bootstrap_servers, results, timeout_s=60)
    report = verify(plans, outputs, *results)
    wrong = set(report.wrong_topic + report.wrong_parts)
    by_id = {p.id: p for p in plans}
    for record in [r for r in outputs if r.value["transaction"] in wrong][:3]:
        plan = by_id[record.value["transaction"]]
        v = record.value
        print(
            f"\nwrong: {plan.id} sent {plan.sent_types}, out on {record.topic} with "
            f"{v['arrival_order']}, missing {v['missing']}, expired_by {v.get('expired_by')}, "
            f"first/last event {v['first_event_time']}/{v['last_event_time']}, "
            f"emitted {v['emitted_at']}"
        )
    records = sum(len(p.sent_types) for p in plans)
    print(
        f"\n[{name}] records in {records}, transactions {len(plans)} "
        f"({sum(not p.complete for p in plans)} incomplete), out {len(outputs)}, "
        f"lost {len(report.lost)}, duplicated {len(report.duplicated)}, "
        f"recovered in {recovered_s:.1f}s"
    )
    assert report.ok, report.summary()
    assert recovered_s <= bound_s, f"recovery took {recovered_s:.1f} s"
    return outputs


def fault_under_load(
    flink, config, name: str, fault, transactions: int, rate: float, bound_s: float
) -> list:
    """Submits the correlator, sends `transactions` plans at `rate` a second and, once some
    of them are in a completed checkpoint, calls `fault(job_id)`, which returns the job id
    that runs afterwards and the seconds it took to recover; then checks exactly once
    (`check_exactly_once`) and returns the outputs. The job is cancelled whatever happens."""
    plans = load_plans(transactions, config.types, 0.1, 0.5, random.Random(name))
    job_id = submit_correlator(flink, config)
    try:
        flink.api.wait_until_running(job_id)
        with Load(config, plans, rate) as load:
            wait_for_checkpoint_after(flink, job_id, time.time() + 2)
            job_id, recovered_s = fault(job_id)
            load.join()
        return check_exactly_once(name, flink, job_id, config, plans, recovered_s, bound_s)
    finally:
        if job_id:
            flink.api.cancel_if_running(job_id)


def latest_outputs(config, transactions=None) -> dict[str, tuple[dict, str]]:
    """The latest record of each transaction on the result topics (read_committed), as
    (document, exact text): the one that amends most. Only `transactions`, if given."""
    results = [config.aggregated_topic, config.expired_topic]
    latest: dict[str, tuple[dict, str]] = {}
    for record in read_topics(config.bootstrap_servers, results, timeout_s=60, decode=False):
        text = record.value.decode("utf-8", "replace")
        try:
            document = json.loads(text)
        except ValueError:
            continue  # no output of the correlator: a test wrote it there
        if transactions is not None and document.get("transaction") not in transactions:
            continue
        known = latest.get(document["transaction"])
        if known is None or document.get("amends", 0) >= known[0].get("amends", 0):
            latest[document["transaction"]] = (document, text)
    return latest


def check_stored_as_emitted(config, database_url: str, expected, timeout: float = 180):
    """Waits until every transaction on the result topics is a row of `transactions` exactly
    as its latest record was emitted: `aggregate` equal to it, or, for a record jsonb cannot
    hold, `aggregate_text` equal to its text. `expected`: how many transactions at least
    (an int), or exactly which (a set). Returns the latest records by transaction."""
    from store import db

    only = expected if isinstance(expected, set) else None
    count = len(expected) if only else expected
    deadline = time.monotonic() + timeout
    while True:
        latest = latest_outputs(config, only)
        with db.connect(database_url) as conn:
            rows = db.rows_of(conn, list(latest))
        wrong = [
            tx for tx, (doc, text) in latest.items()
            if not stored_as_emitted(rows.get(tx), doc, text)
        ]  # fmt: skip
        if len(latest) >= count and not wrong:
            return latest
        assert time.monotonic() < deadline, (
            f"{len(latest)} of {count} transactions out, {len(wrong)} not stored as "
            f"emitted, e.g. {wrong[:3]}"
        )
        time.sleep(1)


def restarts(flink, job_id: str) -> int:
    values = flink.api.rest(f"/jobs/{job_id}/metrics?get=numRestarts")
    return int(float(values[0]["value"]))


def built_wheel(folder: Path) -> tuple[Path, Path]:
    """This checkout built as a wheel (not editable) in `folder`/dist, and installed on its
    own into `folder`/site (no dependencies, no checkout): (wheel, site)."""
    from stack.paths import PYTHON, ROOT

    dist, site = folder / "dist", folder / "site"
    pip = [str(PYTHON), "-m", "pip", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dist), str(ROOT)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = dist.glob("txn_correlator-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    return wheel, site
