"""The admin's lists fit the screen and read as numbers with units: a task's UUID as its first 8
characters (the whole id in the tooltip), durations in ms or s, model metrics as ms, % and tok/s
rather than raw floats, GPU samples as MiB/GiB, °C, W and %; correlation ids short in the trail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.audit.services import record_event
from apps.gpu.models import GpuSample, ModelMetric
from apps.inference.models import InferenceTask, LegalHold
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db
NB = "\u00a0"


@pytest.fixture
def admin_client(django_user_model) -> Client:
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("root", password=PASSWORD))
    return client


def test_the_task_list_shows_short_ids_and_durations(admin_client, demo):
    task = InferenceTask.objects.create(
        location=demo,
        created_at=timezone.now(),
        status="completed",
        model_name="smol",
        prompt_tokens=1200,
        completion_tokens=345,
        queue_wait_ms=48,
        inference_ms=1834,
        latency_ms=1890,
    )
    LegalHold.objects.create(task=task, reason="case 12", placed_at=timezone.now())
    html = admin_client.get("/admin/inference/inferencetask/").content.decode()
    assert f'<span class="medai-id" title="{task.id}">{str(task.id)[:8]}…</span>' in html
    assert f">{task.id}<" not in html  # the whole UUID is no column of its own
    assert "1,200 → 345" in html and f"48{NB}ms" in html and f"1.83{NB}s" in html and f"1.89{NB}s" in html
    holds = admin_client.get("/admin/inference/legalhold/").content.decode()
    assert f'task <span class="medai-id" title="{task.id}">' in holds


def test_model_metrics_read_as_ms_percent_and_tokens_per_second(admin_client):
    ModelMetric.objects.create(
        model_name="smol",
        bucket_start=timezone.now().replace(second=0, microsecond=0),
        requests=40,
        failures=1,
        latency_ema_ms=231.4567,
        latency_p50_ms=198.21,
        latency_p95_ms=1450.9,
        tokens_per_second=41.2345,
    )
    html = admin_client.get("/admin/gpu/modelmetric/").content.decode()
    for shown in (f"2.5{NB}%", f"231{NB}ms", f"198{NB}ms", f"1.45{NB}s", f"41.2{NB}tok/s"):
        assert shown in html
    assert "231.4567" not in html and "41.2345" not in html


def test_gpu_samples_read_as_memory_temperature_power_and_utilization(admin_client):
    GpuSample.objects.create(
        taken_at=timezone.now() - timedelta(minutes=1),
        gpu_index=0,
        name="sim",
        simulated=True,
        memory_total_mb=24576,
        memory_used_mb=12288,
        temperature_c=64.37,
        power_w=212.6,
        utilization_percent=73.21,
        level="NORMAL",
        thermal="NORMAL",
    )
    html = admin_client.get("/admin/gpu/gpusample/").content.decode()
    for shown in (f"12.0{NB}GiB of 24.0{NB}GiB (50{NB}%)", f"64{NB}°C", f"213{NB}W", f"73{NB}%"):
        assert shown in html


def test_the_audit_trail_shows_short_correlation_ids(admin_client):
    record_event("auth.login", correlation_id="9f86d081884c7d659a2feaa0c55ad015")
    html = admin_client.get("/admin/audit/auditevent/").content.decode()
    assert '<span class="medai-id" title="9f86d081884c7d659a2feaa0c55ad015">9f86d081…</span>' in html


def test_every_admin_page_loads_the_list_styles(admin_client):
    html = admin_client.get("/admin/accounts/quota/").content.decode()
    assert "medai/admin.css" in html
