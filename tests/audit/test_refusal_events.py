"""Every refusal leaves an audit event, whichever endpoint and whichever way it is served (DRF
views, the native async chat view): a 401 (no credential, a bad one), a 403 (a scope the caller
lacks), a 429 (a full queue, a rate limit or quota: ``record_limit_rejection``). The event names
the caller when authentication got that far, the path and the error code."""

from __future__ import annotations

import pytest
from django.test import AsyncClient
from rest_framework.test import APIClient

from apps.accounts.services import authenticate_bearer
from apps.audit.services import record_limit_rejection
from tests.conftest import register_model
from tests.inference.queue_helpers import ask, submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_request_without_a_credential_is_audited_as_a_401(events):
    response = APIClient().get("/v1/async/tasks", HTTP_USER_AGENT="scanner/0.1")
    assert response.status_code == 401
    [event] = events("auth.unauthenticated")
    assert event.outcome == "denied" and event.actor == ""
    assert event.details == {
        "method": "GET",
        "path": "/v1/async/tasks",
        "http_status": 401,
        "code": "missing_credentials",
    }
    assert event.user_agent == "scanner/0.1" and event.correlation_id == response["X-Request-ID"]


async def test_a_bad_token_on_the_async_chat_view_is_audited_without_a_query_on_the_event_loop(events):
    response = await AsyncClient().post(
        "/v1/chat/completions",
        {"model": "x", "messages": []},
        content_type="application/json",
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert response.status_code == 401
    from asgiref.sync import sync_to_async

    [event] = await sync_to_async(events)("auth.unauthenticated")
    assert event.details["path"] == "/v1/chat/completions" and event.details["code"] == "token_not_valid"
    assert "not-a-token" not in str(event.details)


def test_a_missing_scope_is_audited_as_a_403_naming_the_caller(alice, client_for, events):
    response = client_for(alice).get("/v1/audit/events")
    assert response.status_code == 403
    [event] = events("auth.forbidden")
    assert (event.actor, event.location, event.organization_id) == ("alice", "demo", alice.organization_id)
    assert event.details["code"] == "insufficient_scope"


def test_a_429_is_audited_with_its_code_and_retry_after(alice, client_for, settings, events):
    register_model("stub", "http://127.0.0.1:9/v1")
    settings.MEDAI_QUEUE_MAX = 1
    client = client_for(alice)
    submit(client, "routine")
    refused = ask(client, "one more", "normal")
    assert refused.status_code == 429
    [event] = events("limit.rejected")
    assert event.actor == "alice" and event.details["code"] == "queue_full"
    assert event.details["retry_after"] == refused["Retry-After"]


def test_the_limit_hook_records_a_rejection_off_the_request_path(alice, api_key_for, events):
    _, principal = authenticate_bearer(api_key_for(alice))
    record_limit_rejection(principal, code="rate_limited", limit="key", retry_after=3, message="over the key's bucket")
    [event] = events("limit.rejected")
    assert (event.actor, event.api_key_id, event.outcome) == ("alice", principal.api_key_id, "denied")
    assert event.details == {
        "code": "rate_limited",
        "limit": "key",
        "http_status": 429,
        "retry_after": 3,
        "message": "over the key's bucket",
    }
