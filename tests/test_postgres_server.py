"""The local PostgreSQL that `stack up` starts and `stack down` stops, when the server died
without stopping (`kill -9`, or the machine restarted): its pid file stays behind, and
neither command may stumble on it. Found when a CI run followed an interrupted one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from stack.postgres import PostgresServer

PORT = 15499  # a server of this test's own; the session's stays up


def _kill_the_whole_server(server: PostgresServer) -> None:
    """`kill -9` the postmaster and its processes, as a power cut would."""
    pid = int((server.data / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    for each in [pid, *map(int, children.stdout.split())]:
        os.kill(each, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{p}") for p in [pid, *map(int, children.stdout.split())]):
        assert time.monotonic() < deadline, "the killed server's processes are still there"
        time.sleep(0.1)


def test_a_server_that_died_is_stopped_and_started_again():
    server = PostgresServer(port=PORT)
    server.stop()
    shutil.rmtree(server.home, ignore_errors=True)
    server.start()
    try:
        _kill_the_whole_server(server)
        assert (server.data / "postmaster.pid").exists() and not server.running()

        server.stop()  # what `stack down` and the test fixtures run first

        assert not (server.data / "postmaster.pid").exists()
        server.start()
        assert server.running()
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)
