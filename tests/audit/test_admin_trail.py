"""Every admin sign-in (and failed one), add, change, delete and action is audited, for any app's
model: the fields that changed with their new values, but never a secret's value (an encrypted
field, a password) and never PHI."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from apps.accounts.models import User
from apps.inference.models import ModelEndpoint

pytestmark = pytest.mark.django_db

ROOT_PASSWORD = "root-password-for-tests-7781"
BACKEND_SECRET = "sk-backend-secret-0042"


@pytest.fixture
def root(org) -> User:
    return User.objects.create_superuser("root", password=ROOT_PASSWORD, organization=org, role=User.Role.ADMIN)


@pytest.fixture
def admin_client(root) -> Client:
    client = Client(HTTP_USER_AGENT="firefox-admin", HTTP_X_PURPOSE_OF_USE="HOPERAT")
    client.force_login(root)
    return client


def endpoint_form(**changes: object) -> dict[str, object]:
    return {
        "name": "gpu-a",
        "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "served_model_id": "",
        "api_key": "",
        "context_length": 4096,
        "vram_mb": 0,
        "rank": 10,
        "enabled": "on",
        **changes,
    }


def test_admin_sign_in_and_a_failed_one_are_audited(root, events):
    client = Client()
    client.post("/admin/login/", {"username": "root", "password": "wrong", "next": "/admin/"})
    assert (
        client.post("/admin/login/", {"username": "root", "password": ROOT_PASSWORD, "next": "/admin/"}).status_code
        == 302
    )
    failed, ok = events("admin.login")
    assert (failed.outcome, failed.details["username"]) == ("failure", "root")
    assert (ok.outcome, ok.actor, ok.actor_id) == ("success", "root", root.pk)
    assert "wrong" not in json.dumps(failed.details)


def test_add_change_and_delete_name_the_fields_and_withhold_the_secret(admin_client, root, events):
    response = admin_client.post("/admin/inference/modelendpoint/add/", endpoint_form(api_key=BACKEND_SECRET))
    assert response.status_code == 302, response.content[:2000]
    endpoint = ModelEndpoint.objects.get(name="gpu-a")
    assert endpoint.api_key == BACKEND_SECRET
    response = admin_client.post(
        f"/admin/inference/modelendpoint/{endpoint.pk}/change/",
        endpoint_form(rank=3, api_key=BACKEND_SECRET + "-rotated"),
    )
    assert response.status_code == 302, response.content[:2000]
    assert (
        admin_client.post(f"/admin/inference/modelendpoint/{endpoint.pk}/delete/", {"post": "yes"}).status_code == 302
    )

    [added] = events("admin.add")
    assert (added.actor, added.object_type, added.object_id) == ("root", "inference.modelendpoint", str(endpoint.pk))
    assert added.details["values"]["name"] == "gpu-a" and "api_key" in added.details["secret_fields"]
    [changed] = events("admin.change")
    assert set(changed.details["fields"]) == {"rank", "api_key"}
    assert changed.details["values"] == {"rank": 3}
    assert changed.details["old"] == {"rank": 10}  # what it was: the secret's old value neither
    assert changed.details["secret_fields"] == ["api_key"]
    assert (changed.user_agent, changed.purpose_of_use) == ("firefox-admin", "HOPERAT")
    [deleted] = events("admin.delete")
    assert deleted.details["object"] == "gpu-a"
    for event in events():
        assert BACKEND_SECRET not in json.dumps(event.details)


def test_a_password_change_names_the_field_and_never_the_value(admin_client, alice, events):
    response = admin_client.post(
        f"/admin/accounts/user/{alice.pk}/password/",
        {"password1": "a-new-Password-991", "password2": "a-new-Password-991"},
    )
    assert response.status_code == 302, response.content[:2000]
    [changed] = events("admin.change")
    assert changed.object_id == str(alice.pk) and "password" in changed.details["secret_fields"]
    assert "a-new-Password-991" not in json.dumps(changed.details)
    assert "pbkdf2" not in json.dumps(changed.details)


def test_an_admin_action_is_audited(admin_client, events):
    endpoint = ModelEndpoint.objects.create(name="gpu-b", base_url="http://127.0.0.1:9/v1")
    response = admin_client.post(
        "/admin/inference/modelendpoint/",
        {"action": "test_connection", "_selected_action": [str(endpoint.pk)], "index": 0},
    )
    assert response.status_code == 302
    [event] = events("admin.action")
    assert event.actor == "root" and event.object_type == "inference.modelendpoint"
    assert event.details == {"action": "test_connection", "selected": 1, "confirmed": False, "http_status": 302}


def test_patient_details_in_a_changed_value_are_redacted(admin_client, events):
    endpoint = ModelEndpoint.objects.create(name="gpu-c", base_url="http://127.0.0.1:9/v1")
    admin_client.post(
        f"/admin/inference/modelendpoint/{endpoint.pk}/change/",
        endpoint_form(name="gpu-c", served_model_id="for Mr. John Smith 555-123-4567"),
    )
    [changed] = events("admin.change")
    assert "Smith" not in json.dumps(changed.details) and "555-123-4567" not in json.dumps(changed.details)


def test_an_old_value_with_patient_details_is_redacted_too(admin_client, events):
    endpoint = ModelEndpoint.objects.create(
        name="gpu-d", base_url="http://127.0.0.1:9/v1", served_model_id="for Mrs. Jane Doe 555-987-6543"
    )
    admin_client.post(
        f"/admin/inference/modelendpoint/{endpoint.pk}/change/", endpoint_form(name="gpu-d", served_model_id="plain")
    )
    [changed] = events("admin.change")
    assert changed.details["values"]["served_model_id"] == "plain" and "served_model_id" in changed.details["old"]
    assert set(changed.details["old"]) == set(changed.details["values"])
    assert "Doe" not in json.dumps(changed.details) and "555-987-6543" not in json.dumps(changed.details)
