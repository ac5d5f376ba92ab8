"""The product's alerts (`deploy/prometheus/alerts.yml`): every rule has a `promtool test
rules` case, names only metrics the job and Flink export, and reaches every deployment from
the one file; live, a service that stops sending fires "TypeC missing" on the real
Prometheus, `stack status` shows it, and it resolves once the service sends again."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request

import pytest
import yaml

from deploy import alerts as kubernetes_rule
from generator.producer import Traffic
from job.config import JobConfig, WriterConfig
from stack import status
from stack.prometheus import ALERT_RULES, EXPECTED_TASKMANAGERS, alert_rules, label_value
from stack.submit import submit_correlator
from tests.test_dashboard import COMPOSE, DASHBOARD, exported_names, metric_names

CASES = ALERT_RULES.with_name("alerts.test.yml")
# Flink's own metrics the rules read, beyond those of the dashboard.
FLINK_METRICS = {
    "flink_jobmanager_job_runningTime",
    "flink_jobmanager_job_lastCheckpointCompletedTimestamp",
}


def _rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_runs_every_case():
    result = subprocess.run(
        ["promtool", "test", "rules", str(CASES)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not():
    alerts = {r["alert"] for r in _rules() if "alert" in r}
    tests = [t for case in yaml.safe_load(CASES.read_text())["tests"]
             for t in case["alert_rule_test"]]  # fmt: skip
    assert {t["alertname"] for t in tests if t["exp_alerts"]} == alerts
    quiet = {t["alertname"] for t in tests if not t["exp_alerts"]}
    # The silent cases: before a `for` elapses, or series that must not fire.
    assert len(quiet) >= 6, quiet


def test_the_rules_name_only_metrics_that_are_exported():
    used = set().union(*(metric_names(r["expr"]) for r in _rules()))
    assert used <= exported_names() | FLINK_METRICS, used - exported_names() - FLINK_METRICS


def test_job_names_are_spelled_as_the_reporter_exports_them():
    """Flink's reporter turns `txn-correlator` into `job_name="txn_correlator"`: a selector
    with the job's own spelling matches nothing, silently."""
    for path in (ALERT_RULES, DASHBOARD):
        for names in re.findall(r'job_name=~?\\?"([^"\\]+)', path.read_text()):
            for name in names.split("|"):
                assert name == label_value(name), (path.name, name)
    assert label_value(JobConfig().job_name) == "txn_correlator"
    assert label_value(WriterConfig().job_name) == "txn_correlator_writer"


def test_every_deployment_loads_the_one_rules_file():
    """Compose mounts it beside its scrape configuration, the local Prometheus and the
    Kubernetes PrometheusRule take it whole with their own TaskManager count."""
    scrape = yaml.safe_load((ALERT_RULES.parent / "prometheus.yml").read_text())
    assert scrape["rule_files"] == [ALERT_RULES.name]
    mounts = yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]["volumes"]
    assert f"./deploy/prometheus/{ALERT_RULES.name}:/etc/prometheus/{ALERT_RULES.name}:ro" in mounts
    source = yaml.safe_load(ALERT_RULES.read_text())
    local = alert_rules(5)
    expected = [r for g in local["groups"] for r in g["rules"] if r.get("record")]
    assert [(r["record"], r["expr"]) for r in expected] == [(EXPECTED_TASKMANAGERS, "vector(5)")]
    assert local["groups"][1:] == source["groups"][1:]
    # compose's default TASKMANAGERS is what the file itself expects
    assert "TASKMANAGERS:-3}" in COMPOSE.read_text() and "vector(3)" in ALERT_RULES.read_text()


def test_the_kubernetes_rule_is_generated_from_the_rules_file():
    committed = kubernetes_rule.RULE.read_text()
    assert committed == kubernetes_rule.render(), "run `python -m deploy.alerts`"
    spec = yaml.safe_load(committed)["spec"]
    assert spec["groups"][1:] == yaml.safe_load(ALERT_RULES.read_text())["groups"][1:]
    assert spec["groups"][0]["rules"][0]["expr"] == (
        f"vector({kubernetes_rule.expected_taskmanagers()})"
    )


def _firing(prometheus, alert: str, labels: dict) -> bool:
    return any(
        a["alert"] == alert and labels.items() <= a["labels"].items() for a in prometheus.firing()
    )


def _explain(prometheus) -> str:
    """What the rule saw: its parts, and its state and last error on the server."""
    op = "flink_taskmanager_job_task_operator_{}"
    parts = {
        "missing/1m": f"sum by (job_name, type) (increase({op.format('type_missing')}[1m]))",
        "expired/1m": f"sum by (job_name) (increase({op.format('expired')}[1m]))",
    }
    seen = {name: prometheus.query(expr) for name, expr in parts.items()}
    with urllib.request.urlopen(f"{prometheus.url}/api/v1/rules?type=alert", timeout=5) as r:
        rules = [(rule["name"], rule["state"], rule.get("health"), rule.get("lastError"))
                 for g in json.load(r)["data"]["groups"] for rule in g["rules"]
                 if rule["name"] == "TxnTypeMissing"]  # fmt: skip
    return f"{seen}\nrule: {rules}"


def _wait(condition, timeout_s: float, what: str, explain=lambda: "") -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{explain()}")
        time.sleep(1)
    return time.monotonic() - started


@pytest.mark.kafka
@pytest.mark.flink
def test_a_service_that_stops_sending_fires_type_missing_until_it_sends_again(
    flink, kafka, prometheus, topics
):
    config = topics.live(timeout_s=5, expiry_grace_s=2, job_name=f"alert-{topics.config.group_id}")
    job_id = submit_correlator(flink, config)
    try:
        flink.api.wait_until_running(job_id)
        traffic = Traffic(config.bootstrap_servers, config.topic_prefix, config.types, rate=20,
                          prefix=config.group_id)  # fmt: skip
        with traffic as services:
            time.sleep(10)  # every service sending: nothing fires
            ours = {"job_name": label_value(config.job_name)}
            assert not _firing(prometheus, "TxnTypeMissing", ours), prometheus.firing()
            services.silent = {"TypeC"}
            explain = lambda: _explain(prometheus)  # noqa: E731
            fired = _wait(lambda: _firing(prometheus, "TxnTypeMissing", {**ours, "type": "TypeC"}),
                          120, "TxnTypeMissing{type=TypeC} firing", explain)  # fmt: skip
            shown = status.collect(status.Product(flink, config, None, 2, alerts=prometheus))
            assert any(a["alert"] == "TxnTypeMissing" and a["summary"] == "TypeC missing"
                       for a in shown["alerts"]), shown["alerts"]  # fmt: skip
            assert "TxnTypeMissing: TypeC missing" in status.render(shown)
            services.silent = set()
            resolved = _wait(lambda: not _firing(prometheus, "TxnTypeMissing", ours), 180,
                             "TxnTypeMissing resolved", explain)  # fmt: skip
        print(f"\nTypeC stopped: fired after {fired:.0f} s; sending again: resolved after "
              f"{resolved:.0f} s")  # fmt: skip
    finally:
        flink.api.cancel(job_id)
