"""Admins register model servers: the backend key is write-only and encrypted; test connection."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.db import connection

from apps.inference.models import ModelEndpoint
from tests.support.servers import free_port

pytestmark = pytest.mark.django_db


def _form(**overrides):
    data = {
        "name": "gpu1-llama",
        "kind": "llamacpp",
        "base_url": "http://gpu1:8080/v1",
        "served_model_id": "",
        "api_key": "sk-backend-secret",
        "context_length": 4096,
        "vram_mb": 8000,
        "rank": 1,
        "enabled": "on",
    }
    data.update(overrides)
    return data


def test_backend_api_key_is_encrypted_at_rest_and_never_shown(admin_client):
    response = admin_client.post("/admin/inference/modelendpoint/add/", _form())
    assert response.status_code == 302
    endpoint = ModelEndpoint.objects.get()
    assert endpoint.api_key == "sk-backend-secret"
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM inference_modelendpoint")
        raw = cursor.fetchone()[0]
    assert "sk-backend-secret" not in raw
    page = admin_client.get(f"/admin/inference/modelendpoint/{endpoint.pk}/change/").content.decode()
    assert "sk-backend-secret" not in page


def test_saving_without_a_new_key_keeps_the_stored_one(admin_client):
    admin_client.post("/admin/inference/modelendpoint/add/", _form())
    endpoint = ModelEndpoint.objects.get()
    admin_client.post(f"/admin/inference/modelendpoint/{endpoint.pk}/change/", _form(api_key="", rank=2))
    endpoint.refresh_from_db()
    assert endpoint.api_key == "sk-backend-secret" and endpoint.rank == 2


def test_test_connection_reports_what_the_backend_answered(admin_client, stub_backend):
    ok = ModelEndpoint.objects.create(name="stub", base_url=stub_backend, served_model_id="stub-model")
    down = ModelEndpoint.objects.create(name="down", base_url=f"http://127.0.0.1:{free_port()}/v1")
    response = admin_client.post(
        "/admin/inference/modelendpoint/",
        {"action": "test_connection", "_selected_action": [ok.pk, down.pk]},
        follow=True,
    )
    msgs = {m.message.split(" ")[0]: (m.level_tag, m.message) for m in get_messages(response.wsgi_request)}
    assert msgs["stub"][0] == "success" and "serves 'stub-model'" in msgs["stub"][1]
    assert msgs["down"][0] == "error" and "unreachable" in msgs["down"][1]


def test_seeded_agent_types_exist():
    from apps.inference.models import AgentRoute

    assert {"Chat", "MedicalQA", "Clinical", "Documentation", "Billing", "Claims"} <= set(
        AgentRoute.objects.values_list("agent_type", flat=True)
    )
