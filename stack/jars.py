"""Fetches the Java artifacts the platform needs from Maven Central, once.

Maven resolves the transitive dependencies of the Kafka broker for us; the Flink connector
is a shaded jar and is copied alone. A marker file per bundle records what was fetched, so a
second call costs nothing and a changed pin fetches again.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from pyflink.version import __version__ as FLINK_VERSION

from stack.paths import JARS

KAFKA_VERSION = "4.1.1"
FLINK_KAFKA_CONNECTOR = "org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"
ZOOKEEPER_VERSION = "3.9.5"
# Flink's S3 file system (a plugin): 2.2.1 is not on Maven Central, 2.2.0 works with 2.2.1.
FLINK_S3_PLUGIN = "org.apache.flink:flink-s3-fs-presto:2.2.0"
S3PROXY = "org.gaul:s3proxy:2.6.0"

# bundle name -> (artifacts, include transitive dependencies)
BUNDLES: dict[str, tuple[list[str], bool]] = {
    "kafka": (
        [
            f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
            "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3",
        ],
        True,
    ),
    "flink": ([FLINK_KAFKA_CONNECTOR], False),
    # The table planner itself, linked into lib/ instead of the distribution's planner loader
    # (why: stack.flink.link_lib).
    "planner": ([f"org.apache.flink:flink-table-planner_2.12:{FLINK_VERSION}"], False),
    # Several hosts (stack/hosts.py): ZooKeeper for the JobManagers' leader election, with
    # what its pom leaves to the release tarball (metrics, snappy, a log binding, the CLI's
    # commons-cli; the versions ZooKeeper's parent pom pins) ...
    "zookeeper": (
        [
            f"org.apache.zookeeper:zookeeper:{ZOOKEEPER_VERSION}",
            "io.dropwizard.metrics:metrics-core:4.1.12.1",
            "org.xerial.snappy:snappy-java:1.1.10.5",
            "org.apache.logging.log4j:log4j-slf4j2-impl:2.24.3",
            "commons-cli:commons-cli:1.5.0",
        ],
        True,
    ),
    # ... checkpoints, savepoints and HA metadata in S3 through Flink's plugin, and an S3
    # server that stores them (stack/s3.py).
    "s3": ([FLINK_S3_PLUGIN], False),
    "s3proxy": ([S3PROXY], True),
}

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local</groupId><artifactId>{name}-bundle</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>{deps}</dependencies>
</project>
"""
_DEP = (
    "<dependency><groupId>{}</groupId><artifactId>{}</artifactId>"
    "<version>{}</version>{}</dependency>"
)
_NO_TRANSITIVE = (
    "<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>"
)


def bundle_dir(name: str) -> Path:
    return JARS / name


def fetch(name: str) -> Path:
    """Copies one bundle's jars into `.cache/jars/<name>/` unless already there."""
    artifacts, transitive = BUNDLES[name]
    target = bundle_dir(name)
    marker = target / ".fetched"
    spec = "\n".join(artifacts)
    if marker.exists() and marker.read_text() == spec:
        return target
    target.mkdir(parents=True, exist_ok=True)
    deps = "".join(
        _DEP.format(*coords.split(":"), "" if transitive else _NO_TRANSITIVE)
        for coords in artifacts
    )
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(_POM.format(name=name, deps=deps))
        subprocess.run(
            [
                "mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={target}",
                "-DincludeScope=runtime",
            ],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    marker.write_text(spec)
    return target


def fetch_all() -> None:
    for name in BUNDLES:
        fetch(name)


def classpath(name: str) -> str:
    """One bundle's jars as a Java class path (fetched first if needed)."""
    return os.pathsep.join(str(p) for p in sorted(fetch(name).glob("*.jar")))


def connector_jars(*bundles: str) -> list[Path]:
    """The jars a job needs on its pipeline class path: Kafka, plus the bundles named."""
    return [p for name in ("flink", *bundles) for p in sorted(fetch(name).glob("*.jar"))]
