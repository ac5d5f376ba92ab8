"""A Prometheus server from Debian's package, scraping the local Flink cluster's reporters.

Flink's Prometheus reporter (`flink-conf/config.yaml`, `metrics.reporter.prom`) gives the
JobManager and every TaskManager an endpoint on the first free port of 9249-9269; this
server scrapes the whole range on 127.0.0.1 (a port with no process is just a target that
is down), every 5 s, so the dashboard's queries (`deploy/grafana/`) run against what the
job really exports. Its data and log live in `.run/prometheus-<port>/`. Grafana has no
package that installs here without Docker; `deploy/` provisions it in docker-compose.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from stack.kafka import _alive, _terminate
from stack.paths import ROOT, RUN
from stack.process import wait_started

FLINK_REPORTER_PORTS = range(9249, 9270)  # flink-conf/config.yaml metrics.reporter.prom.port
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"  # docker-compose's
ALERT_RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
EXPECTED_TASKMANAGERS = "txn:taskmanagers_expected"


def scrape_config(targets: list[str], interval_s: float) -> dict:
    """The compose file's scrape configuration with this machine's targets: the same job
    name, metrics path and relabelling, so the dashboard's queries fit both."""
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"]["scrape_interval"] = f"{interval_s:g}s"
    config["global"]["evaluation_interval"] = f"{interval_s:g}s"
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": targets}]
    job.pop("dns_sd_configs", None)  # compose's TaskManager replicas: no such names here
    return config


def label_value(value: str) -> str:
    """A label value as Flink's Prometheus reporter exports it (its default
    `filterLabelValueCharacters`): every character outside [a-zA-Z0-9:_] becomes "_", so the
    job `txn-correlator` is `job_name="txn_correlator"`."""
    return re.sub(r"[^a-zA-Z0-9:_]", "_", value)


def alert_rules(taskmanagers: int) -> dict:
    """The alerting rules of every deployment (`deploy/prometheus/alerts.yml`) for a cluster
    of `taskmanagers` TaskManagers."""
    rules = yaml.safe_load(ALERT_RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("record") == EXPECTED_TASKMANAGERS:
                rule["expr"] = f"vector({taskmanagers})"
    return rules


@dataclass
class PrometheusServer:
    port: int = 9090
    scrape_interval_s: float = 5.0
    taskmanagers: int = 2  # what the alert on missing TaskManagers expects

    @property
    def home(self) -> Path:
        return RUN / f"prometheus-{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "prometheus.pid"

    @staticmethod
    def installed() -> bool:
        return shutil.which("prometheus") is not None

    def running(self) -> bool:
        return _alive(self.pid_file)

    def start(self, timeout: float = 60) -> None:
        if self.running():
            return
        if not self.installed():
            raise RuntimeError("Prometheus is not installed; run bin/setup (apt prometheus)")
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "prometheus.yml"
        targets = [f"127.0.0.1:{p}" for p in FLINK_REPORTER_PORTS]
        rules = self.home / "alerts.yml"
        rules.write_text(yaml.safe_dump(alert_rules(self.taskmanagers), sort_keys=False))
        scrape = scrape_config(targets, self.scrape_interval_s)
        config.write_text(yaml.safe_dump({**scrape, "rule_files": [str(rules)]}))
        with open(self.home / "prometheus.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    "prometheus", f"--config.file={config}",
                    f"--storage.tsdb.path={self.home / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.pid_file.write_text(str(proc.pid))
        log = self.home / "prometheus.log"
        wait_started(f"Prometheus on {self.url}", self._ready, self.running, log, timeout)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        _terminate(self.pid_file, timeout=20)

    def query(self, expr: str) -> list[dict]:
        """The result of an instant query; raises ValueError for a query Prometheus refuses."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        if body.get("status") != "success":
            raise ValueError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def firing(self) -> list[dict]:
        """The alerts firing now: name, labels and summary each (raises OSError when the
        server does not answer)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=5) as response:
            alerts = json.load(response)["data"]["alerts"]
        return [
            {
                "alert": a["labels"]["alertname"],
                "labels": {k: v for k, v in a["labels"].items() if k != "alertname"},
                "summary": a["annotations"].get("summary", ""),
                "since": a.get("activeAt"),
            }
            for a in alerts
            if a["state"] == "firing"
        ]

    def metric_names(self) -> set[str]:
        url = f"{self.url}/api/v1/label/__name__/values"
        with urllib.request.urlopen(url, timeout=10) as response:
            return set(json.load(response)["data"])
