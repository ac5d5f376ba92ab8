"""The schemas the Kubernetes manifests (deploy/kubernetes/*.yaml) are validated against, and
kubeconform, which validates them: `python -m deploy.schemas [--cache DIR] [--validate]`.

kubeconform's default schemas are on GitHub, which CI cannot reach, so each schema is made
here from a pinned upstream artifact and converted into kubeconform's strict form, as
yannh/kubernetes-json-schema's standalone-strict files (core kinds) and kubeconform's
openapi2jsonschema.py (CRDs) are: every object refuses a property its schema does not name,
int-or-string is a oneOf of string and integer. The pins and where each comes from:

- Kubernetes (ConfigMap, Job and every other core kind): api/openapi-spec/swagger.json of
  the Go module k8s.io/kubernetes at KUBERNETES_VERSION, from the Go module proxy (a 22 MB
  zip, verified by Go's checksum database). One file per kind, its definitions bundled in.
- FlinkDeployment: the CRD of the Flink Kubernetes Operator FLINK_OPERATOR_VERSION, the
  first release whose own tests run Flink 2.2 (its CRD accepts `flinkVersion: v2_2` from
  1.13.0 on). Maven Central as this project's machines reach it serves
  org.apache.flink:flink-kubernetes-operator-api only up to 1.10.0, whose CRD knows no
  Flink 2, and no other registry carries the CRD; so the release's file is kept verbatim in
  deploy/crds/ (deploy/crds/README.md says where from) and checked by its SHA-256.
- KafkaTopic: Strimzi STRIMZI_VERSION's CRD, made as Strimzi's build makes it: Strimzi's
  crd-generator over Strimzi's model classes (io.strimzi:crd-generator and io.strimzi:api
  from Maven Central; neither jar carries the YAML) with the arguments of Strimzi's
  api/pom.xml. The result must equal the release's
  packaging/install/cluster-operator/043-Crd-kafkatopic.yaml byte for byte
  (STRIMZI_CRD_SHA256). Both jars are built for Java 21, so a JDK of 21 or newer runs the
  generator (the machine's Temurin; the project's own Java stays 17).
- PodMonitor, PrometheusRule: example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml
  and monitoring.coreos.com_prometheusrules.yaml of the
  Go module github.com/prometheus-operator/prometheus-operator at
  PROMETHEUS_OPERATOR_VERSION, the newest version of it the Go module proxy serves.
- kubeconform KUBECONFORM_VERSION, built by `go install` into the cache.

Everything goes to .cache/k8s-schemas/ (git-ignored; GOFLAGS=-modcacherw, so `rm -rf` works),
once: a second run finds its files and costs a few milliseconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

KUBERNETES_VERSION = "v1.37.2"
FLINK_OPERATOR_VERSION = "1.15.0"
FLINK_CRD_SHA256 = "7977265fc26d5e13e46ea5a18b18ce71dc1b93a7c750d781843a7af0d1d13e47"
STRIMZI_VERSION = "1.2.0"
STRIMZI_CRD_SHA256 = "36390f0731c699448076d4ee739e8b7f331d083e91a7fb71500aaa830ab1127e"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"
KUBECONFORM_VERSION = "v0.8.0"

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "deploy" / "kubernetes"
FLINK_CRD = ROOT / "deploy" / "crds" / "flinkdeployments.flink.apache.org-v1.yml"
CACHE = ROOT / ".cache" / "k8s-schemas"

# Strimzi's api/pom.xml runs its generator with these (the other kinds left out).
STRIMZI_CRD_ARGS = [
    "--label", "app:strimzi", "--label", "strimzi.io/crd-install:true",
    "--target-kube", "1.16+", "--crd-api-version", "v1",
    "--api-versions", "v1", "--storage-version", "v1", "--yaml",
]  # fmt: skip
STRIMZI_JAVA = 21

# kubeconform looks a resource up in the first location that has its file: core kinds as
# kubernetes-json-schema names them (job-batch-v1.json, configmap-v1.json), CRDs by group,
# kind and version (flink.apache.org/flinkdeployment_v1beta1.json).
CORE_LOCATION = "kubernetes/{{ .ResourceKind }}{{ .KindSuffix }}.json"
CRD_LOCATION = "crds/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json"

# The core definitions that are not what swagger.json says of them: a Quantity is written as
# a string or a number (`cpu: 1`), as the API server reads it.
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def log(message: str) -> None:
    print(f"deploy.schemas: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Runs a tool; a failure raises with the tool's own output, which says why."""
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({result.returncode}):\n{output}")
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_once(path: Path, make: Callable[[Path], None]) -> Path:
    """Makes `path` unless it is there; `make` writes a temporary file that is renamed into
    place only when complete, so an interrupted run leaves nothing half-made behind."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    started = time.monotonic()
    make(partial)
    partial.replace(path)
    log(f"{path.name}: {path.stat().st_size:,} bytes in {time.monotonic() - started:.1f} s")
    return path


# --- fetching ---------------------------------------------------------------------------


def go_env(cache: Path, **extra: str) -> dict[str, str]:
    """Go's environment for the cache: its own GOPATH, writable module files (so the cache
    can be deleted), and the machine's Go, never a toolchain download."""
    flags = f"{os.environ.get('GOFLAGS', '')} -modcacherw".strip()
    return {
        **os.environ,
        "GOPATH": str(cache / "gopath"),
        "GOFLAGS": flags,
        "GOTOOLCHAIN": "local",
        **extra,
    }


