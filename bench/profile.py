"""Where our job's Python time goes, reproducibly: `python -m bench profile`.

Starts the benchmark's own broker and a Flink cluster of one TaskManager (so the process to
sample is unambiguous), pre-loads the benchmark's workload (incomplete transactions and
malformed records included), submits our job at parallelism 1 and samples the TaskManager's
embedded Python interpreter (PEMJA, thread mode) with py-spy from the moment the job runs
until every expected output is visible. Writes, under `--out`:

- `profile.raw`: py-spy's collapsed stacks (one line per distinct stack and its sample
  count; any flame-graph tool reads it);
- `profile.md`: samples per thread, own time by file (with the samples of a running thread
  that has no Python frame: Java work on the task thread), and the top functions by own
  time (the function was running) and by total time (it was on the stack), as shares of
  the samples outside imports.

py-spy reads the interpreter's memory from outside (ptrace; we run as root), so the job
needs no hook. By default it samples without pausing the JVM (`--nonblocking`) and only
threads that are not idle; `--gil` keeps only the thread holding the GIL, which shows where
Python itself runs rather than where threads wait for it.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench import workload
from bench.run import (
    Settings,
    bench_services,
    fresh_config,
    head_pause_s,
    plan_backlog,
)
from bench.systems import FlinkCorrelator
from bench.watch import Watcher
from stack.flink import FlinkCluster
from stack.paths import ROOT

PY_SPY = Path(sys.executable).with_name("py-spy")


@dataclass
class ProfileSettings:
    transactions: int = 20_000
    rate: int = 100  # samples per second
    gil: bool = False
    idle: bool = False
    native: bool = False
    top: int = 30
    timeout_s: float = Settings.timeout_s
    out: Path = ROOT / ".bench" / "profile"


def build_parser() -> argparse.ArgumentParser:
    defaults = ProfileSettings()
    parser = argparse.ArgumentParser(
        prog="python -m bench profile", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--transactions", type=int, default=defaults.transactions)
    parser.add_argument("--rate", type=int, default=defaults.rate, help="py-spy samples per s")
    parser.add_argument(
        "--gil", action="store_true", help="only samples of the thread holding the GIL"
    )
    parser.add_argument("--idle", action="store_true", help="include idle threads")
    parser.add_argument("--native", action="store_true", help="include native (C, JNI) frames")
    parser.add_argument("--top", type=int, default=defaults.top, help="functions listed")
    parser.add_argument("--timeout-s", type=float, default=defaults.timeout_s)
    parser.add_argument("--out", type=Path, default=defaults.out)
    return parser


def parse_args(argv: list[str] | None) -> ProfileSettings:
    args = build_parser().parse_args(argv)
    return ProfileSettings(**vars(args))


# --- the arithmetic, on py-spy's collapsed stacks ------------------------------------------

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_LINENO = re.compile(r":\d+\)$")


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    """py-spy's raw format: `frame;frame;...;leaf count`, outermost frame first."""
    stacks = []
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match:
            stacks.append((match["stack"].split(";"), int(match["count"])))
    return stacks


def function_of(frame: str) -> str:
    """A frame without its line number: `name (file)`, so a function's lines add up."""
    return _LINENO.sub(")", frame)


NO_PYTHON = "(no Python frame: the thread runs Java)"


def file_of(function: str) -> str:
    """The file of `name (file)`: own time by file shows state, timer and JSON calls apart."""
    return function.rsplit(" (", 1)[-1].rstrip(")") if function.endswith(")") else function


def is_thread(frame: str) -> bool:
    """With `--threads` py-spy starts each stack with a frame naming the thread."""
    return frame.startswith(("thread (", "process ")) or frame.startswith("thread ")


def summarize(stacks: list[tuple[list[str], int]]) -> dict:
    """Samples in all, per thread, and per function own (leaf) and total (on the stack).

    Samples inside an import (the operator loading the job's modules at start-up) are
    counted as `imports` and left out of the per-function tables: they are paid once, not
    per call."""
    total = sum(count for _, count in stacks)
    imports = no_python = 0
    threads: collections.Counter[str] = collections.Counter()
    files: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    on_stack: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        thread = next((f for f in frames if is_thread(f)), "")
        threads[thread] += count
        if any(f.startswith("_find_and_load ") or "<frozen importlib" in f for f in frames):
            imports += count
            continue
        functions = [function_of(f) for f in frames if not is_thread(f) and f != "process"]
        if not functions:  # running, but in Java: PEMJA runs Python on the task thread
            no_python += count
            files[NO_PYTHON] += count
            continue
        own[functions[-1]] += count
        files[file_of(functions[-1])] += count
        for function in set(functions):
            on_stack[function] += count
    return {
        "samples": total,
        "imports": imports,
        "no_python": no_python,
        "threads": threads,
        "files": files,
        "own": own,
        "total": on_stack,
    }


