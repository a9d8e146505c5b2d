"""The workflow API's answers to bad input and odd requests: a 400 naming the field (413 for a
document too large), 404 for a workflow that does not exist or is inactive, 403 without the
submit scope; nothing is queued by a refused run. The list shows the active workflows only."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.inference.models import InferenceTask, TaskBatch, Workflow, WorkflowRun
from apps.inference.workflows import runs
from tests.conftest import records_written, register_model

pytestmark = pytest.mark.django_db

URL = "/v1/workflows/discharge-summary/runs"


@pytest.fixture
def client(client_for, alice):
    register_model("stub", "http://127.0.0.1:9/v1", agents=("Clinical", "Documentation", "Billing"))
    runs.ensure_discharge_summary()
    return client_for(alice)


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "document"),
        ({"document": ""}, "document"),
        ({"document": "   "}, "document"),
        ({"document": 42}, "document"),
        ({"document": ["a note"]}, "document"),
        ({"document": "a\x00note"}, "document"),
        ({"document": "a note", "priority": "urgent"}, "priority"),
        ({"document": "a note", "priority": 3}, "priority"),
        ({"document": "a note", "deadline_s": 0}, "deadline_s"),
        ({"document": "a note", "deadline_s": -5}, "deadline_s"),
        ({"document": "a note", "deadline_s": "60"}, "deadline_s"),
        ({"document": "a note", "deadline_s": True}, "deadline_s"),
        ({"document": "a note", "deadline_s": 10**9}, "deadline_s"),
        ({"document": "a note", "model": "gpt-4"}, "model"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_queues_nothing(client, body, field):
    response = client.post(URL, body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}:")
    assert not WorkflowRun.objects.exists() and not InferenceTask.objects.exists()
    assert not TaskBatch.objects.exists()


def test_an_unknown_field_named_by_a_lone_surrogate_is_a_400_not_a_500(client):
    response = client.post(URL, data=b'{"document": "a note", "\\ud800": 1}', content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_parameter"


def test_a_body_that_is_not_an_object_is_a_400(client):
    response = client.post(URL, ["a note"], format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_a_document_too_large_is_a_413_naming_it(client):
    response = client.post(URL, {"document": "x" * (runs.DOCUMENT_MAX + 1)}, format="json")
    assert response.status_code == 413
    assert response.json()["error"]["param"] == "document"


def test_an_unknown_or_inactive_workflow_is_a_404(client):
    assert client.post("/v1/workflows/nope/runs", {"document": "a note"}, format="json").status_code == 404
    Workflow.objects.filter(name="discharge-summary").update(active=False)
    response = client.post(URL, {"document": "a note"}, format="json")
    assert response.status_code == 404 and response.json()["error"]["code"] == "workflow_not_found"
    assert client.get("/v1/workflows").json()["data"] == []


def test_a_name_no_workflow_can_have_is_a_404_not_a_500(client):
    # a NUL in a query is refused by PostgreSQL itself (the fuzz found it): such a name is never looked up
    for name in ("%00", "a%00b", "x" * 65, "%C3%A9t%C3%A9", "a%20b"):
        response = client.post(f"/v1/workflows/{name}/runs", {"document": "a note"}, format="json")
        assert response.status_code == 404, (name, response.content)
        assert response.json()["error"]["code"] == "workflow_not_found"


def test_an_auditor_may_not_start_a_run(client_for, audrey, client):
    response = client_for(audrey).post(URL, {"document": "a note"}, format="json")
    assert response.status_code == 403 and not WorkflowRun.objects.exists()


def test_an_odd_run_id_is_a_404(client):
    for run_id in ("not-a-uuid", "00000000-0000-4000-8000-000000000000", "x" * 300):
        response = client.get(f"/v1/workflows/runs/{run_id}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "workflow_run_not_found"


def test_the_list_shows_the_active_workflows_and_their_stages(client):
    body = client.get("/v1/workflows").json()
    [workflow] = body["data"]
    assert workflow["name"] == "discharge-summary" and workflow["object"] == "workflow"
    assert [(s["name"], s["agent_type"], s["stage"]) for s in workflow["steps"]] == [
        ("billing", "Billing", 0),
        ("clinical", "Clinical", 0),
        ("documentation", "Documentation", 0),
        ("merge", "Documentation", 1),
    ]


def test_reading_a_run_is_audited_and_the_document_never_shows_in_the_audit(client):
    created = client.post(URL, {"document": "Mrs. Garcia, chest pain", "priority": "low"}, format="json").json()
    body = client.get(f"/v1/workflows/runs/{created['id']}").json()
    assert body["priority"] == "low" and body["status"] == "queued" and body["result"] is None
    records_written()
    events = AuditEvent.objects.filter(action__startswith="workflow.run")
    assert set(events.values_list("action", flat=True)) == {"workflow.run.create", "workflow.run.read"}
    assert all("Garcia" not in str(e.details) for e in AuditEvent.objects.all())
    # at rest, the document is ciphertext
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT document FROM {WorkflowRun._meta.db_table}")
        [(stored,)] = cursor.fetchall()
    assert "Garcia" not in stored
