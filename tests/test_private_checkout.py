"""Any checkout folder works: from a copy of the checkout in a private folder (mode 700, as
home folders often are), `stack up` starts the whole platform and `stack down --purge`
removes it. Run as root, PostgreSQL runs as the `postgres` user, which cannot reach into
such a folder: its cluster lives in postgres's own folder (stack/postgres.py)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from stack.paths import PYTHON, ROOT

pytestmark = [pytest.mark.kafka, pytest.mark.flink]

PORTS = [
    "--kafka-port", "39092", "--rest-port", "38081", "--rpc-port", "36123",
    "--postgres-port", "35432", "--prometheus-port", "39090", "--taskmanagers", "1",
]  # fmt: skip


def _stack(checkout, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PYTHON), "-m", "stack", *args, *PORTS],
        cwd=checkout, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def _copy_checkout(target) -> None:
    """The working tree's files (what `git ls-files` lists), and the jars already fetched."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".cache").symlink_to(ROOT / ".cache")


def test_the_platform_starts_from_a_checkout_in_a_private_folder(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    checkout = home / "txn-correlator"
    _copy_checkout(checkout)
    try:
        up = _stack(checkout, "up", "--no-supervise")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "PostgreSQL on postgresql://" in up.stdout
        counts = subprocess.run(
            [str(PYTHON), "-m", "store", "--database-url",
             "postgresql://postgres@127.0.0.1:35432/txn_correlator", "counts"],
            cwd=checkout, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert (counts.returncode, counts.stdout.strip()) == (0, "{}"), counts.stderr
        if os.geteuid() == 0:
            link = checkout / ".run" / "postgres-35432"
            assert link.is_symlink() and not str(link.resolve()).startswith(str(home))
    finally:
        down = _stack(checkout, "down", "--purge")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not (checkout / ".run" / "postgres-35432").exists()
