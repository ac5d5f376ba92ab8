"""Several hosts on this one machine (`python -m stack up --hosts`): the settings that only
break across hosts, proven without a second machine.

Five network namespaces on one bridge (`stack.netns`), each a host with its own address and
no route out:

    host    address      runs
    txn-a   10.77.0.10   Kafka (KRaft) :9092, ZooKeeper :2181, the S3 server (s3proxy) :8333
    txn-b   10.77.0.11   JobManager (REST :8081, RPC :6123, blobs :6124), leader or standby
    txn-c   10.77.0.12   JobManager, standby or leader
    txn-d   10.77.0.13   TaskManager, one slot (RPC :6122, data :6121)
    txn-e   10.77.0.14   TaskManager, one slot

The JobManagers elect their leader in ZooKeeper (`high-availability.type: zookeeper`) and
keep job graphs and checkpoint pointers in S3 (`high-availability.storageDir`); checkpoints
and savepoints go to S3 as well, through Flink's `flink-s3-fs-presto` plugin, with the keys
taken from the environment. Every Flink process reads a config.yaml made from the
repository's `flink-conf/config.yaml` (the one source of the job's settings) plus
`distributed_settings()` and its own addresses (`host_settings()`). The TaskManagers find
the leading JobManager through ZooKeeper; so does the Flink CLI, which runs in the root
namespace and reaches the hosts over the bridge (10.77.0.1).

How code reaches the workers: Python, PyFlink and the job's packages are installed on every
host at the same path (here one disk serves them all: the repository's `.venv` and
checkout), as an image or a configuration-management tool would install them on real
workers; `flink run -py job/main.py` ships only the entry script.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from job.config import JobConfig
from stack import jars
from stack.flink import link_lib
from stack.flink_rest import FlinkRest
from stack.kafka import KafkaBroker, create_job_topics
from stack.netns import Host, Network
from stack.paths import FLINK_CONF, FLINK_HOME, PYTHON, RUN, path_with_venv
from stack.s3 import CREDENTIAL_VARIABLES, S3Server
from stack.zookeeper import ZooKeeperServer

NETWORK = Network(
    bridge="txnbr0",
    subnet="10.77.0",
    hosts=(
        Host("txn-a", "10.77.0.10", "txnv-a"),
        Host("txn-b", "10.77.0.11", "txnv-b"),
        Host("txn-c", "10.77.0.12", "txnv-c"),
        Host("txn-d", "10.77.0.13", "txnv-d"),
        Host("txn-e", "10.77.0.14", "txnv-e"),
    ),
)
SERVICES = "txn-a"
JOBMANAGERS = ("txn-b", "txn-c")
TASKMANAGERS = ("txn-d", "txn-e")
ROLES = {
    SERVICES: "Kafka :9092, ZooKeeper :2181, S3 (s3proxy) :8333",
    **{h: "JobManager (REST :8081, RPC :6123, blobs :6124)" for h in JOBMANAGERS},
    **{h: "TaskManager, one slot (RPC :6122, data :6121)" for h in TASKMANAGERS},
}
KAFKA_PORT, ZOOKEEPER_PORT, S3_PORT = 9092, 2181, 8333
REST_PORT, RPC_PORT, BLOB_PORT = 8081, 6123, 6124
TM_RPC_PORT, TM_DATA_PORT = 6122, 6121
BUCKET = "txn-correlator"  # the bucket the Kubernetes deployment uses too
CLUSTER_ID = "txn-correlator"
ZK_SESSION_TIMEOUT_MS = 10_000  # a dead leader's session ends after this: the takeover


def distributed_settings(s3_endpoint: str, zookeeper: str) -> dict[str, str]:
    """What a cluster across hosts sets beyond flink-conf/config.yaml: high availability
    through ZooKeeper with its metadata in S3, and checkpoints and savepoints in S3."""
    return {
        "high-availability.type": "zookeeper",
        "high-availability.zookeeper.quorum": zookeeper,
        "high-availability.zookeeper.path.root": "/flink",
        "high-availability.cluster-id": f"/{CLUSTER_ID}",
        "high-availability.storageDir": f"s3://{BUCKET}/ha",
        # Flink's default (60 s) is capped at 40 s by ZooKeeper and makes a takeover last as
        # long; 10 s gave 14-18 s takeovers here.
        "high-availability.zookeeper.client.session-timeout": str(ZK_SESSION_TIMEOUT_MS),
        "high-availability.zookeeper.client.connection-timeout": "5000",
        "high-availability.jobmanager.port": str(RPC_PORT),  # else a random port
        "zookeeper.sasl.disable": "true",  # no Kerberos here; else an error per connection
        "s3.endpoint": s3_endpoint,
        "s3.path.style.access": "true",
        "execution.checkpointing.dir": f"s3://{BUCKET}/checkpoints",
        "execution.checkpointing.savepoint-dir": f"s3://{BUCKET}/savepoints",
        "python.executable": str(PYTHON),
        "python.client.executable": str(PYTHON),
    }


def host_settings(role: str, host: Host | None, tmp: Path, java_opts: str = "") -> dict[str, str]:
    """The addresses and ports of one host's Flink process, and its own temp folder (hosts
    here share /tmp, real ones would not), added to the role's JVM options of
    flink-conf/config.yaml (`java_opts`, e.g. the client's quick JIT) instead of replacing
    them."""
    own = {
        "io.tmp.dirs": str(tmp),
        f"env.java.opts.{role}": f"{java_opts} -Djava.io.tmpdir={tmp}".lstrip(),
    }
    if role == "jobmanager":
        return {
            **own,
            "jobmanager.rpc.address": host.address,
            "jobmanager.bind-host": host.address,
            "rest.address": host.address,
            "rest.bind-address": host.address,
            "rest.port": str(REST_PORT),
            "blob.server.port": str(BLOB_PORT),
        }
    if role == "taskmanager":
        return {
            **own,
            "taskmanager.host": host.address,
            "taskmanager.bind-host": host.address,
            "taskmanager.rpc.port": str(TM_RPC_PORT),
            "taskmanager.data.port": str(TM_DATA_PORT),
        }
    return own  # the client


def flat_settings(path: Path) -> dict[str, str]:
    """A Flink config.yaml as Flink reads it: dotted keys, values as strings."""

    def flatten(mapping: dict, prefix: str = "") -> dict[str, str]:
        flat: dict[str, str] = {}
        for key, value in mapping.items():
            if isinstance(value, dict):
                flat.update(flatten(value, f"{prefix}{key}."))
            else:
                flat[f"{prefix}{key}"] = (
                    str(value).lower() if isinstance(value, bool) else str(value)
                )
        return flat

    return flatten(yaml.safe_load(path.read_text()))


def credentials() -> dict[str, str]:
    """The S3 keys: from the environment, or made once for this machine's cluster and kept
    mode 600 in `.run/hosts/` (never in the repository)."""
    if all(os.environ.get(v) for v in CREDENTIAL_VARIABLES):
        return {v: os.environ[v] for v in CREDENTIAL_VARIABLES}
    stored = RUN / "hosts" / "s3-credentials"
    if not stored.exists():
        stored.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"{secrets.token_hex(10)}\n{secrets.token_hex(20)}\n")
    key, secret = stored.read_text().split()
    return dict(zip(CREDENTIAL_VARIABLES, (key, secret), strict=True))


@dataclass(frozen=True)
class FailoverRest(FlinkRest):
    """The REST API of whichever JobManager answers: the standby answers for the leader,
    and during a takeover (no leader for ~15 s) calls are retried for `patience` seconds."""

    urls: tuple[str, ...] = ()
    patience: float = 90.0

    def rest(self, path: str, method: str = "GET", body: dict | None = None, quiet: bool = False):
        import urllib.error

        deadline = time.monotonic() + (0 if quiet else self.patience)
        while True:
            for url in self.urls:
                try:
                    return FlinkRest(url).rest(path, method, body)
                except urllib.error.HTTPError as error:
                    if error.code < 500 and error.code != 404:
                        raise
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
            if time.monotonic() >= deadline:
                if quiet:
                    return None
                raise ConnectionError(f"no JobManager answered {path} at {self.urls}")
            time.sleep(1)


@dataclass
class HostsCluster:
    """The cluster across the hosts: its processes, configuration folders and REST API."""

    network: Network = NETWORK
    taskmanagers: int = len(TASKMANAGERS)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return RUN / "hosts"

    def host(self, name: str) -> Host:
        return self.network.host(name)

    @property
    def services(self) -> Host:
        return self.host(SERVICES)

    def _wrap(self, host: Host) -> tuple[str, ...]:
        return tuple(host.command([]))

    @property
    def broker(self) -> KafkaBroker:
        host = self.services
        return KafkaBroker(
            port=KAFKA_PORT, controller_port=KAFKA_PORT + 1, address=host.address,
            heap="512m", wrap=self._wrap(host),
        )  # fmt: skip

    @property
    def zookeeper(self) -> ZooKeeperServer:
        return ZooKeeperServer(self.services.address, ZOOKEEPER_PORT, self._wrap(self.services))

    @property
    def s3(self) -> S3Server:
        return S3Server(self.services.address, S3_PORT, (BUCKET,), self._wrap(self.services))

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def url(self) -> str:
        return f"http://{self.host(JOBMANAGERS[0]).address}:{REST_PORT}"

    @property
    def savepoints(self) -> str:
        """Where savepoints go: the bucket in S3 (as `execution.checkpointing.savepoint-dir`)."""
        return f"s3://{BUCKET}/savepoints"

    @property
    def api(self) -> FailoverRest:
        urls = tuple(f"http://{self.host(h).address}:{REST_PORT}" for h in JOBMANAGERS)
        return FailoverRest(urls[0], urls)

    # --- configuration -----------------------------------------------------------------

    def settings(self, role: str, host: Host | None) -> dict[str, str]:
        s3, zk = self.s3.endpoint, self.zookeeper.connect
        folder = self.home / (host.name if host else "client")
        settings = flat_settings(FLINK_CONF / "config.yaml")
        java_opts = settings.get(f"env.java.opts.{role}", "")
        return {
            **settings,
            **distributed_settings(s3, zk),
            **host_settings(role, host, folder / "tmp", java_opts),
        }

    def conf_dir(self, role: str, host: Host | None) -> Path:
        """A host's configuration folder: the repository's flink-conf/ (log4j files too) with
        config.yaml as that host reads it."""
        folder = self.home / (host.name if host else "client")
        conf = folder / "conf"
        shutil.rmtree(conf, ignore_errors=True)
        shutil.copytree(FLINK_CONF, conf)
        (folder / "tmp").mkdir(parents=True, exist_ok=True)
        (conf / "config.yaml").write_text(
            "# made by stack/hosts.py from flink-conf/config.yaml for this host\n"
            + yaml.safe_dump(self.settings(role, host), sort_keys=False, width=10_000)
        )
        return conf

    def _plugins(self) -> Path:
        """The distribution's plugins/ and the S3 file system, each in a folder of its own."""
        plugins = self.home / "plugins"
        plugins.mkdir(parents=True, exist_ok=True)
        for folder in (FLINK_HOME / "plugins").iterdir():
            link = plugins / folder.name
            if folder.is_dir() and not link.exists():
                link.symlink_to(folder)
        s3 = plugins / "s3-fs-presto"
        s3.mkdir(exist_ok=True)
        for jar in jars.fetch("s3").glob("*.jar"):
            if not (s3 / jar.name).exists():
                (s3 / jar.name).symlink_to(jar)
        return plugins

    def _daemon_env(self, host: Host, conf: Path) -> dict[str, str]:
        folder = self.home / host.name
        lib = self.home / "lib"
        link_lib(lib)
        return {
            **os.environ,
            **credentials(),
            "FLINK_CONF_DIR": str(conf),
            "FLINK_LOG_DIR": str(folder / "log"),
            "FLINK_PID_DIR": str(folder / "pid"),
            "FLINK_LIB_DIR": str(lib),
            "FLINK_PLUGINS_DIR": str(self._plugins()),
            "TMPDIR": str(folder / "tmp"),
            "PATH": path_with_venv(),
        }

    def env(self) -> dict[str, str]:
        """The Flink CLI's environment: the client configuration (it finds the leader
        through ZooKeeper)."""
        lib = self.home / "lib"
        link_lib(lib)  # the connectors the client's planner needs to plan the job
        return {
            **os.environ,
            "FLINK_CONF_DIR": str(self.conf_dir("client", None)),
            "FLINK_LIB_DIR": str(lib),
            "FLINK_PLUGINS_DIR": str(self._plugins()),
            "PATH": path_with_venv(),
        }

    def submit_options(self) -> list[str]:
        return []

    # --- processes -----------------------------------------------------------------------

    def up(self, job: JobConfig | None = None, partitions: int = 3, timeout: float = 180) -> int:
        """Creates the hosts and starts what is not running on them; returns how many Flink
        processes it started. Idempotent: after a host was killed it starts what it ran."""
        self.network.create()
        env = credentials()
        if not self.zookeeper.ready():
            self.processes.append(self.zookeeper.start())
        if not self.s3.ready():
            self.processes.append(self.s3.start(env))
        self.broker.start()
        started = sum(self.start_daemon(name) for name in JOBMANAGERS)
        fresh = sum(self.start_daemon(name) for name in TASKMANAGERS)
        if fresh == len(TASKMANAGERS):
            self.fingerprint_file.write_text("")  # fresh interpreters: no job code yet
        self.wait_for_taskmanagers(self.taskmanagers, timeout)
        create_job_topics(job or JobConfig(bootstrap_servers=self.bootstrap),
                          partitions)  # fmt: skip
        return started + fresh

    def start_daemon(self, name: str) -> int:
        """Starts the host's JobManager or TaskManager unless it runs; 1 if it started one."""
        host = self.host(name)
        if host.pids():
            return 0
        role = "jobmanager" if name in JOBMANAGERS else "taskmanager"
        conf = self.conf_dir(role, host)
        env = self._daemon_env(host, conf)
        # A host that died leaves its pids in flink-daemon.sh's pid file: start afresh.
        shutil.rmtree(Path(env["FLINK_PID_DIR"]), ignore_errors=True)
        Path(env["FLINK_PID_DIR"]).mkdir(parents=True)
        for folder in (env["FLINK_LOG_DIR"], env["TMPDIR"]):
            Path(folder).mkdir(parents=True, exist_ok=True)  # flink-daemon.sh writes its .out there
        subprocess.run(
            host.command(["bash", str(FLINK_HOME / "bin" / f"{role}.sh"), "start"]),
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        return 1

    def wait_for_taskmanagers(self, count: int, timeout: float, at_most: bool = False) -> None:
        deadline = time.monotonic() + timeout
        while True:
            overview = self.api.rest("/overview", quiet=True)
            registered = 0 if overview is None else overview["taskmanagers"]
            if (registered <= count) if at_most else (registered >= count):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{registered} TaskManagers registered, not {count}")
            time.sleep(1)

    @property
    def fingerprint_file(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home / "taskmanager-code.sha256"

    def restart_taskmanagers(self) -> None:
        """Fresh TaskManager processes (fresh interpreters for new code)."""
        for name in TASKMANAGERS:
            self.host(name).terminate()
        self.wait_for_taskmanagers(0, timeout=60, at_most=True)
        for name in TASKMANAGERS:
            self.start_daemon(name)
        self.wait_for_taskmanagers(self.taskmanagers, timeout=120)
        self.fingerprint_file.write_text("")

    def leader(self) -> str | None:
        """The host of the leading JobManager, as published in ZooKeeper."""
        classpath = jars.classpath("zookeeper")
        node = f"/flink/{CLUSTER_ID}/leader/rest_server/connection_info"
        result = subprocess.run(
            ["java", "-Xmx64m", "-cp", classpath, "org.apache.zookeeper.ZooKeeperMain",
             "-server", self.zookeeper.connect, "get", node],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        match = re.search(r"http://([0-9.]+):", result.stdout)
        if match is None:
            return None
        return next((h for h in JOBMANAGERS if self.host(h).address == match[1]), None)

    def hosts_of(self, job_id: str) -> set[str]:
        """The TaskManager hosts that run the job's tasks."""
        addresses = set()
        for vertex in self.api.rest(f"/jobs/{job_id}")["vertices"]:
            managers = self.api.rest(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")
            # Flink 2 names it "endpoint" ("host:port"); 1.x called it "host"
            addresses |= {
                (tm.get("endpoint") or tm.get("host", "")).split(":")[0]
                for tm in managers["taskmanagers"]
            }
        return {h for h in TASKMANAGERS if self.host(h).address in addresses}

    def down(self) -> None:
        """Every process on the hosts stopped, the hosts and the bridge removed."""
        self.network.destroy()
        for process in self.processes:
            process.wait(timeout=30)
        self.processes.clear()
        self.broker.pid_file.unlink(missing_ok=True)
