"""The monitor's published state: the simulated GPU (steered from admin or a file), GET
/v1/gpu/status, /metrics, health checks, ModelMetric rows and the LOW → CRITICAL → LOW walk."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.gpu import circuit, policy, services, shared, slots
from apps.gpu.models import ModelMetric, ModelServer, PolicySettings, SimulatedGpu
from apps.gpu.monitor import Monitor
from apps.gpu.providers import SimulatedProvider
from apps.inference.backend_health import check_health
from apps.inference.model_metrics import aggregate_metrics
from apps.inference.models import InferenceTask
from tests.conftest import register_model
from tests.support.metrics import local, value
from tests.support.openapi import assert_matches
from tests.support.servers import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def gpu(fresh_view):
    SimulatedGpu.objects.all().delete()
    return SimulatedGpu.objects.create(
        index=0, name="Simulated GPU 0 (no hardware)", memory_total_mb=10_000, baseline_used_mb=500, mb_per_request=250
    )


def test_simulated_memory_is_the_models_loaded_plus_work_in_flight(gpu):
    ep = register_model("m", "http://127.0.0.1:9/v1")
    ModelServer.objects.create(name="m", endpoint=ep, port=9, vram_mb=3_000, state=ModelServer.State.RUNNING, pid=123)
    ModelServer.objects.create(name="off", port=10, vram_mb=5_000, state=ModelServer.State.STOPPED)
    provider = SimulatedProvider()
    (idle,) = provider.sample()
    assert idle.simulated and idle.memory_used_mb == 3_500 and idle.processes == [{"pid": 123, "used_mb": 3000}]
    leases = [slots.try_acquire(ep.pk, 8) for _ in range(4)]
    (busy,) = provider.sample()
    assert busy.memory_used_mb == 3_500 + 4 * 250
    assert busy.utilization_percent == 100.0
    for lease in leases:
        lease.release()


def test_temperature_follows_load_gradually(gpu):
    provider = SimulatedProvider()
    cool = provider.sample()[0].temperature_c
    gpu.memory_used_override_percent = 100
    gpu.save()
    warmer = [provider.sample()[0].temperature_c for _ in range(5)]
    assert cool < warmer[0] < warmer[-1] <= 85.0


def test_admin_overrides_and_the_override_file_steer_it(gpu, tmp_path):
    gpu.memory_used_override_percent, gpu.temperature_override_c = 72, 66
    gpu.save()
    (r,) = SimulatedProvider().sample()
    assert (r.memory_used_mb, r.temperature_c) == (7_200, 66.0)
    override = tmp_path / "sim.json"
    override.write_text(json.dumps({"0": {"memory_percent": 91, "temperature_c": 83}}))
    (r,) = SimulatedProvider(str(override)).sample()
    assert (r.memory_used_mb, r.temperature_c) == (9_100, 83.0)  # the file wins


def test_gpu_status_reports_each_gpu_labelled_simulated(gpu, alice, client_for):
    ep = register_model("tiny", "http://127.0.0.1:9/v1")
    ModelServer.objects.create(name="tiny", endpoint=ep, port=9, vram_mb=1_000, state=ModelServer.State.RUNNING)
    Monitor(SimulatedProvider(), supervise=False).sample()
    body = client_for(alice).get("/v1/gpu/status").json()
    assert body["simulated"] is True and body["provider"] == "simulated" and body["monitor_running"]
    (g,) = body["gpus"]
    assert g["simulated"] is True and g["name"] == "Simulated GPU 0 (no hardware)"
    assert g["memory"] == {"total_mb": 10_000, "used_mb": 1_500, "free_mb": 8_500, "used_percent": 15.0}
    assert g["pressure_level"] == "LOW" and g["thermal_state"] == "NORMAL" and g["models"] == ["tiny"]
    assert {"temperature_c", "power_w", "utilization_percent"} <= g.keys()
    assert body["policy"]["allowed_models"] == "all" and body["policy"]["concurrency"] == 4
    assert body["backends"] == [{"model": "tiny", "healthy": None, "circuit": "closed", "latency_ema_ms": None}]
    assert_matches("/v1/gpu/status", "get", 200, body)


def test_gpu_status_requires_credentials():
    assert Client().get("/v1/gpu/status").status_code == 401


def test_pressure_walks_low_critical_low_and_the_policy_follows(gpu, alice, client_for):
    big = register_model("big", "http://127.0.0.1:9/v1", rank=1)
    big.vram_mb = 6_000
    big.save()
    tiny = register_model("tiny", "http://127.0.0.1:9/v1", rank=5)
    tiny.vram_mb = 300
    tiny.save()
    mid = register_model("mid", "http://127.0.0.1:9/v1", rank=3)
    mid.vram_mb = 2_000
    mid.save()
    PolicySettings.objects.update(recovery_hold_seconds=0)  # one step down per sample
    monitor = Monitor(SimulatedProvider(), supervise=False)
    monitor.table = policy.publish_table()
    client = client_for(alice)

    def at(percent: float | None) -> tuple:
        SimulatedGpu.objects.filter(index=0).update(memory_used_override_percent=percent)
        monitor.sample()
        p = client.get("/v1/gpu/status").json()
        return p["pressure_level"], p["policy"]["allowed_models"], p["policy"]["batch_size"], p["policy"]["concurrency"]

    assert at(20) == ("LOW", "all", 8, 4)
    assert at(60) == ("NORMAL", "all", 6, 2)
    assert at(75) == ("HIGH", ["big", "mid"], 4, 1)
    assert at(95) == ("CRITICAL", ["tiny"], 1, 0)
    # Recovery is gradual: the level holds (more models fit the memory now free), then steps down.
    assert at(20) == ("CRITICAL", ["big", "mid", "tiny"], 1, 0)
    assert at(20) == ("HIGH", ["big", "mid"], 4, 1)
    assert at(20) == ("NORMAL", "all", 6, 2)
    assert at(20) == ("LOW", "all", 8, 4)


def test_prometheus_exports_gpu_and_circuit_state(gpu):
    ep = register_model("m", "http://127.0.0.1:9/v1")
    Monitor(SimulatedProvider(), supervise=False).sample()
    for _ in range(5):
        circuit.record_failure(ep.pk)
    text = Client().get("/metrics").content.decode()
    assert (
        'medai_gpu_memory_total_bytes{gpu="0",name="Simulated GPU 0 (no hardware)",simulated="true"} 1.048576e+10'
        in text
    )
    assert "medai_gpu_temperature_celsius{" in text and "medai_gpu_power_watts{" in text
    assert "medai_gpu_pressure_level 0.0" in text
    assert 'medai_circuit_state{model="m"} 2.0' in text
    # the monitor just published: its sample is seconds old, not absent
    assert 0 <= value(text, "medai_gpu_sample_age_seconds") < 30
    assert "medai_gpu_sample_age_seconds " in text


@pytest.mark.django_db(transaction=True)
def test_health_checks_mark_backends_and_half_open_a_recovered_circuit(stub_backend, fresh_view):
    up = register_model("up", stub_backend, agents=())
    down = register_model("down", f"http://127.0.0.1:{free_port()}/v1", agents=())
    for _ in range(5):
        circuit.record_failure(up.pk)
    before = {m: local("medai_health_checks_total", model=m, outcome=o) for m, o in (("up", "ok"), ("down", "failure"))}
    results = check_health()
    assert results[up.pk][0] is True and results[down.pk][0] is False
    # counted by the process that checked (the monitor's, in production)
    assert local("medai_health_checks_total", model="up", outcome="ok") == before["up"] + 1
    assert local("medai_health_checks_total", model="down", outcome="failure") == before["down"] + 1
    v = shared.view()
    assert v.health[up.pk]["ok"] and not v.health[down.pk]["ok"]
    assert circuit.state_of(up.pk)[0] == circuit.HALF_OPEN


def test_model_metrics_per_bucket_from_the_records(gpu, alice, demo):
    ep = register_model("m", "http://127.0.0.1:9/v1")
    now = timezone.now()
    for i, ms in enumerate([100, 200, 300, 400, 1000]):
        InferenceTask.objects.create(
            mode="sync",
            status="completed",
            location=demo,
            user=alice,
            model_name="m",
            endpoint=ep,
            created_at=now,
            inference_ms=ms,
            completion_tokens=10 * (i + 1),
        )
    InferenceTask.objects.create(
        mode="sync", status="failed", location=demo, user=alice, model_name="m", endpoint=ep, created_at=now
    )
    from apps.gpu.metrics import record_attempt

    record_attempt(type("E", (), {"name": "m"})(), ok=False)  # a failed attempt before a failover
    aggregate_metrics(now)
    row = ModelMetric.objects.get(model_name="m", bucket_start__gt=now - timedelta(seconds=60))
    assert (row.requests, row.failures) == (7, 2)
    assert (row.latency_p50_ms, row.latency_p95_ms, row.latency_ema_ms) == (300, 1000, 400)
    assert row.tokens_per_second == pytest.approx(150 / 2.0)
    assert row.endpoint == ep and services.latest_ema() == {str(ep.pk): 400.0}
