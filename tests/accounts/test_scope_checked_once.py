"""A request's scope is checked once, by one function (``accounts.services.authorize``): by DRF's
permission class for the read views and cancel, by the pipeline's authorize step for the
submit views (whose permission class only asks for a credential), and the refusal reads the
same everywhere: 403 ``insufficient_scope``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from apps.accounts import services as accounts_services
from apps.accounts.models import SCOPE_CHAT, SCOPE_GPU_READ, SCOPE_SUBMIT
from tests.conftest import register_model

pytestmark = pytest.mark.django_db

MSG = [{"role": "user", "content": "What is a normal INR?"}]


@pytest.fixture
def scope_checks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    real: Callable[..., None] = accounts_services.authorize

    def counted(principal: Any, *scopes: str) -> None:
        calls.append(scopes)
        real(principal, *scopes)

    monkeypatch.setattr(accounts_services, "authorize", counted)
    return calls


def test_a_submit_checks_the_submit_scope_once(client_for, alice, scope_checks):
    register_model("stub-a", "http://127.0.0.1:9/v1", agents=("Chat",))
    response = client_for(alice).post("/v1/async/submit", {"agent_type": "Chat", "messages": MSG}, format="json")
    assert response.status_code == 202, response.content
    assert scope_checks == [(SCOPE_SUBMIT,)]


def test_a_batch_of_many_checks_the_scope_once(client_for, alice, scope_checks):
    register_model("stub-a", "http://127.0.0.1:9/v1", agents=("Chat",))
    requests = [{"agent_type": "Chat", "messages": [{"role": "user", "content": f"q {i}"}]} for i in range(20)]
    response = client_for(alice).post("/v1/async/submit-batch", {"requests": requests}, format="json")
    assert response.status_code == 202, response.content
    assert scope_checks == [(SCOPE_SUBMIT,)]


@pytest.mark.parametrize("path", ["/v1/async/submit", "/v1/async/submit-batch"])
def test_an_auditor_may_not_submit_and_is_told_which_scope_is_missing(client_for, audrey, scope_checks, path):
    register_model("stub-a", "http://127.0.0.1:9/v1", agents=("Chat",))
    item = {"agent_type": "Chat", "messages": MSG}
    body = item if path.endswith("submit") else {"requests": [item]}
    response = client_for(audrey).post(path, body, format="json")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "insufficient_scope"
    assert "'submit'" in error["message"]
    assert scope_checks == [(SCOPE_SUBMIT,)]


def test_the_gpu_view_checks_the_gpu_read_scope_once(client_for, alice, audrey, scope_checks):
    assert client_for(audrey).get("/v1/gpu/status").status_code == 200
    assert scope_checks == [(SCOPE_GPU_READ,)]


def test_a_chat_only_key_may_list_the_models_it_can_use(api_key_for, alice, scope_checks):
    register_model("stub-a", "http://127.0.0.1:9/v1")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(alice, scopes=[SCOPE_CHAT])}")
    response = client.get("/v1/models")
    assert response.status_code == 200, response.content
    assert "stub-a" in [m["id"] for m in response.json()["data"]]
    assert len(scope_checks) == 1
    # ... and may not read what needs the gpu:read scope
    refused = client.get("/v1/gpu/status")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
