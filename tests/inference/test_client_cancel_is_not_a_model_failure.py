"""A clinician pressing Stop (the client disconnects) is the client's own outcome: the request is
recorded CANCELLED ``client_disconnected``, audited as cancelled, and never counts against the
model (ModelMetric failures, the per-minute ``fails:`` buckets, the circuit, the failure counters).
Likewise a request the backend refuses for its input (a 4xx: the client's fault)."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
from django.db import OperationalError
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.gpu import shared
from apps.gpu.metrics import failure_bucket
from apps.gpu.models import ModelMetric
from apps.inference.model_metrics import aggregate_metrics
from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model
from tests.support.metrics import local
from tests.support.servers import set_stub_mode

pytestmark = pytest.mark.django_db(transaction=True)

LONG = [{"role": "user", "content": "Count from 1 to 500, one number per line, and say nothing else."}]


def _recorded(timeout: float = 30) -> InferenceTask:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records_written()
        try:
            task = InferenceTask.objects.first()
        except OperationalError:  # in-memory SQLite's shared cache: "table is locked" while a write runs
            task = None
        if task is not None:
            return task
        time.sleep(0.05)
    raise AssertionError("the request was not recorded")


def _never_a_failure_of(model: str, endpoint_id: int) -> None:
    """What the monitor computes for the model, and the circuit every process shares."""
    aggregate_metrics()
    rows = ModelMetric.objects.filter(model_name=model, bucket_start__gt=timezone.now() - timedelta(seconds=180))
    assert sum(r.failures for r in rows) == 0
    fails = shared.client().hgetall(shared.key(f"fails:{failure_bucket()}"))
    assert model.encode() not in fails
    raw = shared.client().hget(shared.key("circuits"), str(endpoint_id))
    assert raw is None or shared._decode_circuit(raw)[:2] == ("closed", 0)


def test_stop_mid_stream_is_cancelled_and_never_a_failure_of_the_model(
    live_medai,
    llama_server,
    alice,
    token_for,
):
    ep = register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct")
    failed_before = local("medai_tasks_total", mode="stream", outcome="failed", model="smollm2-135m")
    attempts_failed_before = local("medai_backend_attempts_total", model="smollm2-135m", outcome="failure")
    cancelled_before = local("medai_tasks_total", mode="stream", outcome="cancelled", model="smollm2-135m")
    with httpx.stream(
        "POST",
        f"{live_medai}/v1/chat/completions",
        timeout=60,
        headers={"Authorization": f"Bearer {token_for(alice)}"},
        json={"model": "smollm2-135m", "messages": LONG, "stream": True, "max_tokens": 512},
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                break  # the first words arrived: Stop (leaving the block closes the connection)
    task = _recorded()
    assert (task.status, task.error_code, task.stream, task.model_name) == (
        "cancelled",
        "client_disconnected",
        True,
        "smollm2-135m",
    )
    event = AuditEvent.objects.get(action="inference.complete", object_id=str(task.id))
    assert (event.outcome, event.details["status"], event.details["error_code"]) == (
        "cancelled",
        "cancelled",
        "client_disconnected",
    )
    _never_a_failure_of("smollm2-135m", ep.pk)
    assert ModelMetric.objects.get(model_name="smollm2-135m").requests == 1  # a request of the model, not a failure
    assert local("medai_tasks_total", mode="stream", outcome="cancelled", model="smollm2-135m") == cancelled_before + 1
    assert local("medai_tasks_total", mode="stream", outcome="failed", model="smollm2-135m") == failed_before
    assert local("medai_backend_attempts_total", model="smollm2-135m", outcome="failure") == attempts_failed_before


def test_a_client_leaving_before_a_slow_answer_is_cancelled_not_failed(
    live_medai,
    stub_backend,
    alice,
    token_for,
):
    ep = register_model("stub-a", stub_backend)
    set_stub_mode(stub_backend, "slow", delay=3)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{live_medai}/v1/chat/completions",
            timeout=0.5,
            headers={"Authorization": f"Bearer {token_for(alice)}"},
            json={"model": "stub-a", "messages": LONG},
        )
    task = _recorded()
    assert (task.status, task.error_code, task.http_status, task.stream) == (
        "cancelled",
        "client_disconnected",
        499,
        False,
    )
    assert AuditEvent.objects.get(action="inference.complete", object_id=str(task.id)).outcome == "cancelled"
    _never_a_failure_of("stub-a", ep.pk)


def test_a_client_leaving_while_its_stream_opens_is_cancelled_not_failed(
    live_medai,
    stub_backend,
    alice,
    token_for,
):
    ep = register_model("stub-a", stub_backend)
    set_stub_mode(stub_backend, "slow", delay=3)
    with pytest.raises(httpx.ReadTimeout):
        with httpx.stream(
            "POST",
            f"{live_medai}/v1/chat/completions",
            timeout=0.5,
            headers={"Authorization": f"Bearer {token_for(alice)}"},
            json={"model": "stub-a", "messages": LONG, "stream": True},
        ) as response:
            response.read()
    task = _recorded()
    assert (task.status, task.error_code, task.stream) == ("cancelled", "client_disconnected", True)
    assert AuditEvent.objects.get(action="inference.complete", object_id=str(task.id)).outcome == "cancelled"
    _never_a_failure_of("stub-a", ep.pk)


def test_a_request_refused_for_its_input_is_not_a_failure_of_the_model(
    live_medai,
    stub_backend,
    alice,
    token_for,
):
    ep = register_model("stub-a", stub_backend)
    set_stub_mode(stub_backend, "reject400")
    before = local("medai_tasks_total", mode="sync", outcome="client_error", model="stub-a")
    attempts_failed_before = local("medai_backend_attempts_total", model="stub-a", outcome="failure")
    response = httpx.post(
        f"{live_medai}/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {token_for(alice)}"},
        json={"model": "stub-a", "messages": LONG},
    )
    assert response.status_code == 400
    task = _recorded()
    assert (task.status, task.http_status) == ("failed", 400)  # failed for the client, not for the model
    _never_a_failure_of("stub-a", ep.pk)
    assert ModelMetric.objects.get(model_name="stub-a").requests == 1
    assert local("medai_tasks_total", mode="sync", outcome="client_error", model="stub-a") == before + 1
    assert local("medai_backend_attempts_total", model="stub-a", outcome="failure") == attempts_failed_before


def test_model_failures_count_backend_faults_only(alice, demo):
    ep = register_model("m", "http://127.0.0.1:9/v1")
    now = timezone.now()

    def row(status: str, http_status: int | None, code: str = "") -> None:
        InferenceTask.objects.create(
            mode="sync",
            status=status,
            http_status=http_status,
            error_code=code,
            location=demo,
            user=alice,
            model_name="m",
            endpoint=ep,
            created_at=now,
            inference_ms=100,
        )

    row("completed", 200)
    row("cancelled", 200, "client_disconnected")  # Stop mid-stream
    row("cancelled", 499, "client_disconnected")  # left before a non-streamed answer
    row("failed", 200, "client_disconnected")  # recorded before this fix: still the client's doing
    row("failed", 400, "backend_rejected")  # refused for its input
    row("failed", 413, "context_length_exceeded")
    row("failed", 200, "backend_error")  # the model server broke mid-stream: a fault
    row("failed", 503, "backend_unavailable")  # a fault
    aggregate_metrics(now)
    metric = ModelMetric.objects.get(model_name="m", bucket_start__gt=now - timedelta(seconds=60))
    assert (metric.requests, metric.failures) == (8, 2)