def go_module_file(cache: Path, module: str, version: str, name: str, target: Path) -> None:
    """Copies one file out of a Go module's zip, downloaded by `go mod download` into a
    throw-away module cache (k8s.io/kubernetes unpacks to 145 MB; only the zip is read)."""
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        env = go_env(cache, GOMODCACHE=str(Path(tmp) / "mod"))
        done = run(["go", "mod", "download", "-json", f"{module}@{version}"], env=env, cwd=tmp)
        zip_path = json.loads(done.stdout)["Zip"]
        log(f"{module}@{version}: {Path(zip_path).stat().st_size:,} bytes downloaded")
        with zipfile.ZipFile(zip_path) as archive:
            target.write_bytes(archive.read(f"{module}@{version}/{name}"))


def maven_jars(artifacts: list[str], target: Path) -> None:
    """Resolves artifacts and their runtime dependencies from Maven Central into `target`,
    with Maven, as stack/jars.py does."""
    deps = "".join(
        "<dependency><groupId>{}</groupId><artifactId>{}</artifactId>"
        "<version>{}</version></dependency>".format(*coords.split(":"))
        for coords in artifacts
    )
    pom = target / "pom.xml"
    target.mkdir(parents=True, exist_ok=True)
    pom.write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>local</groupId><artifactId>schemas</artifactId><version>1</version>"
        f"<packaging>pom</packaging><dependencies>{deps}</dependencies></project>"
    )
    run(
        ["mvn", "-q", "-B", "-Dstyle.color=never", "-f", str(pom),
         "dependency:copy-dependencies", f"-DoutputDirectory={target}",
         "-DincludeScope=runtime"],
    )  # fmt: skip


def java_homes() -> Iterator[Path]:
    """The JDKs this machine has: JAVA_HOME, the one on PATH, and Debian's /usr/lib/jvm."""
    if os.environ.get("JAVA_HOME"):
        yield Path(os.environ["JAVA_HOME"])
    if on_path := shutil.which("java"):
        yield Path(on_path).resolve().parent.parent
    yield from sorted(Path("/usr/lib/jvm").glob("*"))


def java(minimum: int) -> str:
    """The newest `java` of at least `minimum`, found by the JDKs' `release` files."""
    found: dict[int, str] = {}
    for home in java_homes():
        release = home / "release"
        match = release.is_file() and re.search(r'JAVA_VERSION="(\d+)', release.read_text())
        if match and (home / "bin" / "java").exists():
            found.setdefault(int(match.group(1)), str(home / "bin" / "java"))
    if not found or max(found) < minimum:
        raise RuntimeError(
            f"Strimzi's CRD generator needs Java {minimum} or newer; found {sorted(found)} "
            "(set JAVA_HOME to a newer JDK)"
        )
    return found[max(found)]


