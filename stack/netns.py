"""Separate network hosts on this one machine: Linux network namespaces on a bridge.

Each host is a network namespace with one veth leg on a bridge and one address on a private
subnet, `lo` up and no default route, so a process inside can reach the other hosts and
nothing beyond the machine. The root namespace gets the bridge's own address, which is how
the tests and the Flink CLI reach the hosts. Processes started "on" a host run in the
machine's process table (only the network is separate) and see the same files, as hosts with
a shared disk would; `ip netns pids` is the one reliable list of a host's processes (Flink's
daemons fork twice and their pid files keep dead pids).

Needs root (CAP_NET_ADMIN) and iproute2; `available()` says whether this machine can.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@dataclass(frozen=True)
class Host:
    name: str  # the namespace
    address: str  # on the bridge's subnet
    veth: str  # its leg in the root namespace, on the bridge

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run on this host."""
        return ["ip", "netns", "exec", self.name, *argv]

    def pids(self) -> list[int]:
        result = _ip("netns", "pids", self.name, check=False)
        return [int(p) for p in result.stdout.split()] if result.returncode == 0 else []

    def kill(self) -> list[int]:
        """`kill -9` of every process on the host, as a host that dies; returns the pids."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def terminate(self, timeout: float = 30) -> None:
        """SIGTERM to every process on the host, SIGKILL to those left after `timeout`."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        self.kill()
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.2)


@dataclass(frozen=True)
class Network:
    """A bridge, its subnet (a /24) and the hosts on it."""

    bridge: str
    subnet: str  # the first three octets, e.g. "10.77.0"
    hosts: tuple[Host, ...]

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge."""
        return f"{self.subnet}.1"

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def exists(self) -> bool:
        return _ip("link", "show", self.bridge, check=False).returncode == 0

    def create(self) -> None:
        """Bridge, namespaces and veth pairs, idempotently."""
        if not self.exists():
            _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "replace", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        existing = set(_ip("netns", "list").stdout.split())
        for host in self.hosts:
            if host.name not in existing:
                _ip("netns", "add", host.name)
            if _ip("link", "show", host.veth, check=False).returncode != 0:
                _ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0",
                    "netns", host.name)  # fmt: skip
            _ip("link", "set", host.veth, "master", self.bridge, "up")
            _ip("-n", host.name, "addr", "replace", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.name, "link", "set", "eth0", "up")
            _ip("-n", host.name, "link", "set", "lo", "up")

    def destroy(self) -> None:
        """Stops every process on the hosts, then removes namespaces and bridge. A namespace
        is deleted only once empty: deleting one with live processes only drops its name."""
        existing = set(_ip("netns", "list", check=False).stdout.split())
        for host in reversed(self.hosts):
            if host.name in existing:
                host.terminate()
        for host in self.hosts:
            if host.name in existing:
                left = host.pids()
                if left:
                    raise RuntimeError(f"{host.name} still runs {left}: not deleted")
                _ip("netns", "del", host.name)  # its veth pair goes with it
        if self.exists():
            _ip("link", "del", self.bridge)


def available() -> str | None:
    """None if this machine can make network namespaces, else why not."""
    if shutil.which("ip") is None:
        return "iproute2's ip command is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    probe = f"txn-probe-{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None
