"""deploy/: the Grafana dashboard is a dashboard Grafana imports (JSON, panels on the grid, every
variable it uses defined), the Prometheus rules load (``promtool check rules``), every alert has a
``promtool test rules`` unit test that sees it fire (deploy/prometheus/alerts_test.yml) and the
scrape configuration checks (``promtool check config``). That every metric they read is exported
by a running medai is checked against a real scrape in tests/test_prometheus_e2e.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.promql import dashboard_expressions, metric_names, rule_expressions
from tests.support.servers import ROOT

DEPLOY = Path(ROOT) / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "medai.json"
# the alerts the operations brief asks for (issue 11): each must exist
REQUIRED_ALERTS = {
    "MedaiDown",
    "MedaiBackendDown",
    "MedaiGpuMemoryHigh",
    "MedaiHighErrorRate",
    "MedaiQueueDeep",
    "MedaiQueueWaitLong",
    "MedaiRateLimited",
    "MedaiQuotaRejections",
    "MedaiAuditChainBroken",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus package (make test does)")
    return path


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promql_metric_names_are_read_out_of_expressions():
    expr = (
        'sum by (model) (rate(medai_tasks_total{outcome="failed", model=~"$model"}[5m])) / '
        "sum by (model) (rate(medai_tasks_total[$__rate_interval] offset 1m)) > 0.05 and on (model) "
        "histogram_quantile(0.95, sum by (le) (rate(medai_task_run_seconds_bucket[5m]))) or vector(0)"
    )
    assert metric_names(expr) == {"medai_tasks_total", "medai_task_run_seconds_bucket"}
    assert metric_names('up{job="medai"} == 0') == {"up"}
    assert metric_names("count(medai_backend_up == 0) or vector(1e3)") == {"medai_backend_up"}
    assert metric_names("a:recorded:rate5m / b") == {"a:recorded:rate5m", "b"}


def test_the_rules_load():
    result = _run("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert REQUIRED_ALERTS <= set(rule_expressions(ALERTS))


def test_every_alert_fires_in_its_promtool_unit_test():
    result = _run("test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    fired = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    quiet = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if not c.get("exp_alerts")}
    assert set(rule_expressions(ALERTS)) == fired == quiet  # each seen firing, and quiet before it should


def test_the_unit_tests_can_fail(tmp_path):
    # the same tests against rules that never fire: promtool says so
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["expr"] = "vector(1) == 0"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    result = _run("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr


def test_the_scrape_config_checks(tmp_path):
    """The production config as shipped, with its token file and rules where this machine has them."""
    token = tmp_path / "medai-metrics-token"
    token.write_text("a-metrics-token\n")
    token.chmod(0o600)
    config = yaml.safe_load(CONFIG.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "medai"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"  # production's /metrics needs MEDAI_METRICS_TOKEN
    assert config["rule_files"] == ["alerts.yml"]
    text = CONFIG.read_text().replace(job["authorization"]["credentials_file"], str(token))
    (tmp_path / "prometheus.yml").write_text(text)
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    result = _run("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_the_dashboard_is_a_grafana_dashboard():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"instance", "model", "location", "gpu"} <= set(variables)
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    occupied: dict[tuple[int, int], str] = {}
    for p in board["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for cx in range(g["x"], g["x"] + g["w"]):
            for cy in range(g["y"], g["y"] + g["h"]):
                assert (cx, cy) not in occupied, f"{p['title']!r} overlaps {occupied[(cx, cy)]!r}"
                occupied[(cx, cy)] = p["title"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    used = set()
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            used |= set(re.findall(r"\$(\w+)", t["expr"]))
    builtin = {"__rate_interval", "__interval", "__range"}
    assert used - builtin <= set(variables), used - builtin - set(variables)


def test_the_dashboard_covers_the_medai_metrics():
    """A panel for each metric ops is promised (DESIGN.md's Observability, issue 11)."""
    read = set().union(*(metric_names(e) for e in dashboard_expressions(DASHBOARD).values()))
    promised = {
        "medai_queue_depth",
        "medai_queue_oldest_seconds",
        "medai_queue_wait_seconds_bucket",
        "medai_task_run_seconds_bucket",
        "medai_tasks_total",
        "medai_tokens_total",
        "medai_backend_attempts_total",
        "medai_backend_up",
        "medai_circuit_state",
        "medai_gpu_memory_used_bytes",
        "medai_gpu_temperature_celsius",
        "medai_gpu_power_watts",
        "medai_gpu_utilization_ratio",
        "medai_quota_used",
        "medai_quota_limit",
        "medai_websocket_connections",
        "medai_limit_rejections_total",
        "medai_audit_chain_ok",
        "medai_audit_checkpoint_age_seconds",
        "medai_model_drift",
    }
    assert promised <= read, promised - read
