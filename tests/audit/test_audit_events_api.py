"""``GET /v1/audit/events``: the auditor reads the audit trail of their own organization, filtered
by user, location, action, outcome, time and correlation id, a page at a time (a cursor), with
errors in the OpenAI shape; a clinician gets 403; another organization's events never show; the
search itself is audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import Location, Organization, User
from apps.audit.services import new_event, record_event, record_events
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def trail(alice, bob, charlie, audrey):
    """Events of the Demo Hospital (alice and bob at demo, charlie at north) and of another one."""
    other_org = Organization.objects.create(name="Other Hospital")
    other_loc = Location.objects.create(organization=other_org, code="elsewhere", name="Elsewhere")
    olga = User.objects.create_user("olga", password=PASSWORD, role=User.Role.CLINICIAN, organization=other_org)
    olga.locations.add(other_loc)
    old = timezone.now() - timedelta(days=3)
    record_events(
        [
            new_event("auth.login", actor=alice, location="demo", correlation_id="c-1", created_at=old),
            new_event("inference.complete", actor=alice, location="demo", correlation_id="c-1"),
            new_event("auth.login", actor=bob, location="demo", outcome="failure", correlation_id="c-2"),
            new_event("inference.read_result", actor=charlie, location="north", correlation_id="c-3"),
            new_event("auth.login", actor=olga, location="elsewhere", correlation_id="c-4"),
        ]
    )


def rows(client, **params) -> list[tuple[str, str]]:
    response = client.get("/v1/audit/events", params)
    assert response.status_code == 200, response.content
    return [(e["actor"]["username"], e["action"]) for e in response.json()["data"]]


def test_the_auditor_sees_their_organizations_events_newest_first(trail, audrey, client_for):
    assert rows(client_for(audrey)) == [
        ("charlie", "inference.read_result"),
        ("bob", "auth.login"),
        ("alice", "inference.complete"),
        ("alice", "auth.login"),
    ]


def test_filters_by_user_location_action_outcome_correlation_and_time(trail, audrey, client_for):
    client = client_for(audrey)
    assert rows(client, user="alice") == [("alice", "inference.complete"), ("alice", "auth.login")]
    assert rows(client, location="north") == [("charlie", "inference.read_result")]
    assert rows(client, action="auth.login") == [("bob", "auth.login"), ("alice", "auth.login")]
    assert rows(client, action="inference.*", order="asc") == [
        ("alice", "inference.complete"),
        ("charlie", "inference.read_result"),
    ]
    assert rows(client, outcome="failure") == [("bob", "auth.login")]
    assert rows(client, correlation_id="c-1", order="asc") == [("alice", "auth.login"), ("alice", "inference.complete")]
    yesterday = (timezone.now() - timedelta(days=1)).isoformat()
    assert ("alice", "auth.login") not in rows(client, since=yesterday)
    assert rows(client, until=yesterday) == [("alice", "auth.login")]
    assert rows(client, user="olga") == []  # another organization's


def test_pages_follow_a_cursor(trail, audrey, client_for):
    client = client_for(audrey)
    first = client.get("/v1/audit/events", {"limit": 3}).json()
    assert len(first["data"]) == 3 and first["has_more"] is True
    rest = client.get("/v1/audit/events", {"limit": 3, "after": first["last_id"]}).json()
    assert [e["actor"]["username"] for e in rest["data"]] == ["alice"] and rest["has_more"] is False
    assert first["object"] == "list" and first["data"][0]["object"] == "audit.event"


@pytest.mark.parametrize(
    "params, param",
    [
        ({"since": "yesterday"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "9999"}, "limit"),
        ({"after": "x"}, "after"),
        ({"outcome": "maybe"}, "outcome"),
        ({"order": "sideways"}, "order"),
        ({"actor": "alice"}, "actor"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(trail, audrey, client_for, params, param):
    response = client_for(audrey).get("/v1/audit/events", params)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_a_clinician_gets_403_in_the_openai_shape(trail, alice, client_for):
    response = client_for(alice).get("/v1/audit/events")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def test_every_search_is_itself_audited(trail, audrey, client_for, events):
    client_for(audrey).get("/v1/audit/events", {"user": "alice"})
    [read] = events("audit.read")
    assert read.actor == "audrey" and read.details == {"filters": {"user": "alice"}, "events": 2}


def test_an_event_without_an_organization_is_for_the_admin_only(audrey, client_for):
    record_event("auth.login", outcome="failure", details={"username": "nobody"})
    assert rows(client_for(audrey), action="auth.login") == []
