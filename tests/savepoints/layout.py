"""The correlator's state layout: what a savepoint holds and a later version must read.

`describe()` reads it off the code of whichever `job/` is first on the import path: the
operators' uids, every state descriptor's name and type, the broadcast state's reserved
keys, and the fields of the tuples pickled into state (`Open`, `Held`). Two versions with
the same description write savepoints the other reads the same way; any change to one of
these is a layout change, and `tests/test_savepoint_compat.py` then asks for a savepoint of
the new layout (the next change will need it as "the layout before").

Run as a script (`python tests/savepoints/layout.py`, with PYTHONPATH at a released
version's code) it prints that version's description as JSON: `make.py` stores it in the
fixture's manifest. It reads only module attributes, so it describes versions older than
itself.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def describe() -> dict:
    """The layout of the `job` package on the import path."""
    correlate = importlib.import_module("job.correlate")
    pipeline = Path(importlib.import_module("job.pipeline").__file__).read_text()
    return {
        "operators": sorted(re.findall(r'\.uid\("([^"]+)"\)', pipeline)),
        "state": _descriptors(correlate),
        "broadcast_keys": sorted(
            v for k, v in vars(correlate).items() if k.endswith("_KEY") and isinstance(v, str)
        ),
        "pickled": {
            name: list(cls._fields)
            for name in ("Open", "Held")
            if (cls := getattr(correlate, name, None)) is not None
        },
    }


def describe_code(code: Path) -> dict:
    """The layout of the job in the folder `code` (a version exported from git)."""
    described = subprocess.run(
        [sys.executable, __file__], env={**os.environ, "PYTHONPATH": str(code)},
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return json.loads(described)


def export(commit: str, into: Path) -> Path:
    """The repository at `commit`, as files under `into`."""
    archive = subprocess.run(
        ["git", "archive", commit], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def describe_commit(commit: str) -> dict:
    """The layout of the job at `commit` of this repository."""
    with tempfile.TemporaryDirectory() as tmp:
        return describe_code(export(commit, Path(tmp)))


def _descriptors(module: ModuleType) -> dict[str, dict[str, str]]:
    from pyflink.datastream.state import StateDescriptor

    return {
        value.name: {"kind": type(value).__name__, "type": str(value.type_info)}
        for value in vars(module).values()
        if isinstance(value, StateDescriptor)
    }


def layout_id(description: dict) -> str:
    """A short, stable name for a description."""
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def uncovered(current: dict, manifests: dict[str, dict]) -> str | None:
    """Why the stored fixtures (version -> manifest) do not cover the `current` layout, or
    None. Every layout main has had keeps a savepoint of its own, so the layout before any
    change is always there to restore from."""
    unrecorded = sorted(v for v, m in manifests.items() if "layout" not in m)
    if unrecorded:
        return (
            f"fixtures {unrecorded} do not record their layout: "
            "run `python -m tests.savepoints.make --layout-only VERSION` for each"
        )
    if any(m["layout"] == current for m in manifests.values()):
        return None
    newest = max(manifests, key=lambda v: manifests[v]["made"])
    before = manifests[newest]["layout"]
    changed = sorted(k for k in current.keys() | before.keys() if current.get(k) != before.get(k))
    return (
        f"the state layout changed since {newest} (in {', '.join(changed)}) and no savepoint "
        f"of layout {layout_id(current)} is stored: check that tests/savepoints/ holds one of "
        "the layout before it, commit the change, then run "
        "`python -m tests.savepoints.make HEAD` and commit the folder it writes"
    )


if __name__ == "__main__":
    print(json.dumps(describe(), sort_keys=True))
