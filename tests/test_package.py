"""A package that installs: the built wheel (not the editable checkout) carries the SQL and
the migrations as package data and the console scripts, and the installed code runs on its
own: the tools' help, and the migrations read from the wheel against the real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import zipfile

from stack.paths import PYTHON
from tests.kit import built_wheel


def test_the_built_wheel_carries_the_sql_the_migrations_and_the_console_scripts(tmp_path, postgres):
    wheel, site = built_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for sql in ("keyed_records.sql", "writer.sql", "migrations/004_total_storage.sql"):
        assert f"sql/{sql}" in names, sql
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("txn-correlator", "txn-writer", "txn-stack", "txn-store", "txn-generator"):
        assert f"{script} = " in scripts, script

    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}

    def installed(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(PYTHON), *args], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip

    where = installed("-c", "import job, sql, store; print(job.__file__, sql.__file__)")
    assert where.stdout.split() and all(p.startswith(str(site)) for p in where.stdout.split())
    for module in ("job.main", "job.writer", "generator", "stack"):
        result = installed("-m", module, "--help")
        assert result.returncode == 0 and "usage" in result.stdout, (module, result.stderr)
    migrate = installed("-m", "store", "--database-url", postgres.url, "migrate")
    assert migrate.returncode == 0, migrate.stderr
    assert json.loads(migrate.stdout) == {"applied": []}  # the session applied them all
