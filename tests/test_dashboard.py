"""The Grafana dashboard and the Prometheus scrape configuration agree with what the job
exports and with the deployment files.

Grafana does not install here without Docker, so the dashboard is checked as a file: every
query names metrics the job registers (`job.metrics`, as Flink's Prometheus reporter spells
them) and, live, every query runs on a real Prometheus (Debian's package) scraping the real
cluster, and every metric name it uses is in that scrape.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from job.config import JobConfig
from job.metrics import counter_names, counter_path
from job.writer import COUNTERS as WRITER_COUNTERS
from stack.prometheus import FLINK_REPORTER_PORTS, SCRAPE_CONFIG, scrape_config

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "txn-correlator.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
PROVIDERS = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
COMPOSE = ROOT / "docker-compose.yml"
OPERATOR = "flink_taskmanager_job_task_operator_"
# Metrics of Flink itself (not the correlator's counters) that the dashboard uses.
FLINK_METRICS = {
    "flink_jobmanager_job_lastCheckpointDuration",
    "flink_jobmanager_job_lastCheckpointSize",
    "flink_jobmanager_job_numRestarts",
    "flink_jobmanager_numRegisteredTaskManagers",
    "flink_taskmanager_job_task_operator_pendingRecords",
}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(flink_[A-Za-z0-9_]+)", expr))


def prometheus_name(counter: str, types: tuple[str, ...]) -> str:
    """What Flink's Prometheus reporter calls a counter of the correlator: the keys of its
    metric groups join the name, their values become labels (`type`, `le`)."""
    groups, leaf = counter_path(counter, types)
    return OPERATOR + "".join(f"{key}_" for key, _ in groups) + leaf


def exported_names(types: tuple[str, ...] = JobConfig().types) -> set[str]:
    """The correlator's and the writer's counters, and the Flink metrics above."""
    correlator = {prometheus_name(c, types) for c in counter_names(types)}
    return correlator | {OPERATOR + c for c in WRITER_COUNTERS} | FLINK_METRICS


def test_every_panel_is_complete_and_uses_the_provisioned_data_source():
    board = dashboard()
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and board["uid"] == "txn-correlator"
    for panel in board["panels"]:
        assert panel["title"] and panel["description"] and panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])


def test_the_dashboard_shows_what_the_issue_asks_for():
    """Throughput per type, outcomes, in flight, the missing-type ranking, completion-time
    percentiles, checkpoint duration, consumer lag, and health: TaskManagers, restarts and
    the writer (issue 34)."""
    text = " ".join(queries())
    for name in ("type_records_in", "aggregated", "expired", "transactions_in_flight",
                 "type_missing", "le_completion_ms_bucket", "lastCheckpointDuration",
                 "pendingRecords", "numRegisteredTaskManagers", "numRestarts", "rows_stored",
                 "write_failures", "records_diverted"):  # fmt: skip
        assert name in text, name
    assert "histogram_quantile(0.99" in text


def test_every_metric_the_dashboard_names_is_one_the_job_exports():
    used = set().union(*(metric_names(q) for q in queries()))
    assert used <= exported_names(), used - exported_names()


def test_the_scrape_configuration_reaches_every_reporter_port():
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    compose = yaml.safe_load(COMPOSE.read_text())["services"]
    flink_conf = yaml.safe_load((ROOT / "deploy" / "flink" / "config.yaml").read_text())
    first_port = str(flink_conf["metrics"]["reporter"]["prom"]["port"]).split("-")[0]
    assert int(first_port) == FLINK_REPORTER_PORTS[0]
    jobmanagers = [name for name in compose if name.startswith("jobmanager")]
    assert jobmanagers == ["jobmanager", "jobmanager-standby"]
    assert job["static_configs"] == [{"targets": [f"{n}:{first_port}" for n in jobmanagers]}]
    (dns,) = job["dns_sd_configs"]
    assert (dns["names"], dns["port"]) == (["taskmanager"], int(first_port))
    assert {"jobmanager", "taskmanager"} <= set(compose)
    local = scrape_config(["127.0.0.1:9249"], 1)
    assert "dns_sd_configs" not in local["scrape_configs"][0]
    assert local["scrape_configs"][0]["job_name"] == job["job_name"]


def test_compose_provisions_prometheus_and_grafana_from_these_files():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert (
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in (prometheus["volumes"])
    )
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(PROVIDERS.read_text())["providers"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


@pytest.mark.parametrize("types", [("TypeA", "Type.B")])
def test_prometheus_names_follow_the_metric_groups(types):
    assert prometheus_name("type.Type.B.le.100.arrival_offset_ms_bucket", types) == (
        OPERATOR + "type_le_arrival_offset_ms_bucket"
    )
    assert (
        prometheus_name("le.Inf.completion_ms_bucket", types)
        == OPERATOR + "le_completion_ms_bucket"
    )
    assert prometheus_name("aggregated", types) == OPERATOR + "aggregated"