def strimzi_topic_crd(cache: Path, target: Path) -> None:
    """Strimzi's KafkaTopic CRD, generated by its crd-generator from its model classes."""
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        jars = Path(tmp)
        maven_jars(
            [f"io.strimzi:api:{STRIMZI_VERSION}", f"io.strimzi:crd-generator:{STRIMZI_VERSION}"],
            jars,
        )
        size = sum(p.stat().st_size for p in jars.glob("*.jar"))
        log(f"io.strimzi:api and crd-generator {STRIMZI_VERSION}: {size:,} bytes of jars")
        run(
            [java(STRIMZI_JAVA), "-cp", f"{jars}/*", "io.strimzi.crdgenerator.CrdGenerator",
             *STRIMZI_CRD_ARGS, f"io.strimzi.api.kafka.model.topic.KafkaTopic={target}"],
        )  # fmt: skip
    if sha256(target) != STRIMZI_CRD_SHA256:
        raise RuntimeError(f"{target} differs from Strimzi {STRIMZI_VERSION}'s released CRD")


def flink_deployment_crd() -> Path:
    """The Flink operator's CRD, kept in the repository (why: the module's docstring)."""
    if sha256(FLINK_CRD) != FLINK_CRD_SHA256:
        raise RuntimeError(f"{FLINK_CRD} is not the CRD of release {FLINK_OPERATOR_VERSION}")
    return FLINK_CRD


# The files taken from Go modules: source -> (module, version, path inside the module).
GO_MODULE_FILES = {
    "kubernetes": ("k8s.io/kubernetes", KUBERNETES_VERSION, "api/openapi-spec/swagger.json"),
    "podmonitor": (
        "github.com/prometheus-operator/prometheus-operator",
        PROMETHEUS_OPERATOR_VERSION,
        "example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml",
    ),
    "prometheusrule": (
        "github.com/prometheus-operator/prometheus-operator",
        PROMETHEUS_OPERATOR_VERSION,
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
    ),
}


def fetch_sources(cache: Path) -> dict[str, Path]:
    """Every upstream file the schemas are made of, fetched once, named by its version."""
    sources = cache / "sources"
    found: dict[str, Path] = {}
    for source, (module, version, path) in GO_MODULE_FILES.items():
        target = sources / f"{module.rsplit('/', 1)[-1]}-{version}-{Path(path).name}"
        found[source] = write_once(target, partial(go_module_file, cache, module, version, path))
    topic = sources / f"strimzi-{STRIMZI_VERSION}-kafkatopic.yaml"
    found["kafkatopic"] = write_once(topic, partial(strimzi_topic_crd, cache))
    found["flinkdeployment"] = flink_deployment_crd()
    return found


def kubeconform(cache: Path) -> Path:
    """kubeconform, built once with `go install` into the cache's bin/."""
    binary = cache / "bin" / "kubeconform"
    stamp = cache / "bin" / "kubeconform.version"
    if binary.exists() and stamp.exists() and stamp.read_text() == KUBECONFORM_VERSION:
        return binary
    started = time.monotonic()
    package = f"github.com/yannh/kubeconform/cmd/kubeconform@{KUBECONFORM_VERSION}"
    run(["go", "install", package], env=go_env(cache, GOBIN=str(binary.parent)), cwd=cache)
    stamp.write_text(KUBECONFORM_VERSION)
    log(f"kubeconform {KUBECONFORM_VERSION} built in {time.monotonic() - started:.1f} s")
    return binary


# --- converting -------------------------------------------------------------------------

SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
SCHEMA_VALUES = ("items", "additionalProperties", "not")


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """One OpenAPI schema (swagger 2 or a CRD's structural v3) as strict JSON Schema draft 4,
    which kubeconform compiles. Walks only schema keywords, so a property that happens to be
    named `format` or `description` is kept as a property. Descriptions are dropped: they
    are half the size and kubeconform's messages do not use them."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "description":
            continue
        if key in SCHEMA_MAPS:
            value = {name: strict(sub) for name, sub in value.items()}
        elif key in SCHEMA_LISTS or (key == "items" and isinstance(value, list)):
            value = [strict(sub) for sub in value]
        elif key in SCHEMA_VALUES and isinstance(value, dict):
            value = strict(value)
        out[key] = value
    int_or_string = schema.get("format") == "int-or-string" or (
        schema.get("x-kubernetes-int-or-string") and not {"anyOf", "oneOf"} & schema.keys()
    )
    if int_or_string:
        for key in ("type", "format"):
            out.pop(key, None)
        out["oneOf"] = [{"type": "string"}, {"type": "integer"}]
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    # kubectl's rule, as openapi2jsonschema.py applies it; an object that keeps unknown
    # fields (x-kubernetes-preserve-unknown-fields: a Flink or Kafka config map) stays open.
    open_object = schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not open_object:
        out["additionalProperties"] = False
    return out


def ref_name(node: dict[str, Any]) -> str | None:
    """The swagger definition a schema node is a $ref to, if it is one."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        return ref.removeprefix("#/definitions/")
    return None


def refs(schema: Any) -> Iterator[str]:
    """The names of the swagger definitions a schema refers to, anywhere in it."""
    if isinstance(schema, dict):
        if name := ref_name(schema):
            yield name
        for value in schema.values():
            yield from refs(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from refs(value)


def closure(definitions: dict[str, Any], name: str) -> set[str]:
    """`name` and every definition it reaches through $ref."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(refs(definitions[current]))
    return seen


def kind_file(kind: str, group: str, version: str) -> str:
    """kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}: job-batch-v1, configmap-v1."""
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind}{suffix}.json".lower()


def inline(node: Any, definitions: dict[str, Any], within: frozenset[str]) -> Any:
    """`node` with each $ref replaced by the definition it names, as the standalone files
    of kubernetes-json-schema are (kubeconform then reports the exact path of an error),
    except a definition met inside itself (JSONSchemaProps), which stays a $ref."""
    if isinstance(node, list):
        return [inline(value, definitions, within) for value in node]
    if not isinstance(node, dict):
        return node
    name = ref_name(node)
    if name is not None and name not in within:
        return inline(definitions[name], definitions, within | {name})
    return {key: inline(value, definitions, within) for key, value in node.items()}


def core_schemas(swagger: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One standalone schema per kind of swagger.json; the recursive definitions that
    cannot be inlined are bundled under `definitions` (their refs stay `#/definitions/...`)."""
    definitions = {name: strict(schema) for name, schema in swagger["definitions"].items()}
    definitions[QUANTITY] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
    files: dict[str, dict[str, Any]] = {}
    for name, raw in swagger["definitions"].items():
        for gvk in raw.get("x-kubernetes-group-version-kind", []):
            schema = inline(definitions[name], definitions, frozenset({name}))
            bundled = set().union(*(closure(definitions, ref) for ref in refs(schema)))
            if bundled:
                schema["definitions"] = {ref: definitions[ref] for ref in sorted(bundled)}
            files[kind_file(gvk["kind"], gvk["group"], gvk["version"])] = schema
    return files


def crd_schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One schema per served version of a CRD, at <group>/<kind>_<version>.json."""
    spec = crd["spec"]
    kind = spec["names"]["kind"].lower()
    return {
        f"{spec['group']}/{kind}_{version['name']}.json": custom_resource(
            version["schema"]["openAPIV3Schema"]
        )
        for version in spec["versions"]
        if version.get("served", True) and "openAPIV3Schema" in version.get("schema", {})
    }


def custom_resource(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's root schema, strict at the root too (a misspelled `sepc` is caught): the API
    server adds apiVersion, kind and metadata to every custom resource, which some CRDs
    (fabric8's, the Flink operator's) leave out of their schema."""
    implicit = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}}
    implicit["metadata"] = {"type": "object"}
    properties = {**implicit, **schema.get("properties", {})}
    return strict({**schema, "type": "object", "properties": properties})


