"""The admin exports the audit trail as CSV, streamed: the change list's current filter or a
selection; a cell a spreadsheet would run as a formula is defused; the export is itself audited;
nobody can add, change or delete an event in admin."""

from __future__ import annotations

import csv
import io

import pytest
from django.test import Client

from apps.accounts.models import User
from apps.audit.export import COLUMNS
from apps.audit.models import AuditEvent
from apps.audit.services import record_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(org) -> Client:
    root = User.objects.create_superuser("root", password="root-password-for-tests-7781", organization=org)
    client = Client()
    client.force_login(root)
    return client


def read_csv(response) -> list[dict[str, str]]:
    assert response.streaming and response["Content-Type"].startswith("text/csv")
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_the_filtered_change_list_exports_as_csv(admin_client, alice, bob):
    record_event("auth.login", actor=alice, location="demo", user_agent='=HYPERLINK("http://x")')
    record_event("auth.login", actor=bob, location="demo", outcome="failure")
    record_event("auth.logout", actor=alice, location="demo")
    response = admin_client.get("/admin/audit/auditevent/export.csv", {"action__exact": "auth.login"})
    rows = read_csv(response)
    assert list(rows[0]) == COLUMNS
    assert [(r["actor"], r["outcome"]) for r in rows] == [("alice", "success"), ("bob", "failure")]
    assert rows[0]["user_agent"].startswith("'=")  # not a formula
    [export] = AuditEvent.objects.filter(action="audit.export")
    assert export.actor == "root" and export.details["events"] == 2 and export.details["scope"] == "filter"


def test_selected_events_export_as_csv_from_the_action(admin_client, alice):
    first = record_event("auth.login", actor=alice)
    record_event("auth.logout", actor=alice)
    response = admin_client.post(
        "/admin/audit/auditevent/", {"action": "export_csv", "_selected_action": [str(first.seq)], "index": 0}
    )
    assert [r["seq"] for r in read_csv(response)] == [str(first.seq)]


def test_the_admin_is_read_only(admin_client, alice):
    event = record_event("auth.login", actor=alice)
    assert admin_client.get(f"/admin/audit/auditevent/{event.seq}/change/").status_code == 200  # view only
    assert admin_client.post(f"/admin/audit/auditevent/{event.seq}/change/", {"action": "x"}).status_code == 403
    assert admin_client.post(f"/admin/audit/auditevent/{event.seq}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/audit/auditevent/add/").status_code == 403
    listing = admin_client.get("/admin/audit/auditevent/", {"actor": "alice", "outcome__exact": "success"})
    assert listing.status_code == 200 and b"Export these events as CSV" in listing.content
    assert AuditEvent.objects.get(seq=event.seq).action == "auth.login"
