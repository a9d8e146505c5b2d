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


# --- GET /v1/workflows/runs -------------------------------------------------------------------------


def _start(client, document="a note", **fields):
    response = client.post(URL, {"document": document, **fields}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["id"]


def test_the_runs_list_shows_the_callers_runs_newest_first_in_pages(client):
    ids = [_start(client, f"note {i}") for i in range(5)]
    page = client.get("/v1/workflows/runs?limit=2").json()
    assert page["object"] == "list" and page["has_more"] is True
    assert [r["id"] for r in page["data"]] == ids[::-1][:2]
    assert (page["first_id"], page["last_id"]) == (ids[4], ids[3])
    rest = client.get(f"/v1/workflows/runs?limit=10&after={page['last_id']}").json()
    assert [r["id"] for r in rest["data"]] == ids[::-1][2:] and rest["has_more"] is False
    run = rest["data"][0]
    assert run["workflow"] == "discharge-summary" and run["status"] == "queued"
    assert sorted(s["name"] for s in run["steps"]) == ["billing", "clinical", "documentation", "merge"]
    assert run["result"] is None
    # each item is the run as its own read answers it, but for the result
    assert run == {**client.get(f"/v1/workflows/runs/{run['id']}").json(), "result": None}


def test_the_runs_list_filters_by_workflow_and_status(client):
    first, second = _start(client), _start(client)
    WorkflowRun.objects.filter(pk=first).update(status=WorkflowRun.Status.FAILED, error_code="step_failed")
    failed = client.get("/v1/workflows/runs?status=failed").json()["data"]
    assert [r["id"] for r in failed] == [first] and failed[0]["error"]["code"] == "step_failed"
    queued = client.get("/v1/workflows/runs?status=queued&workflow=discharge-summary").json()["data"]
    assert [r["id"] for r in queued] == [second]
    assert client.get("/v1/workflows/runs?workflow=another").json()["data"] == []


def test_the_runs_list_never_shows_a_result_and_is_audited_without_content(client):
    run_id = _start(client, "Mrs. Garcia, chest pain")
    WorkflowRun.objects.filter(pk=run_id).update(status=WorkflowRun.Status.COMPLETED)
    run = WorkflowRun.objects.get(pk=run_id)
    run.result = {"content": "Summary for Mrs. Garcia"}
    run.save(update_fields=["result"])
    body = client.get("/v1/workflows/runs")
    assert body.status_code == 200 and "Garcia" not in body.content.decode()
    assert body.json()["data"][0]["result"] is None
    assert client.get(f"/v1/workflows/runs/{run_id}").json()["result"] == {"content": "Summary for Mrs. Garcia"}
    records_written()
    [event] = AuditEvent.objects.filter(action="workflow.run.list")
    assert event.details["count"] == 1 and "Garcia" not in str(event.details)


def test_the_runs_list_shows_only_what_the_caller_may_see(client, client_for, bob, charlie, demo):
    from apps.accounts.models import User

    mine = _start(client)
    bobs = _start(client_for(bob))
    assert [r["id"] for r in client.get("/v1/workflows/runs").json()["data"]] == [mine]
    assert [r["id"] for r in client_for(bob).get("/v1/workflows/runs").json()["data"]] == [bobs]
    assert client_for(charlie).get("/v1/workflows/runs").json()["data"] == []  # another location
    # another's run as the cursor is refused as if it did not exist
    response = client.get(f"/v1/workflows/runs?after={bobs}")
    assert response.status_code == 400 and response.json()["error"]["param"] == "after"
    boss = User.objects.create_user("boss", password="pw-12345678", role=User.Role.ADMIN, organization=bob.organization)
    boss.locations.add(demo)
    assert {r["id"] for r in client_for(boss).get("/v1/workflows/runs").json()["data"]} == {mine, bobs}


@pytest.mark.parametrize(
    "query, field",
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=two", "limit"),
        ("status=done", "status"),
        ("workflow=a%00b", "workflow"),
        ("workflow=" + "x" * 65, "workflow"),
        ("after=not-an-id", "after"),
        ("after=00000000-0000-4000-8000-000000000000", "after"),
    ],
)
def test_a_bad_runs_list_parameter_is_a_400_naming_it(client, query, field):
    response = client.get(f"/v1/workflows/runs?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == field
