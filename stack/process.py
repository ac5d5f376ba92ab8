"""Waiting for a server this package started (ZooKeeper, s3proxy, Prometheus) to answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def wait_started(
    what: str, ready: Callable[[], bool], alive: Callable[[], bool], log: Path, timeout: float
) -> None:
    """Returns once `ready()`; raises, naming the log, when the process died first
    (`alive()` false) or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not alive():
            raise RuntimeError(f"{what} exited; see {log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} was not ready in {timeout} s; see {log}")
        time.sleep(0.5)
