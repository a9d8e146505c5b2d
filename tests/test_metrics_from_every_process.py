"""``/metrics`` of a web process shows every process's metrics: the worker's backend attempts,
outcomes, tokens and wait times (after that worker has exited, too), the web process's own, queue
depth by priority and websocket connections; the exposition parses (prometheus_client's parser,
and ``promtool check metrics`` where it is installed).

Real processes, as the launcher runs them: uvicorn on ``medai.asgi`` and ``manage.py qcluster``,
sharing a database of their own and one PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.inference.cluster_helpers import stop as stop_group
from tests.support.metrics import samples, value
from tests.support.own_database import ROOT, manage_shell, own_database
from tests.support.servers import free_port, start_stub, wait_http

SETUP = """
from apps.accounts.models import Location, Organization, User
from apps.accounts.services import issue_tokens
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint
org = Organization.objects.create(name="Org")
loc = Location.objects.create(organization=org, code="demo", name="Demo")
user = User.objects.create_user("alice", password="correct-horse-battery", role="clinician", organization=org)
user.locations.add(loc)
ep = ModelEndpoint.objects.create(name="stub-a", base_url=STUB_URL, context_length=2048)
AgentRouteEntry.objects.create(route=AgentRoute.objects.get_or_create(agent_type="Chat")[0], endpoint=ep)
print("TOKEN=" + issue_tokens(user, loc).access_token)
"""


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the scenario once; the tests read what the web process's /metrics said."""
    tmp = tmp_path_factory.mktemp("metrics")
    metrics_dir = tmp / "prometheus"
    metrics_dir.mkdir()
    stub, stub_url = start_stub()
    procs: list[subprocess.Popen] = []
    try:
        with own_database(
            tmp,
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            MEDAI_Q_WORKERS="1",
            MEDAI_QUEUE_POLL="0.5",
            MEDAI_BACKEND_RETRIES="0",
        ) as env:
            out = manage_shell(env, SETUP.replace("STUB_URL", repr(stub_url)))
            headers = {"Authorization": "Bearer " + out.split("TOKEN=", 1)[1].split()[0]}
            port = free_port()
            log = (tmp / "processes.log").open("ab")
            web = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "medai.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-access-log",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            procs.append(web)
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/healthz", 120, web)
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            procs.append(worker)

            ask = {"agent_type": "Chat", "messages": [{"role": "user", "content": "Normal INR?"}], "max_tokens": 4}
            submitted = httpx.post(
                base + "/v1/async/submit", json={**ask, "priority": "high"}, headers=headers, timeout=30
            )
            assert submitted.status_code == 202, submitted.text
            task_id = submitted.json()["task_id"]
            _wait(
                lambda: (
                    httpx.get(f"{base}/v1/async/status/{task_id}", headers=headers, timeout=10).json().get("status")
                    == "completed"
                ),
                120,
                "the worker to complete the async task",
            )
            stop_group(worker)  # the cluster and its worker processes exit: their counters must stay
            worker_files = sorted(p.name for p in metrics_dir.glob("*.db"))

            queued = httpx.post(
                base + "/v1/async/submit",
                json={**ask, "priority": "low", "messages": [{"role": "user", "content": "Later"}]},
                headers=headers,
                timeout=30,
            )
            assert queued.status_code == 202, queued.text
            sync = httpx.post(base + "/v1/chat/completions", json={"model": "Chat", **ask}, headers=headers, timeout=30)
            assert sync.status_code == 200, sync.text

            from websockets.sync.client import connect

            with connect(
                f"ws://127.0.0.1:{port}/ws/status/",
                subprotocols=["bearer", headers["Authorization"][7:]],
                open_timeout=30,
            ) as ws:
                assert json.loads(ws.recv(timeout=30))["type"] == "hello"
                during = httpx.get(base + "/metrics", timeout=30)
            after_close = _wait(
                lambda: (lambda t: t if value(t, "medai_websocket_connections", path="/ws/status/") == 0 else None)(
                    httpx.get(base + "/metrics", timeout=30).text
                ),
                30,
                "the websocket gauge to drop",
            )
            again = httpx.get(base + "/metrics", timeout=30)
            yield {
                "text": during.text,
                "content_type": during.headers["content-type"],
                "after_close": after_close,
                "again": again.text,
                "worker_files": worker_files,
                "files_now": sorted(p.name for p in metrics_dir.glob("*.db")),
            }
    finally:
        for proc in reversed(procs):
            stop_group(proc)
        stub.stop()


def test_the_workers_backend_attempts_and_outcomes_reach_the_web_process(scraped):
    text = scraped["text"]
    # one attempt by the (now exited) worker, one by the web process's sync chat
    assert value(text, "medai_backend_attempts_total", model="stub-a", outcome="ok") == 2
    assert value(text, "medai_tasks_total", mode="async", outcome="completed", model="stub-a") == 1
    assert value(text, "medai_tasks_total", mode="sync", outcome="completed", model="stub-a") == 1
    assert value(text, "medai_task_run_seconds_count", mode="async", model="stub-a") == 1
    assert value(text, "medai_queue_wait_seconds_count", priority="high") == 1


def test_tokens_in_and_out_are_counted_by_model_and_agent_type(scraped):
    text = scraped["text"]
    # the stub reports 5 prompt and 1 completion tokens per answer: two answers
    assert value(text, "medai_tokens_total", model="stub-a", agent_type="Chat", direction="in") == 10
    assert value(text, "medai_tokens_total", model="stub-a", agent_type="Chat", direction="out") == 2


def test_queue_depth_is_exported_by_priority(scraped):
    text = scraped["text"]
    assert {p: value(text, "medai_queue_depth", priority=p) for p in ("low", "normal", "high", "critical")} == {
        "low": 1,
        "normal": 0,
        "high": 0,
        "critical": 0,
    }
    assert value(text, "medai_queue_processing") == 0


def test_websocket_connections_are_a_live_gauge(scraped):
    assert value(scraped["text"], "medai_websocket_connections", path="/ws/status/") == 1
    assert value(scraped["after_close"], "medai_websocket_connections", path="/ws/status/") == 0


def test_exited_processes_are_folded_and_still_counted(scraped):
    assert len(scraped["worker_files"]) > len(scraped["files_now"])  # the worker's files were folded
    assert "counter_archive.db" in scraped["files_now"]
    again = samples(scraped["again"])
    for name, labels in [
        ("medai_backend_attempts_total", {"model": "stub-a", "outcome": "ok"}),
        ("medai_tasks_total", {"mode": "async", "outcome": "completed", "model": "stub-a"}),
    ]:
        assert again[(name, frozenset(labels.items()))] == value(scraped["text"], name, **labels)  # never twice


def test_the_exposition_parses_and_includes_django_and_gpu_metrics(scraped):
    assert scraped["content_type"].startswith("text/plain")
    names = {name for name, _ in samples(scraped["text"])}  # prometheus_client's parser accepts it
    assert any(n.startswith("django_http_requests_total") for n in names)
    assert "medai_gpu_pressure_level" in names


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) not installed")
def test_promtool_accepts_the_exposition(scraped):
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=scraped["text"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr  # parses, and no lint remark
