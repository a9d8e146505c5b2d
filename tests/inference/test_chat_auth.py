"""Who may call /v1/chat/completions: credentials, revocation, scopes."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import ApiKey
from apps.accounts.services import revoke_api_key
from tests.conftest import register_model
from tests.support.servers import free_port

pytestmark = pytest.mark.django_db(transaction=True)

BODY = json.dumps({"model": "Chat", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(autouse=True)
def _model():
    register_model("offline-model", f"http://127.0.0.1:{free_port()}/v1")


def post(auth: str | None):
    extra = {"HTTP_AUTHORIZATION": auth} if auth is not None else {}
    return Client().post("/v1/chat/completions", data=BODY, content_type="application/json", **extra)


def test_no_credentials_is_401(alice):
    response = post(None)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_credentials"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer", "Bearer garbage", "Basic dXNlcjpwYXNz", "Bearer mk_0000_nope"])
def test_malformed_or_unknown_credentials_are_401(alice, header):
    assert post(header).status_code == 401


def test_api_key_authenticates_and_a_revoked_one_does_not(alice, api_key_for):
    secret = api_key_for(alice)
    assert post(f"Bearer {secret}").status_code == 503  # authenticated; the model server is down
    revoke_api_key(ApiKey.objects.get())
    response = post(f"Bearer {secret}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_expired_api_key_is_401(alice, api_key_for):
    secret = api_key_for(alice, expires_at=timezone.now() + timedelta(seconds=60))
    ApiKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))  # its time has passed
    assert post(f"Bearer {secret}").status_code == 401


def test_auditor_may_not_run_inference(audrey, token_for):
    response = post(f"Bearer {token_for(audrey)}")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def test_api_key_with_only_read_scope_may_not_run_inference(alice, api_key_for):
    secret = api_key_for(alice, scopes=["read"])
    assert post(f"Bearer {secret}").status_code == 403
