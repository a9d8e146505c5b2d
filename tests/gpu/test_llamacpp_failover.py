"""A real llama.cpp server, supervised by the monitor, killed under steady load: no non-streamed
client request is lost (retry and failover absorb it), and it serves again after its restart."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from apps.gpu.models import ModelServer
from apps.gpu.monitor import Monitor
from apps.gpu.providers import SimulatedProvider
from apps.inference.bundled import ensure_bundled_server
from apps.inference.models import AgentRoute, AgentRouteEntry
from tests.conftest import register_model
from tests.support.servers import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.e2e]


def test_killing_the_primary_loses_no_request_and_it_comes_back(
    live_medai, llama_server, alice, token_for, settings, fresh_view
):
    settings.MEDAI_HEALTH_INTERVAL = 1.0
    primary_server = ensure_bundled_server(free_port(), endpoint_name="primary", parallel=2, threads=1)
    primary = primary_server.endpoint
    primary.rank = 1
    primary.save()
    AgentRouteEntry.objects.create(
        route=AgentRoute.objects.get_or_create(agent_type="Clinical")[0], endpoint=primary, position=0
    )
    register_model("secondary", llama_server, rank=2, agents=("Clinical",), position=1)

    stop_monitor = threading.Event()
    monitor = threading.Thread(target=Monitor(SimulatedProvider()).run, args=(stop_monitor,), daemon=True)
    monitor.start()
    results: list[tuple[int, str]] = []
    stop_load = threading.Event()

    headers = {"Authorization": f"Bearer {token_for(alice)}"}

    def load() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop_load.is_set():
                r = client.post(
                    f"{live_medai}/v1/chat/completions",
                    headers=headers,
                    json={"model": "Clinical", "max_tokens": 4, "messages": [{"role": "user", "content": "Say OK."}]},
                )
                results.append((r.status_code, r.json().get("model", r.text) if r.status_code == 200 else r.text))

    def wait_for(what: str, check, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"not {what} within {timeout:.0f} s"
            time.sleep(0.1)

    def server() -> ModelServer:
        return ModelServer.objects.get(pk=primary_server.pk)

    workers = [threading.Thread(target=load) for _ in range(2)]
    try:
        wait_for("primary running", lambda: server().state == "running")
        for w in workers:
            w.start()
        wait_for("load on the primary", lambda: sum(1 for _, m in results if m == "primary") >= 5)
        killed_at = len(results)
        os.kill(server().pid, signal.SIGKILL)
        wait_for("the crash noticed", lambda: server().restarts >= 1, 30)
        wait_for(
            "primary serving again",
            lambda: any(m == "primary" for _, m in results[killed_at + 1 :] if server().state == "running"),
            60,
        )
        wait_for("answers after the restart", lambda: sum(1 for _, m in results[killed_at:] if m == "primary") >= 3, 60)
    finally:
        stop_load.set()
        for w in workers:
            if w.is_alive():
                w.join(60)
        stop_monitor.set()
        monitor.join(30)

    failed = [r for r in results if r[0] != 200]
    assert not failed, failed[:3]
    after = [m for _, m in results[killed_at:]]
    assert "secondary" in after  # traffic failed over while the primary was down
    assert server().state == "stopped"  # the monitor stopped what it started
