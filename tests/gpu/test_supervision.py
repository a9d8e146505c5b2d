"""Supervised model servers: a real llama.cpp server that crashes is restarted and serves again;
an out-of-memory crash pauses new work, drains, stops the largest server and resumes smaller."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable

import httpx
import pytest

from apps.audit.models import AuditEvent
from apps.gpu import policy, services, shared
from apps.gpu.models import ModelServer
from apps.gpu.monitor import Monitor
from apps.gpu.providers import SimulatedProvider
from apps.gpu.supervisor import Supervisor
from apps.inference.bundled import ensure_bundled_server
from tests.support.servers import ROOT, free_port

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(what: str, check: Callable[[], bool], step: Callable[[], None], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step()
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not {what} within {timeout:.0f} s")


def chat(port: int) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        timeout=60,
        json={"messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 4},
    )


@pytest.mark.e2e
def test_a_crashed_llama_server_is_restarted_and_serves_again():
    port = free_port()
    server = ensure_bundled_server(port, parallel=1, threads=1)
    supervisor = Supervisor()
    try:

        def state() -> ModelServer:
            return ModelServer.objects.get(pk=server.pk)

        def shared_health() -> bool:
            return shared.load_view().health[server.endpoint_id]["ok"]

        wait_for("running", lambda: state().state == ModelServer.State.RUNNING, supervisor.reconcile)
        assert shared_health()  # shared at once: routing need not wait for the next health check
        assert chat(port).status_code == 200
        first_pid = state().pid
        os.kill(first_pid, signal.SIGKILL)

        wait_for("noticed", lambda: state().restarts == 1, supervisor.reconcile, 30)
        crashed = state()
        assert crashed.last_exit_code == -signal.SIGKILL and "exited with code" in crashed.last_error
        assert not shared_health()  # routed around from the moment the crash is seen
        wait_for("running again", lambda: state().state == ModelServer.State.RUNNING, supervisor.reconcile)
        assert shared_health()
        again = state()
        assert again.pid != first_pid and again.restarts == 1
        assert "llama" in again.log_tail.lower() or again.log_tail  # recent log lines are kept
        assert chat(port).status_code == 200
    finally:
        supervisor.stop_all()
    assert ModelServer.objects.get(pk=server.pk).state == ModelServer.State.STOPPED
    crash = AuditEvent.objects.get(action="gpu.server.crashed")
    assert crash.outcome == "failure" and crash.details["restarts"] == 1
    assert AuditEvent.objects.filter(action="gpu.server.started").count() == 2


def test_admin_stop_and_start_are_applied_by_the_supervisor():
    port = free_port()
    server = ModelServer.objects.create(
        name="stub",
        port=port,
        command=sys.executable,
        args=[str(ROOT / "bench" / "stub_backend.py"), "--port", str(port)],
    )
    supervisor = Supervisor()
    try:

        def state() -> str:
            return ModelServer.objects.get(pk=server.pk).state

        wait_for("running", lambda: state() == "running", supervisor.reconcile, 30)
        services.stop_server(server)
        wait_for("stopped", lambda: state() == "stopped", supervisor.reconcile, 30)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health")
        services.start_server(server)
        wait_for("running", lambda: state() == "running", supervisor.reconcile, 30)
        pid = ModelServer.objects.get(pk=server.pk).pid
        services.restart_server(server)
        wait_for(
            "restarted",
            lambda: ModelServer.objects.get(pk=server.pk).pid not in (None, pid) and state() == "running",
            supervisor.reconcile,
            30,
        )
        assert ModelServer.objects.get(pk=server.pk).restarts == 0  # asked for, not a crash
    finally:
        supervisor.stop_all()


def test_out_of_memory_pauses_drains_stops_the_largest_and_resumes_with_smaller_batches(fresh_view):
    big_port = free_port()
    big = ModelServer.objects.create(
        name="big",
        port=big_port,
        vram_mb=12_000,
        command=sys.executable,
        args=[str(ROOT / "bench" / "stub_backend.py"), "--port", str(big_port)],
    )
    monitor = Monitor(SimulatedProvider())
    try:
        wait_for("big running", lambda: ModelServer.objects.get(pk=big.pk).state == "running", monitor.tick, 30)
        ModelServer.objects.create(
            name="oom",
            port=free_port(),
            vram_mb=2_000,
            command=sys.executable,
            args=[
                "-c",
                "import sys, time; print('ggml_cuda: CUDA error: out of memory', flush=True); time.sleep(0.2); sys.exit(1)",
            ],
        )
        wait_for("the out-of-memory noticed", lambda: monitor.oom is not None, monitor.supervisor.reconcile, 30)
        paused = policy.current_policy()
        assert (paused.admit_new, paused.admit_critical, paused.limit_for(3)) == (False, False, 0)

        monitor.tick()  # nothing in flight: drained at once
        assert monitor.oom["phase"] == "recovering" and monitor.oom["stopped"] == "big"
        assert ModelServer.objects.get(pk=big.pk).desired_state == "stopped"
        wait_for("big stopped", lambda: ModelServer.objects.get(pk=big.pk).state == "stopped", monitor.tick, 30)
        state = monitor.sample()
        resumed = policy.current_policy()
        assert resumed.admit_new and resumed.level == "HIGH" and resumed.batch_size == 4  # smaller batches
        assert state["oom"]["phase"] == "recovering"
        assert AuditEvent.objects.filter(action="gpu.oom", outcome="failure").exists()
        assert AuditEvent.objects.get(action="gpu.server.stopped").details["server"] == "big"
    finally:
        monitor.supervisor.stop_all()


def test_the_embedded_defaults_server_entry_is_created_once_and_follows_its_port():
    first = ensure_bundled_server(18401)
    again = ensure_bundled_server(18402)
    assert first.pk == again.pk and ModelServer.objects.count() == 1
    assert again.autostart and again.port == 18402 and again.vram_mb > 0
    assert again.endpoint.base_url == "http://127.0.0.1:18402/v1" and again.endpoint.kind == "llamacpp"