def markdown(summary: dict, top: int, header: str) -> str:
    """The tables; shares are of the samples outside imports (threads: of all samples)."""
    samples = (summary["samples"] - summary.get("imports", 0)) or 1

    def share(count: int) -> str:
        return f"{100 * count / samples:.1f}%"

    lines = [header, "", "| thread | samples | share |", "|---|---:|---:|"]
    for thread, count in summary["threads"].most_common():
        lines.append(
            f"| {thread or '(one)'} | {count:,} | {100 * count / (summary['samples'] or 1):.1f}% |"
        )
    lines += ["", "Own time by file:", "", "| file | own | own share |", "|---|---:|---:|"]
    for file, count in summary["files"].most_common(top):
        lines.append(f"| `{file}` | {count:,} | {share(count)} |")
    for title, key, other in (
        ("own time (running in it)", "own", "total"),
        ("total time (on the stack)", "total", "own"),
    ):
        lines += [
            "",
            f"Top {top} functions by {title}:",
            "",
            f"| function | {key} | {key} share | {other} share |",
            "|---|---:|---:|---:|",
        ]
        for function, count in summary[key].most_common(top):
            lines.append(
                f"| `{function}` | {count:,} | {share(count)} | {share(summary[other][function])} |"
            )
    return "\n".join(lines) + "\n"


# --- the run --------------------------------------------------------------------------------


def _embeds_python(pid: int) -> bool:
    """Whether the process has loaded libpython (the job's Python operator is opening)."""
    try:
        return "libpython" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout} s")
        time.sleep(0.05)


def _start_py_spy(settings: ProfileSettings, pid: int, raw: Path, log: Path) -> subprocess.Popen:
    """py-spy attached to `pid`; retried while the embedded interpreter is still starting
    (py-spy exits at once when it finds no initialised interpreter yet)."""
    command = [
        str(PY_SPY), "record", "--pid", str(pid), "--format", "raw", "--output", str(raw),
        "--rate", str(settings.rate), "--threads", "--nonblocking",
        *(["--gil"] if settings.gil else []),
        *(["--idle"] if settings.idle else []),
        *(["--native"] if settings.native else []),
    ]  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        with log.open("a") as out:
            spy = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            spy.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return spy  # attached and sampling
        if time.monotonic() > deadline:
            raise RuntimeError(f"py-spy could not attach to {pid}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def profile(settings: ProfileSettings, broker, cluster: FlinkCluster) -> Path:
    if not PY_SPY.exists():
        raise SystemExit(f"{PY_SPY} missing: pip install py-spy (the bench extra has it)")
    bench = Settings(transactions=settings.transactions, timeout_s=settings.timeout_s)
    config = fresh_config(broker, bench)
    backlog = plan_backlog(bench, config)
    print(f"-- profile: pre-loading {backlog.count:,} transactions", flush=True)
    workload.send(broker.bootstrap, config.topic_prefix, backlog, pause_s=head_pause_s(config))
    job = FlinkCorrelator(cluster)
    (pid,) = cluster.running_taskmanagers()
    watcher = Watcher(
        broker.bootstrap, [config.aggregated_topic, config.expired_topic], cpu=lambda: 0.0
    ).start()
    settings.out.mkdir(parents=True, exist_ok=True)
    raw, log = settings.out / "profile.raw", settings.out / "py-spy.log"
    raw.unlink(missing_ok=True)
    log.write_text("")
    spy = None
    # Submitted from a thread: sampling starts as soon as the operator loads Python, while
    # `flink run` and the wait for every task to run are still returning.
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            job.start(config)
        except BaseException as error:  # re-raised below
            errors.append(error)

    submitting = threading.Thread(target=submit, daemon=True)
    try:
        submitting.start()
        _wait(
            lambda: _embeds_python(pid) or errors or not submitting.is_alive(),
            180,
            "no Python in the TaskManager",
        )
        if errors:
            raise errors[0]
        spy = _start_py_spy(settings, pid, raw, log)
        started = time.monotonic()
        submitting.join()
        if errors:
            raise errors[0]
        done = watcher.wait_for(backlog.count, 120 + backlog.records / 200, failure=job.failure)
        seconds = time.monotonic() - started
        spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
        spy.wait(timeout=60)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        submitting.join(timeout=180)
        job.stop()
        watcher.stop()
    if not raw.exists() or not raw.read_text().strip():
        raise RuntimeError(f"py-spy wrote no samples; its output ends:\n{log.read_text()[-3000:]}")
    summary = summarize(parse_collapsed(raw.read_text()))
    sampled = "--gil" if settings.gil else "non-idle threads"
    busy_s = (summary["samples"] - summary["imports"]) / settings.rate
    header = (
        f"Profile of {datetime.date.today().isoformat()}: our job at parallelism 1, "
        f"{backlog.count:,} transactions ({backlog.records:,} records, "
        f"{backlog.incomplete:,} incomplete, {len(backlog.malformed):,} malformed), "
        f"{'every output seen' if done else 'NOT every output seen'} after {seconds:.1f} s "
        f"of sampling at {settings.rate}/s; py-spy {sampled}"
        f"{', --native' if settings.native else ''}: {summary['samples']:,} samples, "
        f"{summary['imports']:,} of them importing modules at start-up (left out below). "
        f"Busy outside imports: {busy_s:.1f} s, {busy_s / backlog.records * 1e6:,.0f} us per "
        f"input record; {summary['no_python']:,} samples of those show a running thread with no "
        "Python frame: Java work (Flink's operators, state backend, Kafka client) on the task "
        "thread that PEMJA runs Python on."
    )
    path = settings.out / "profile.md"
    path.write_text(markdown(summary, settings.top, header))
    return path


def main(argv: list[str] | None = None) -> None:
    settings = parse_args(argv)
    with bench_services(taskmanagers=1) as (broker, cluster):  # the one process to sample
        path = profile(settings, broker, cluster)
    print(path.read_text())
    print(f"written: {path}, {path.with_name('profile.raw')}", file=sys.stderr)