def write_schemas(sources: dict[str, Path], target: Path) -> None:
    """Converts every source into kubeconform's layout under `target`."""
    import yaml  # only when converting: the cached path stays import-free and fast

    files = {
        f"kubernetes/{name}": schema
        for name, schema in core_schemas(json.loads(sources["kubernetes"].read_text())).items()
    }
    for kind in ("flinkdeployment", "kafkatopic", "podmonitor", "prometheusrule"):
        for document in yaml.safe_load_all(sources[kind].read_text()):
            if document and document.get("kind") == "CustomResourceDefinition":
                files.update({f"crds/{p}": s for p, s in crd_schemas(document).items()})
    for relative, schema in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True))


def schemas(cache: Path, sources: dict[str, Path]) -> Path:
    """The converted schemas, made again whenever a source or this converter changed."""
    target = cache / "schemas"
    stamp = target / ".made-from"
    made_from = "\n".join(
        [sha256(Path(__file__)), *(f"{k}={p.name}" for k, p in sorted(sources.items()))]
    )
    if stamp.exists() and stamp.read_text() == made_from:
        return target
    started = time.monotonic()
    partial = cache / "schemas.partial"
    shutil.rmtree(partial, ignore_errors=True)
    write_schemas(sources, partial)
    (partial / ".made-from").write_text(made_from)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    count = sum(1 for _ in target.rglob("*.json"))
    log(f"{count} schemas written in {time.monotonic() - started:.1f} s")
    return target


def ensure(cache: Path = CACHE) -> tuple[Path, Path]:
    """Fetches and converts whatever is missing; returns (kubeconform, schema folder)."""
    cache.mkdir(parents=True, exist_ok=True)
    folder = schemas(cache, fetch_sources(cache))
    return kubeconform(cache), folder


# --- validating -------------------------------------------------------------------------


@dataclass
class Validation:
    """kubeconform's verdict: its summary counts and one entry per resource it read."""

    valid: int
    invalid: int
    errors: int
    skipped: int
    resources: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.valid > 0 and not (self.invalid or self.errors or self.skipped)

    def lines(self) -> Iterator[str]:
        for r in self.resources:
            status = r["status"].removeprefix("status")
            yield f"{status:8} {r['filename']}: {r['kind']} {r['name']} {r.get('msg', '')}"
            for error in r.get("validationErrors") or []:
                yield f"         {error['path']}: {error['msg']}"
        yield (
            f"valid {self.valid}, invalid {self.invalid}, errors {self.errors}, "
            f"skipped {self.skipped}"
        )


def manifests() -> list[Path]:
    return sorted(MANIFESTS.glob("*.yaml"))


def validate(paths: Iterable[Path] | None = None, cache: Path = CACHE) -> Validation:
    """Runs kubeconform -strict over the manifests (all of deploy/kubernetes by default)
    against the schemas above only: a kind without a schema is an error, never skipped."""
    binary, folder = ensure(cache)
    files = [str(p) for p in (manifests() if paths is None else paths)]
    cmd = [
        str(binary), "-strict", "-summary", "-verbose", "-output", "json",
        "-schema-location", f"{folder}/{CORE_LOCATION}",
        "-schema-location", f"{folder}/{CRD_LOCATION}",
        *files,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as e:
        raise RuntimeError(f"kubeconform said no JSON: {done.stdout}{done.stderr}") from e
    return Validation(**report["summary"], resources=report["resources"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.schemas", description=__doc__)
    parser.add_argument("--cache", type=Path, default=CACHE, help="default: %(default)s")
    parser.add_argument(
        "--validate", action="store_true", help="then validate deploy/kubernetes/*.yaml"
    )
    args = parser.parse_args(argv)
    cache = args.cache.resolve()
    try:
        ensure(cache)
        if not args.validate:
            return 0
        result = validate(cache=cache)
    except RuntimeError as e:
        print(f"deploy.schemas: {e}", file=sys.stderr)
        return 1
    print("\n".join(result.lines()))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
