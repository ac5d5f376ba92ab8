"""The `flink` client starts quickly: the cluster's lib/ holds the table planner instead of
its loader (`stack.flink.link_lib`), and the client JVM maps the classes of earlier clients
from the cluster's class-data archive (`stack.client`)."""

from __future__ import annotations

from pathlib import Path

from stack.client import archive_path, plan_correlator
from stack.flink import PLANNER_LOADER, link_lib
from stack.jars import FLINK_VERSION
from stack.paths import FLINK_HOME

PLANNER = f"flink-table-planner_2.12-{FLINK_VERSION}.jar"
# Packages only the table planner loads: Calcite and the planner's own.
PLANNER_PACKAGES = (" org.apache.calcite.", " org.apache.flink.table.planner.")


def test_lib_holds_the_planner_not_its_loader(tmp_path):
    """Also in a lib/ that an earlier version linked with the loader: both on one class path
    would be two planners."""
    lib = tmp_path / "lib"
    lib.mkdir()
    loader = next((FLINK_HOME / "lib").glob(PLANNER_LOADER))
    (lib / loader.name).symlink_to(loader)
    link_lib(lib)
    names = {p.name for p in lib.iterdir()}
    assert PLANNER in names
    assert not any(Path(name).match(PLANNER_LOADER) for name in names)
    assert f"flink-dist-{FLINK_VERSION}.jar" in names


def test_the_archive_is_named_after_the_jars(tmp_path):
    """A changed lib/ gets a new archive rather than one the JVM would refuse to map."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "a.jar").write_bytes(b"a")
    before = archive_path(lib)
    assert archive_path(lib) == before
    (lib / "b.jar").write_bytes(b"b")
    assert archive_path(lib) != before
    assert before.parent == tmp_path


def test_a_client_reads_the_planner_from_the_clusters_archive(flink, tmp_path):
    """The test cluster's start wrote the archive; a client that plans the correlator
    (`flink info`: nothing is submitted) maps the planner's classes from it instead of
    loading them from the jars. With the planner loader, which unpacks the planner to a new
    folder in every JVM, none of them would come from the archive."""
    assert archive_path(flink.lib).exists()
    log = tmp_path / "classes.log"
    env = {**flink.env(), "JVM_ARGS": f"-Xlog:class+load=info:file={log}"}
    result = plan_correlator(env)
    assert result.returncode == 0, result.stdout + result.stderr
    planner = [
        line
        for line in log.read_text().splitlines()
        if any(package in line for package in PLANNER_PACKAGES)
    ]
    archived = [line for line in planner if "source: shared objects file (top)" in line]
    assert len(planner) > 1_000, f"the client loaded only {len(planner)} planner classes"
    assert len(archived) / len(planner) > 0.9, (
        f"{len(archived)} of {len(planner)} planner classes came from the archive"
    )
