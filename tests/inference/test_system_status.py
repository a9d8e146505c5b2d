"""``GET /v1/system/status`` (the System page's read): GPU state labelled simulated, the models the
GPU policy allows now, each enabled backend's health and circuit, and the queue by priority, of the
caller's organization (never another's) and of their own tasks; ``gpu:read`` needed."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from apps.accounts.models import Location, Organization, User
from apps.gpu import circuit, shared
from apps.gpu.models import SimulatedGpu
from apps.gpu.monitor import Monitor
from apps.gpu.providers import SimulatedProvider
from tests.conftest import _user, register_model
from tests.inference.queue_helpers import submit
from tests.support.openapi import assert_matches

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_view(settings):
    settings.MEDAI_GPU_STATE_CACHE_SECONDS = 0.0


@pytest.fixture
def carol(db) -> User:
    east = Location.objects.create(
        organization=Organization.objects.create(name="Eastside Clinic"), code="east", name="Eastside ward"
    )
    return _user("carol", User.Role.CLINICIAN, east.organization, east)


def test_the_queue_is_counted_by_priority_for_the_organization_and_for_the_caller(client_for, alice, bob, carol):
    register_model("stub", "http://127.0.0.1:9/v1")  # nothing runs: the tasks stay queued
    as_alice = client_for(alice)
    for text, priority in (("a", "critical"), ("b", "high"), ("c", "normal"), ("d", "normal"), ("e", "low")):
        submit(as_alice, text, priority)
    submit(client_for(carol), "carol's", "low")

    alices = as_alice.get("/v1/system/status").json()
    assert alices["queue"]["organization"]["depth"] == {"critical": 1, "high": 1, "normal": 2, "low": 1}
    assert alices["queue"]["yours"]["depth"] == {"critical": 1, "high": 1, "normal": 2, "low": 1}
    assert alices["queue"]["organization"]["queued"] == 5 and alices["queue"]["organization"]["oldest_wait_s"] >= 0
    assert_matches("/v1/system/status", "get", 200, alices)

    bobs = client_for(bob).get("/v1/system/status").json()["queue"]  # alice's colleague
    assert bobs["organization"]["queued"] == 5 and bobs["yours"]["queued"] == 0

    carols = client_for(carol).get("/v1/system/status").json()["queue"]  # another organization
    assert carols["organization"]["depth"] == {"critical": 0, "high": 0, "normal": 0, "low": 1}
    assert carols["yours"]["queued"] == 1


def test_backends_show_health_circuit_and_whether_the_policy_allows_them(client_for, alice, settings):
    SimulatedGpu.objects.all().delete()
    SimulatedGpu.objects.create(index=0, name="Simulated GPU 0 (no hardware)", memory_total_mb=10_000)
    up = register_model("up-model", "http://127.0.0.1:9/v1", rank=1)
    down = register_model("down-model", "http://127.0.0.1:9/v1", rank=2)
    register_model("unchecked-model", "http://127.0.0.1:9/v1", rank=3)
    register_model("disabled-model", "http://127.0.0.1:9/v1", rank=4, enabled=False)
    Monitor(SimulatedProvider(), supervise=False).sample()
    shared.mark_health(up.pk, True, "ok")
    shared.mark_health(down.pk, False, "ConnectError on http://10.0.0.7:8080/health")
    for _ in range(settings.MEDAI_CIRCUIT_FAILURES):
        circuit.record_failure(down.pk)

    body = client_for(alice).get("/v1/system/status").json()
    assert body["simulated"] is True and body["monitor_running"] is True and body["stale"] is False
    (gpu,) = body["gpus"]
    assert gpu["simulated"] is True and gpu["memory"]["total_mb"] == 10_000
    assert body["policy"]["allowed_models"] == "all"
    rows = {b["model"]: b for b in body["backends"]}
    assert list(rows) == ["up-model", "down-model", "unchecked-model"]  # by rank; the disabled one is not there
    assert (rows["up-model"]["up"], rows["up-model"]["circuit"]) == (True, "closed")
    assert (rows["down-model"]["up"], rows["down-model"]["circuit"]) == (False, "open")
    assert rows["down-model"]["consecutive_failures"] == settings.MEDAI_CIRCUIT_FAILURES
    assert rows["unchecked-model"]["up"] is None and rows["unchecked-model"]["checked_seconds_ago"] is None
    assert all(b["allowed_now"] for b in rows.values())
    assert "10.0.0.7" not in str(body) and "servers" not in body  # no server address reaches the page
    assert body["stale_after_seconds"] == settings.MEDAI_GPU_STALE_AFTER
    assert_matches("/v1/system/status", "get", 200, body)


def test_a_model_the_policy_excludes_is_marked_not_allowed(client_for, alice):
    big = register_model("big", "http://127.0.0.1:9/v1", rank=1)
    tiny = register_model("tiny", "http://127.0.0.1:9/v1", rank=2)
    decision = {
        "level": "CRITICAL",
        "thermal": "NORMAL",
        "batch_size": 1,
        "concurrency": 0,
        "allowed": [tiny.pk],
        "admit_new": False,
        "admit_critical": True,
    }
    shared.publish(
        "state",
        {
            "ts": time.time(),
            "policy": decision,
            "gpus": [],
            "endpoint_names": {str(big.pk): "big", str(tiny.pk): "tiny"},
        },
        ttl=30,
    )
    body = client_for(alice).get("/v1/system/status").json()
    assert body["pressure_level"] == "CRITICAL" and body["policy"]["allowed_models"] == ["tiny"]
    assert {b["model"]: b["allowed_now"] for b in body["backends"]} == {"big": False, "tiny": True}


def test_with_no_monitor_the_state_is_stale(client_for, alice):
    register_model("m", "http://127.0.0.1:9/v1")
    body = client_for(alice).get("/v1/system/status").json()
    assert body["stale"] is True and body["monitor_running"] is False and body["gpus"] == []
    assert [(b["model"], b["up"]) for b in body["backends"]] == [("m", None)]


def test_it_needs_credentials_and_the_gpu_read_scope(alice, audrey, api_key_for, client_for):
    assert Client().get("/v1/system/status").status_code == 401
    chat_only = Client().get("/v1/system/status", HTTP_AUTHORIZATION=f"Bearer {api_key_for(alice, scopes=['chat'])}")
    assert chat_only.status_code == 403
    assert chat_only.json()["error"]["type"]
    assert client_for(audrey).get("/v1/system/status").status_code == 200  # the auditor has gpu:read
