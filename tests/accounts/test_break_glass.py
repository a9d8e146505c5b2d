"""Break-glass: an admin grants a user time-limited access to another location with a mandatory
reason; the user may work there only during the window; every action under it is marked in the
audit; its start raises an alert (a CRITICAL log line, a Prometheus counter, an audit event)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from apps.accounts.breakglass import BreakGlassError, grant_break_glass, revoke_break_glass
from apps.accounts.models import BreakGlassGrant
from apps.audit.models import AuditEvent
from tests.accounts.conftest import login, me
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

REASON = "Cardiac arrest in north ED; attending unavailable"


@pytest.fixture
def grant(alice, north, admin_user) -> BreakGlassGrant:
    """Alice (a member of demo only) may work at north for two hours."""
    return grant_break_glass(alice, north, reason=REASON, hours=2, granted_by=admin_user)


def granted_total() -> float:
    return REGISTRY.get_sample_value("medai_break_glass_total", {"event": "granted"}) or 0.0


def test_without_a_grant_another_location_is_forbidden(alice, north):
    assert login("alice", PASSWORD, "north").status_code == 403


def test_during_the_window_the_user_logs_in_and_works_there(grant):
    answer = login("alice", PASSWORD, "north")
    assert answer.status_code == 200, answer.content
    token = answer.json()["access_token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert client.get("/v1/auth/me").json()["location_id"] == "north"


def test_a_break_glass_token_ends_with_the_window(grant, later):
    token = login("alice", PASSWORD, "north").json()["access_token"]
    assert me(token) == 200
    later(timedelta(hours=2, seconds=1))
    assert me(token) == 401
    assert login("alice", PASSWORD, "north").status_code == 403


def test_ending_the_grant_ends_its_tokens_at_once(grant, admin_user):
    session = login("alice", PASSWORD, "north").json()
    assert me(session["access_token"]) == 200
    revoke_break_glass(grant, actor=admin_user)
    assert me(session["access_token"]) == 401
    refreshed = APIClient().post("/v1/auth/refresh", {"refresh_token": session["refresh_token"]}, format="json")
    assert refreshed.status_code == 401


def test_every_action_under_it_is_marked_in_the_audit(grant):
    session = login("alice", PASSWORD, "north").json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {session['access_token']}")
    assert client.post("/v1/auth/logout", {}, format="json").status_code == 204
    for action in ("auth.login", "auth.logout"):
        event = AuditEvent.objects.get(action=action, location="north")
        assert event.details["break_glass"] == grant.pk, action


def test_its_start_raises_an_alert(alice, north, admin_user, caplog, django_capture_on_commit_callbacks):
    before = granted_total()
    with caplog.at_level(logging.WARNING, logger="medai.security"), django_capture_on_commit_callbacks(execute=True):
        grant = grant_break_glass(alice, north, reason=REASON, hours=1, granted_by=admin_user)
    alerts = [r for r in caplog.records if "alert=break_glass_start" in r.getMessage()]
    assert len(alerts) == 1 and alerts[0].levelno == logging.CRITICAL
    assert f"grant={grant.pk}" in alerts[0].getMessage() and REASON not in alerts[0].getMessage()
    assert granted_total() == before + 1
    event = AuditEvent.objects.get(action="breakglass.grant")
    assert event.details["reason"] == REASON and event.details["break_glass"] == grant.pk


@pytest.mark.parametrize("reason", ["", "   ", "urgent"])
def test_a_reason_is_mandatory(alice, north, reason):
    with pytest.raises(BreakGlassError, match="reason"):
        grant_break_glass(alice, north, reason=reason, hours=1)


def test_the_window_is_bounded(alice, north):
    with pytest.raises(BreakGlassError, match="hours"):
        grant_break_glass(alice, north, reason=REASON, hours=BreakGlassGrant.MAX_HOURS + 1)


def test_the_admin_grants_it_with_a_reason_and_refuses_one_without(admin_client, alice, north):
    refused = admin_client.post(
        "/admin/accounts/breakglassgrant/add/", {"user": alice.pk, "location": north.pk, "reason": "", "hours": 2}
    )
    assert refused.status_code == 200 and not BreakGlassGrant.objects.exists()
    made = admin_client.post(
        "/admin/accounts/breakglassgrant/add/", {"user": alice.pk, "location": north.pk, "reason": REASON, "hours": 2}
    )
    assert made.status_code == 302, made.content
    grant = BreakGlassGrant.objects.get()
    assert grant.granted_by is not None and grant.reason == REASON
    assert login("alice", PASSWORD, "north").status_code == 200


@pytest.mark.django_db(transaction=True)  # the chat record is written by the background writer's own connection
def test_inference_under_it_is_marked_in_its_audit_events(grant):
    from tests.conftest import records_written, register_model

    register_model("stub-a", "http://127.0.0.1:9/v1", agents=("Chat",))
    token = login("alice", PASSWORD, "north").json()["access_token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    messages = [{"role": "user", "content": "Dose of adrenaline in arrest?"}]
    submitted = client.post("/v1/async/submit", {"agent_type": "Chat", "messages": messages}, format="json")
    assert submitted.status_code == 202, submitted.content
    client.post("/v1/chat/completions", {"model": "Chat", "messages": messages}, format="json")  # no backend: fails
    records_written()
    assert AuditEvent.objects.get(action="inference.submit").details["break_glass"] == grant.pk
    assert AuditEvent.objects.get(action="inference.complete").details["break_glass"] == grant.pk


@pytest.mark.django_db
def test_an_async_task_submitted_under_it_is_marked_when_the_worker_completes_it(grant, stub_backend):
    from apps.inference import queue
    from tests.conftest import register_model

    register_model("stub-a", stub_backend, agents=("Chat",))
    token = login("alice", PASSWORD, "north").json()["access_token"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_X_PURPOSE_OF_USE="ETREAT")
    body = {"model": "stub-a", "max_tokens": 4, "messages": [{"role": "user", "content": "Dose in arrest?"}]}
    submitted = client.post("/v1/async/submit", body, format="json")
    assert submitted.status_code == 202, submitted.content
    task_id = submitted.json()["task_id"]
    assert queue.run_task(task_id) == "completed"  # the worker: no request, no Principal of the caller's
    done = AuditEvent.objects.get(action="inference.complete", object_id=task_id)
    assert done.details["break_glass"] == grant.pk and done.purpose_of_use == "ETREAT"
    assert (done.actor, done.location) == ("alice", "north")
