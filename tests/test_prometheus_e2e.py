"""deploy/prometheus and deploy/grafana for real: Debian's Prometheus scrapes the whole platform
as `make run` starts it (launcher: monitor with its supervised llama-server, web, worker; /metrics
closed by MEDAI_METRICS_TOKEN as in production), with the shipped scrape config and a copy of the
shipped rules whose ``for:`` durations are shortened. It sees the target up and every rule loaded
and healthy; stopping the backend (the llama-server, as an operator's stop does) fires
MedaiBackendDown. Every metric the dashboard and the rules read is in a real scrape of it.

The same run's output holds medai's logging to its promise: every line of every process (launcher,
monitor, web, worker, the manage.py steps) is one JSON record naming its process; a request's
lines carry its X-Request-ID, an async task's worker lines the id of the request that submitted
it; and no line holds the planted PHI of a prompt or a credential.

One platform for the whole module (it takes a minute to start on two cores); the tests run in
file order, the backend stop last. What was measured is printed and written to
test-artifacts/prometheus-e2e.json.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.launcher import Launched
from tests.support.metrics import samples, value
from tests.support.promql import dashboard_expressions, metric_names, rule_expressions
from tests.support.servers import ROOT, free_port
from tests.test_observability_config import ALERTS, CONFIG, DASHBOARD

pytestmark = pytest.mark.e2e

PROMETHEUS = "/usr/bin/prometheus"
INTERVAL = "2s"  # scrape and evaluation
FOR = "6s"  # every rule's `for:` in the test's copy
# Series Prometheus makes itself for every target: not medai's to export.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
CANARY = "Xylocanary9E"
PROMPT = (
    f"{CANARY}: Mrs. Hermione Quillfeather, MRN 99887766, DOB 03/14/1961, phone (617) 555-0143, "
    "asks whether her INR of 4.2 is too high. Answer in one word."
)
PHI_MARKERS = [CANARY, "Quillfeather", "Hermione", "99887766", "03/14/1961", "555-0143"]
PROCESSES = {"launcher", "migrate", "collectstatic", "bootstrap_demo", "monitor", "web", "worker"}
RUNNING = {"launcher", "monitor", "web", "worker"}
QUOTA_SETUP = """
from apps.accounts.models import Location, Quota, User
demo = Location.objects.get(code="demo")
ward = Location.objects.create(organization=demo.organization, code="ward-q", name="Ward Q")
User.objects.get(username="clinician").locations.add(ward)
Quota.objects.create(location=ward, period="day", max_requests=1)
print("ok")
"""
STOP_BACKEND = """
from apps.gpu.models import ModelServer
n = ModelServer.objects.filter(endpoint__name="smollm2-135m").update(desired_state=ModelServer.Desired.STOPPED)
print("stopped", n)
"""


def _until(check: Any, timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _login(base: str, password: str, location: str) -> str:
    r = httpx.post(
        f"{base}/v1/auth/login",
        json={"username": "clinician", "password": password, "location_id": location},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def _chat(base: str, token: str, request_id: str, content: str = PROMPT) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
        json={"model": "Chat", "max_tokens": 4, "messages": [{"role": "user", "content": content}]},
        timeout=120,
    )


def _drive(platform: Launched, metrics_token: str) -> dict[str, Any]:
    """What a day's use makes the metrics and logs show: chats, an async task, a websocket, a
    quota refusal, an operator's audit_verify; then the scrape, with the websocket open."""
    from websockets.sync.client import connect

    base = platform.base
    seen: dict[str, Any] = {
        "sync_id": f"e2e-sync-{uuid.uuid4().hex[:12]}",
        "async_id": f"e2e-async-{uuid.uuid4().hex[:12]}",
    }
    token = seen["token"] = _login(base, platform.password, "demo")
    chat = _chat(base, token, seen["sync_id"])
    assert chat.status_code == 200, chat.text
    assert chat.headers["X-Request-ID"] == seen["sync_id"]

    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": seen["async_id"]}
    body = {
        "agent_type": "Chat",
        "max_tokens": 4,
        "priority": "high",
        "messages": [{"role": "user", "content": PROMPT}],
    }
    submitted = httpx.post(f"{base}/v1/async/submit", headers=headers, json=body, timeout=30)
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]
    result = _until(
        lambda: (lambda r: r if r.status_code == 200 else None)(
            httpx.get(f"{base}/v1/async/result/{task_id}", headers=headers, timeout=30)
        ),
        180,
        "the async task's result",
    )
    assert result.json()["choices"][0]["message"]["content"] is not None

    assert platform.shell(QUOTA_SETUP).strip().endswith("ok")
    ward = seen["ward_token"] = _login(base, platform.password, "ward-q")
    seen["quota_first"] = _chat(base, ward, "e2e-quota-1", "Say yes.").status_code
    refused = _chat(base, ward, "e2e-quota-2", "Say yes.")
    seen["quota_second"], seen["quota_code"] = refused.status_code, refused.json().get("error", {}).get("code")

    seen["audit_verify"] = platform.manage("audit_verify")

    seen["metrics_without_token"] = httpx.get(f"{base}/metrics", timeout=30).status_code
    auth = {"Authorization": f"Bearer {metrics_token}"}
    with connect(f"ws://127.0.0.1:{platform.port}/ws/status/", subprotocols=["bearer", token], open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "hello"
        scrape = httpx.get(f"{base}/metrics", headers=auth, timeout=60)
    assert scrape.status_code == 200, scrape.text[:500]
    seen["scrape"] = scrape.text
    return seen


def _prometheus_config(tmp: Path, platform: Launched, metrics_token: str) -> Path:
    """The shipped prometheus.yml pointed at this platform (intervals shortened), and a copy of the
    shipped rules with every ``for:`` shortened."""
    token_file = tmp / "medai-metrics-token"
    token_file.write_text(metrics_token + "\n")
    token_file.chmod(0o600)
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
    (tmp / "alerts.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval=INTERVAL, evaluation_interval=INTERVAL)
    config["rule_files"] = [str(tmp / "alerts.yml")]
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "medai"]
    job["authorization"]["credentials_file"] = str(token_file)
    job["static_configs"] = [{"targets": [f"127.0.0.1:{platform.port}"]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Prometheus:
    def __init__(self, tmp: Path, config: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _until(lambda: httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200, 60, "Prometheus to be ready")

    def api(self, path: str) -> Any:
        r = httpx.get(f"{self.url}/api/v1/{path}", timeout=10)
        r.raise_for_status()
        return r.json()["data"]

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not Path(PROMETHEUS).exists():
        pytest.fail(f"{PROMETHEUS} not found: install Debian's prometheus package (make test does)")
    tmp = tmp_path_factory.mktemp("prometheus-e2e")
    metrics_token = secrets.token_urlsafe(32)
    platform = Launched(
        tmp,
        MEDAI_METRICS_TOKEN=metrics_token,
        MEDAI_OPS_OPEN="0",  # /metrics and /readyz closed without the token, as in production
        MEDAI_ACCESS_LOG="1",
        MEDAI_HEALTH_INTERVAL="2",
    )
    prometheus = None
    try:
        platform.wait_ready()
        seen = _drive(platform, metrics_token)
        prometheus = Prometheus(tmp, _prometheus_config(tmp, platform, metrics_token))
        yield {"platform": platform, "prometheus": prometheus, "metrics_token": metrics_token, "tmp": tmp, **seen}
    finally:
        if prometheus is not None:
            prometheus.stop()
        platform.stop()


def _records(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run["platform"].output if line.strip()]


def test_metrics_are_closed_without_the_token_and_the_scenario_happened(run):
    assert run["metrics_without_token"] == 401
    assert (run["quota_first"], run["quota_second"], run["quota_code"]) == (200, 429, "quota_exceeded")
    assert "audit chain OK" in run["audit_verify"]
    text = run["scrape"]
    assert value(text, "medai_limit_rejections_total", kind="quota") >= 1
    assert value(text, "medai_quota_used", level="location", scope="ward-q", period="day", kind="requests") == 1
    assert value(text, "medai_audit_chain_ok") == 1
    assert value(text, "medai_websocket_connections", path="/ws/status/") == 1
    assert value(text, "medai_health_checks_total", model="smollm2-135m", outcome="ok") >= 1  # the monitor's
    assert value(text, "medai_tasks_total", mode="async", outcome="completed", model="smollm2-135m") == 1


def test_every_metric_the_dashboard_and_the_alerts_read_is_exported(run):
    exported = {name for name, _ in samples(run["scrape"])}
    used: dict[str, set[str]] = {}
    for where, expr in {**dashboard_expressions(DASHBOARD), **rule_expressions(ALERTS)}.items():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    assert len(used) >= 25
    missing = {name: sorted(wheres) for name, wheres in used.items() if name not in exported | SYNTHETIC}
    assert not missing, f"read by deploy/ but not in a real scrape of medai: {missing}"


def test_prometheus_scrapes_medai_with_the_token(run):
    prometheus = run["prometheus"]
    targets = _until(
        lambda: [t for t in prometheus.api("targets")["activeTargets"] if t["health"] == "up"],
        60,
        "the medai target to be up",
    )
    [target] = targets
    assert target["labels"]["job"] == "medai" and target["lastError"] == ""
    assert target["scrapeUrl"] == f"{run['platform'].base}/metrics"
    run["measured"] = {"targets_up": [t["scrapeUrl"] for t in targets]}


def test_every_rule_is_loaded_and_evaluates(run):
    prometheus = run["prometheus"]
    expected = set(rule_expressions(ALERTS))

    def loaded() -> list[dict[str, Any]]:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        evaluated = [r for r in rules if r.get("lastEvaluation", "").startswith("20")]
        return rules if len(evaluated) == len(expected) else []

    rules = _until(loaded, 60, "every rule to be evaluated")
    assert {r["name"] for r in rules} == expected
    unhealthy = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not unhealthy, unhealthy
    run.setdefault("measured", {})["rules_loaded"] = len(rules)


def test_every_line_of_every_process_is_json_naming_its_process(run):
    records = _records(run)  # raises on a line that is not JSON
    assert all(isinstance(r, dict) and {"ts", "level", "msg", "process"} <= set(r) for r in records)
    assert RUNNING <= {r["process"] for r in records} <= PROCESSES
    assert any(r["process"] == "monitor" and "model server" in r["msg"] for r in records)


def test_a_request_and_its_async_task_log_under_its_correlation_id(run):
    records = _records(run)
    web = [r for r in records if r["process"] == "web" and r.get("correlation_id") == run["sync_id"]]
    assert any("POST /v1/chat/completions" in r["msg"] for r in web), "the access log line names the request's id"
    worker = [r for r in records if r["process"] == "worker" and r.get("correlation_id") == run["async_id"]]
    assert any(r["msg"].startswith("task ") and " completed in " in r["msg"] for r in worker), worker
    # the submission's own line (web) carries the same id the worker's does
    assert any(
        r["process"] == "web" and r.get("correlation_id") == run["async_id"] and "/v1/async/submit" in r["msg"]
        for r in records
    )


def test_no_line_holds_the_prompts_phi_or_a_credential(run):
    output = "".join(run["platform"].output)
    token = run["token"]
    credentials = [token, token.split(".")[2], run["metrics_token"], run["platform"].password]
    hits = [m for m in PHI_MARKERS + credentials if m.lower() in output.lower()]
    assert not hits, f"{len(hits)} planted values in the platform's output"
    assert CANARY not in output


def test_a_quota_refusal_fires_quota_rejections(run):
    """Refusals counted from 0 (every kind is exported before its first): the first one Prometheus
    sees is an increase, and the alert fires."""
    prometheus = run["prometheus"]
    assert value(run["scrape"], "medai_limit_rejections_total", kind="unavailable") == 0  # exported at 0
    refused = _chat(run["platform"].base, run["ward_token"], "e2e-quota-3", "Say yes.")
    assert refused.status_code == 429
    started = time.time()

    def firing() -> dict[str, Any] | None:
        return next(
            (
                a
                for a in prometheus.alerts()
                if a["labels"]["alertname"] == "MedaiQuotaRejections" and a["state"] == "firing"
            ),
            None,
        )

    alert = _until(firing, 60, "MedaiQuotaRejections to fire")
    assert alert["labels"]["severity"] == "info"
    run.setdefault("measured", {})["quota_rejection_to_firing_s"] = round(time.time() - started, 1)


def test_stopping_the_backend_fires_backend_down(run):
    prometheus, platform = run["prometheus"], run["platform"]
    before = prometheus.alerts()
    assert not [a for a in before if a["labels"]["alertname"] == "MedaiBackendDown"], before
    stopped = time.time()
    assert platform.shell(STOP_BACKEND).split()[-1] == "1"

    def firing() -> dict[str, Any] | None:
        for a in prometheus.alerts():
            if a["labels"]["alertname"] == "MedaiBackendDown" and a["state"] == "firing":
                return a
        return None

    alert = _until(firing, 120, "MedaiBackendDown to fire", every=0.5)
    fired = time.time()
    assert alert["labels"]["model"] == "smollm2-135m" and alert["labels"]["severity"] == "page"
    assert alert["annotations"]["summary"] == "Model backend smollm2-135m is down"
    active = alert["activeAt"]
    measured = {
        **run.get("measured", {}),
        "alert": "MedaiBackendDown",
        "labels": alert["labels"],
        "stopped_to_firing_s": round(fired - stopped, 1),
        "active_at": active,
        "for": FOR,
        "interval": INTERVAL,
        "health_interval_s": 2,
        "firing_before_the_stop": sorted({a["labels"]["alertname"] for a in before if a["state"] == "firing"}),
        "firing_after": sorted({a["labels"]["alertname"] for a in prometheus.alerts() if a["state"] == "firing"}),
    }
    print("prometheus e2e:", json.dumps(measured))
    out = Path(ROOT) / "test-artifacts"
    out.mkdir(exist_ok=True)
    (out / "prometheus-e2e.json").write_text(json.dumps(measured, indent=2) + "\n")
    shutil.copy(run["tmp"] / "prometheus.log", out / "prometheus-e2e.log")
