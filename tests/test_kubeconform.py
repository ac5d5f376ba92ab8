"""The Kubernetes manifests pass kubeconform -strict against the real schemas of their kinds:
Kubernetes' own (Job, ConfigMap), the Flink operator's FlinkDeployment, Strimzi's KafkaTopic
and the Prometheus Operator's PodMonitor, made by deploy/schemas.py from pinned upstream
artifacts (bin/setup fetches them; the first call here does too if they are missing).

Every resource must be validated, none skipped; and a manifest broken in one place must be
reported invalid at that place, so these tests fail when a schema stops checking anything.
No services and no network once the cache is there.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import schemas

requires_go = pytest.mark.skipif(
    shutil.which("go") is None,
    reason="Go is not installed: kubeconform and the Kubernetes schema come as Go modules",
)


@pytest.fixture(scope="module")
def cache() -> Path:
    schemas.ensure()
    return schemas.CACHE


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@requires_go
def test_every_manifest_is_valid_and_none_is_skipped(cache: Path) -> None:
    files = schemas.manifests()
    expected = sum(len(documents(path)) for path in files)
    result = schemas.validate(files)
    report = "\n".join(result.lines())
    assert (result.invalid, result.errors, result.skipped) == (0, 0, 0), report
    assert result.valid == expected == len(result.resources), report
    kinds = {r["kind"] for r in result.resources}
    assert kinds == {
        "ConfigMap", "Job", "FlinkDeployment", "KafkaTopic", "PodMonitor", "PrometheusRule"
    }, kinds  # fmt: skip


def first(kind: str) -> dict[str, Any]:
    """The first resource of that kind in deploy/kubernetes/, a copy to break."""
    for path in schemas.manifests():
        for doc in documents(path):
            if doc["kind"] == kind:
                return copy.deepcopy(doc)
    raise AssertionError(f"no {kind} in {schemas.MANIFESTS}")


def rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def container(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["spec"]["containers"][0]


# (kind, how it is broken, where kubeconform must point, what its message must say)
BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("FlinkDeployment", lambda d: rename(d["spec"]["job"], "parallelism", "paralelism"),
     "/spec/job", "'paralelism' not allowed"),
    ("FlinkDeployment", lambda d: d["spec"].update(flinkVersion="v1_12"),
     "/spec/flinkVersion", "must be one of"),
    ("FlinkDeployment",
     lambda d: rename(container(d["spec"]["podTemplate"]), "volumeMounts", "volumeMount"),
     "/spec/podTemplate/spec/containers/0", "'volumeMount' not allowed"),
    ("FlinkDeployment", lambda d: rename(d, "spec", "sepc"), "", "'sepc' not allowed"),
    ("KafkaTopic", lambda d: d["spec"].update(partitions="three"),
     "/spec/partitions", "want integer"),
    ("KafkaTopic", lambda d: rename(d["spec"], "replicas", "replica"),
     "/spec", "'replica' not allowed"),
    ("Job", lambda d: rename(d["spec"], "backoffLimit", "backofLimit"),
     "/spec", "'backofLimit' not allowed"),
    ("Job", lambda d: container(d["spec"]["template"]).update(command="python -m store"),
     "/spec/template/spec/containers/0/command", "want array"),
    ("ConfigMap", lambda d: d["data"].update({"count.txt": 3}),
     "/data/count.txt", "want string"),
    ("PodMonitor", lambda d: rename(d["spec"]["podMetricsEndpoints"][0], "port", "prot"),
     "/spec/podMetricsEndpoints/0", "'prot' not allowed"),
]  # fmt: skip


@requires_go
@pytest.mark.parametrize(
    ("kind", "breaking", "where", "message"),
    BROKEN,
    ids=[f"{kind}{where or '/'}" for kind, _, where, _ in BROKEN],
)
def test_a_broken_manifest_is_reported_invalid_where_it_is_broken(
    cache: Path,
    tmp_path: Path,
    kind: str,
    breaking: Callable[[dict[str, Any]], None],
    where: str,
    message: str,
) -> None:
    doc = first(kind)
    breaking(doc)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = schemas.validate([path])
    report = "\n".join(result.lines())
    assert (result.valid, result.invalid, result.errors, result.skipped) == (0, 1, 0, 0), report
    (resource,) = result.resources
    errors = {e["path"]: e["msg"] for e in resource["validationErrors"]}
    assert message in errors.get(where, ""), report


def test_the_guides_name_the_pinned_versions() -> None:
    """docs/deployment.md tells which operator and Strimzi releases to install, and
    deploy/crds/README.md where the kept CRD comes from: both follow deploy/schemas.py."""
    guide = (schemas.ROOT / "docs" / "deployment.md").read_text()
    for pin in (
        f"Flink Kubernetes Operator **{schemas.FLINK_OPERATOR_VERSION}**",
        f"flink-kubernetes-operator-{schemas.FLINK_OPERATOR_VERSION}/",
        f"Strimzi {schemas.STRIMZI_VERSION}",
        f"Kubernetes {schemas.KUBERNETES_VERSION}",
        f"Prometheus Operator {schemas.PROMETHEUS_OPERATOR_VERSION}",
        f"({schemas.KUBECONFORM_VERSION})",
    ):
        assert pin in guide, pin
    provenance = (schemas.FLINK_CRD.parent / "README.md").read_text()
    assert f"release-{schemas.FLINK_OPERATOR_VERSION}" in provenance
    assert schemas.FLINK_CRD_SHA256 in provenance
    assert schemas.sha256(schemas.FLINK_CRD) == schemas.FLINK_CRD_SHA256
