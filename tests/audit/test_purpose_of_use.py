"""``X-Purpose-Of-Use`` is recorded on every event of the request that carries it (sync chat's
inference event included); a malformed one is a 400 naming the header, before anything runs."""

from __future__ import annotations

import httpx
import pytest
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from tests.conftest import PASSWORD, records_written, register_model


@pytest.mark.django_db
@pytest.mark.parametrize("bad", ["x" * 65, "TREAT\x07", "<script>", "-leading-dash"])
def test_a_malformed_purpose_is_refused_naming_the_header(alice, bad):
    response = APIClient().post(
        "/v1/auth/login",
        {"username": "alice", "password": PASSWORD, "location_id": "demo"},
        format="json",
        HTTP_X_PURPOSE_OF_USE=bad,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("X-Purpose-Of-Use", "invalid_purpose_of_use")
    assert not AuditEvent.objects.exists()  # nothing ran


@pytest.mark.django_db(transaction=True)
def test_the_purpose_reaches_the_inference_event_of_a_sync_chat(live_medai, alice, api_key_for, stub_backend):
    register_model("stub-a", stub_backend)
    response = httpx.post(
        f"{live_medai}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key_for(alice)}", "X-Purpose-Of-Use": "ETREAT"},
        json={"model": "stub-a", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200
    records_written()
    event = AuditEvent.objects.get(action="inference.complete")
    assert event.purpose_of_use == "ETREAT" and event.organization_id == alice.organization_id
