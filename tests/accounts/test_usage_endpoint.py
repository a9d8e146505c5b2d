"""``GET /v1/usage``: requests and tokens per organization, location, user and model from the
durable records; a clinician sees their own, an admin or auditor their organization's (never
another organization's); a period or dates choose the window; bad parameters are a 400 naming them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import Location, Organization, User
from apps.inference.models import InferenceTask
from tests.conftest import PASSWORD
from tests.support.openapi import assert_matches

pytestmark = pytest.mark.django_db

S = InferenceTask.Status


def _record(user, location, model="stub-a", prompt=10, completion=5, status=S.COMPLETED, when=None):
    now = when or timezone.now()
    return InferenceTask.objects.create(
        mode=InferenceTask.Mode.SYNC,
        status=status,
        user=user,
        location=location,
        model_name=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        created_at=now,
        finished_at=now,
    )


@pytest.fixture
def admin_user(org, demo):
    user = User.objects.create_user("adele", password=PASSWORD, role=User.Role.ADMIN, organization=org)
    user.locations.add(demo)
    return user


@pytest.fixture
def records(alice, bob, charlie, demo, north):
    other_org = Organization.objects.create(name="Other Hospital")
    elsewhere = Location.objects.create(organization=other_org, code="elsewhere", name="Elsewhere")
    eve = User.objects.create_user("eve", password=PASSWORD, organization=other_org)
    eve.locations.add(elsewhere)
    _record(alice, demo)
    _record(alice, demo, model="big", prompt=100, completion=50)
    _record(alice, demo, prompt=0, completion=0, status=S.FAILED)  # never reached a model: not usage
    _record(alice, demo, prompt=7, completion=0, status=S.CANCELLED)  # the client left after the prompt: usage
    _record(alice, demo, when=timezone.now() - timedelta(days=40))  # an earlier month
    _record(bob, demo, prompt=1, completion=1)
    _record(charlie, north, prompt=2, completion=2)
    _record(eve, elsewhere, prompt=1000, completion=1000)


def test_a_clinician_sees_only_their_own_usage_per_model(client_for, alice, records):
    body = client_for(alice).get("/v1/usage").json()
    assert body["scope"] == "own"
    rows = {(r["user"], r["model"]): (r["requests"], r["total_tokens"]) for r in body["data"]}
    assert rows == {("alice", "big"): (1, 150), ("alice", "stub-a"): (2, 22)}
    assert body["totals"] == {"requests": 3, "prompt_tokens": 117, "completion_tokens": 55, "total_tokens": 172}


def test_an_auditor_or_admin_sees_their_organization_and_never_another(client_for, audrey, admin_user, records):
    for user in (audrey, admin_user):
        body = client_for(user).get("/v1/usage?group_by=location").json()
        assert body["scope"] == "organization"
        assert {r["location"]: r["requests"] for r in body["data"]} == {"demo": 4, "north": 1}


def test_grouping_by_organization_and_user(client_for, audrey, records):
    body = client_for(audrey).get("/v1/usage?group_by=organization,user").json()
    assert [(r["organization"], r["user"], r["requests"]) for r in body["data"]] == [
        ("Demo Hospital", "alice", 3),
        ("Demo Hospital", "bob", 1),
        ("Demo Hospital", "charlie", 1),
    ]


def test_dates_choose_the_window(client_for, alice, records):
    start = (timezone.now() - timedelta(days=45)).date().isoformat()
    end = (timezone.now() - timedelta(days=30)).date().isoformat()
    body = client_for(alice).get(f"/v1/usage?start={start}&end={end}").json()
    assert body["totals"]["requests"] == 1


def test_the_answer_lists_the_callers_quotas_with_their_use(client_for, alice, records, quota):
    quota(location="demo", period="day", requests=100)
    body = client_for(alice).get("/v1/usage?period=day").json()
    assert body["quotas"] == [
        {
            "scope": "location 'demo'",
            "period": "day",
            "max_requests": 100,
            "max_tokens": None,
            "used_requests": 0,
            "used_tokens": 0,
        }
    ]
    assert_matches("/v1/usage", "get", 200, body)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("period=week", "period"),
        ("group_by=ward", "group_by"),
        ("start=yesterday", "start"),
        ("start=2026-02-02&end=2026-02-01", "end"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(client_for, alice, query, param):
    response = client_for(alice).get(f"/v1/usage?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_usage_needs_a_credential_with_the_read_scope(client, alice, api_key_for):
    assert client.get("/v1/usage").status_code == 401
    secret = api_key_for(alice, scopes=["chat"])
    assert client.get("/v1/usage", HTTP_AUTHORIZATION=f"Bearer {secret}").status_code == 403
