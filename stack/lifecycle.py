"""Savepoints, stop, resume and cancel: the runbook's lifecycle commands of `python -m stack`.

Each acts on the newest running job of a name (the correlator's `--job-name`, or the
writer's). A savepoint taken here gets a note beside it (`txn-correlator.json`: the code
version it came from, the job and when), so `stack savepoints` can say which version of the
job each one restores into; a savepoint from other code still restores where the state
layout allows (tests/test_savepoint_compat.py). A savepoint in an object store (the hosts'
S3) cannot have a file written beside it by this client, so its note goes to a ledger of
the client's own (`.run/savepoints.jsonl`), which the listing reads for such a location.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from stack.flink import code_fingerprint
from stack.flink_rest import ENDED
from stack.paths import ROOT, RUN

NOTE = "txn-correlator.json"
LEDGER = RUN / "savepoints.jsonl"  # notes of savepoints taken in an object store


def running_job(api, name: str) -> str:
    """The id of the newest job of that name that has not ended."""
    jobs = [j for j in api.jobs() if j["name"] == name and j["state"] not in ENDED]
    if not jobs:
        raise SystemExit(f"stack: no running job named {name!r} at {api.url}")
    return max(jobs, key=lambda j: j["start-time"])["jid"]


def code_version() -> dict:
    """What code a savepoint comes from: the git commit (if any) and the job's fingerprint."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
        check=False,
    ).stdout.strip()  # fmt: skip
    return {"commit": commit or None, "code": code_fingerprint()[:16]}


def take(api, job_id: str, name: str, directory, stop: bool) -> str:
    """A savepoint (and, with `stop`, the job stopped after it); returns its path."""
    taken = (api.stop_with_savepoint if stop else api.savepoint)(job_id, directory)
    write_note(taken, {**code_version(), "job": name, "job_id": job_id, "taken_at": _now()})
    return taken


def write_note(location: str, note: dict) -> None:
    """The note beside a savepoint in a local folder, or in the ledger for one elsewhere."""
    folder = _local(location)
    if folder is not None and folder.is_dir():
        (folder / NOTE).write_text(json.dumps(note, indent=1) + "\n")
    elif folder is None:
        LEDGER.parent.mkdir(parents=True, exist_ok=True)
        with LEDGER.open("a") as ledger:
            ledger.write(json.dumps({"path": location, **note}) + "\n")


def listing(directory: Path | str) -> list[dict]:
    """The savepoints in a folder (or under an object store's prefix, from the ledger),
    newest first, with the code each came from."""
    current = code_version()["code"]
    local = _local(str(directory))
    found = [
        {
            "path": path,
            "modified": modified,
            "job": note.get("job"),
            "commit": note.get("commit"),
            "code": note.get("code"),
            "this_code": note.get("code") == current if note else None,
        }
        for path, modified, note in (
            _ledger(str(directory)) if local is None else _folder(Path(directory))
        )
    ]
    return sorted(found, key=lambda s: s["modified"], reverse=True)


def _folder(directory: Path) -> list[tuple[str, str, dict]]:
    """(path as Flink names it, when, note) of each savepoint in a local folder."""
    found = []
    for folder in directory.glob("savepoint-*"):
        if not (folder / "_metadata").exists():
            continue
        note_file = folder / NOTE
        note = json.loads(note_file.read_text()) if note_file.exists() else {}
        modified = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(folder.stat().st_mtime))
        found.append((f"file:{folder}", modified, note))
    return found


def _ledger(prefix: str) -> list[tuple[str, str, dict]]:
    """(path, when, note) of each savepoint the ledger holds under an object store's prefix."""
    notes = (
        [json.loads(line) for line in LEDGER.read_text().splitlines()] if LEDGER.exists() else []
    )
    return [
        (n["path"], n["taken_at"][:19].replace("T", " "), n)
        for n in notes
        if n["path"].startswith(prefix.rstrip("/") + "/")
    ]


def render(savepoints: list[dict]) -> str:
    if not savepoints:
        return "no savepoints"
    rows = []
    for s in savepoints:
        if s["code"] is None:
            version = "code unknown (taken without stack)"
        else:
            same = "this code" if s["this_code"] else "other code"
            version = f"commit {s['commit'] or '-'}, code {s['code']} ({same})"
        rows.append(f"{s['modified']}  {s['job'] or '-':<24} {version}\n  {s['path']}")
    return "\n".join(rows)


def _local(location: str) -> Path | None:
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path)
    return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
