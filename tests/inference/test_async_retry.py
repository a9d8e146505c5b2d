"""Retry: a failed, cancelled or expired task of one's own is queued again as a new task with the
same request (``POST /v1/async/retry/{id}``), audited; anyone else's task answers 404, a task that
has not ended so 409, one whose request was purged 410."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.inference import queue
from apps.inference.models import InferenceTask
from tests.conftest import _user, register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def model(db):
    register_model("stub", "http://127.0.0.1:9/v1")


def retry(client, task_id, **body):
    return client.post(f"/v1/async/retry/{task_id}", body, format="json")


def test_a_cancelled_task_is_queued_again_as_a_new_task_with_the_same_request(client_for, alice):
    client = client_for(alice)
    original = submit(client, "What is a normal INR?", "high", max_tokens=7)
    assert client.post(f"/v1/async/cancel/{original}").status_code == 200
    response = retry(client, original)
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["retry_of"] == original and body["task_id"] != original
    assert (body["status"], body["priority"], body["position"], body["deduplicated"]) == ("queued", "high", 1, False)
    old, new = InferenceTask.objects.get(id=original), InferenceTask.objects.get(id=body["task_id"])
    assert old.status == "cancelled"  # the original stays as it ended
    assert new.request["payload"]["messages"] == old.request["payload"]["messages"]
    assert new.request["payload"]["max_tokens"] == 7 and new.user_id == alice.id
    event = AuditEvent.objects.get(action="inference.retry")
    assert (event.object_id, event.details["retry_of"], event.details["retried_status"]) == (
        body["task_id"],
        original,
        "cancelled",
    )
    assert event.actor == "alice"


def test_a_failed_task_is_retried_at_the_priority_asked_for(client_for, alice, settings):
    settings.MEDAI_BACKEND_RETRIES = 0
    client = client_for(alice)
    failed = submit(client, "the backend is down", "low")
    assert queue.run_task(failed) == "failed"  # nothing listens on port 9
    response = retry(client, failed, priority="critical")
    assert response.status_code == 202, response.content
    assert response.json()["priority"] == "critical"


def test_an_expired_task_is_retried_with_its_deadline_counted_from_now(client_for, alice):
    client = client_for(alice)
    late = submit(client, "needed within a minute", deadline_s=60)
    queue.expire_and_purge(timezone.now() + timedelta(seconds=61))
    assert InferenceTask.objects.get(id=late).status == "expired"
    response = retry(client, late)
    assert response.status_code == 202, response.content
    new = InferenceTask.objects.get(id=response.json()["task_id"])
    assert new.deadline is not None and new.deadline > timezone.now() + timedelta(seconds=50)


@pytest.mark.parametrize("state", ["queued", "processing", "completed"])
def test_a_task_that_did_not_end_without_an_answer_cannot_be_retried(client_for, alice, state):
    client = client_for(alice)
    task_id = submit(client, f"a {state} task")
    InferenceTask.objects.filter(id=task_id).update(status=state)
    response = retry(client, task_id)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_retryable" and state in response.json()["error"]["message"]
    assert InferenceTask.objects.count() == 1 and not AuditEvent.objects.filter(action="inference.retry").exists()


def test_anyone_but_the_owner_gets_404(client_for, alice, bob, charlie, org, demo):
    client = client_for(alice)
    task_id = submit(client, "alice's question")
    client.post(f"/v1/async/cancel/{task_id}")
    admin = _user("adam", "admin", org, demo)  # sees the location's tasks, retries only their own
    for other in (bob, charlie, admin):
        response = retry(client_for(other), task_id)
        assert response.status_code == 404 and response.json()["error"]["code"] == "task_not_found"
    assert client_for(admin).get(f"/v1/async/status/{task_id}").status_code == 200
    assert InferenceTask.objects.count() == 1


def test_a_task_whose_request_was_purged_answers_410(client_for, alice):
    client = client_for(alice)
    task_id = submit(client, "purged soon")
    client.post(f"/v1/async/cancel/{task_id}")
    task = InferenceTask.objects.get(id=task_id)
    assert task.request is not None and task.content_purged_at is None  # kept for a retry until retention ends
    queue.expire_and_purge(task.result_expires_at + timedelta(seconds=1))
    response = retry(client, task_id)
    assert response.status_code == 410 and response.json()["error"]["code"] == "task_content_purged"


def test_bad_input_is_a_400_naming_the_field(client_for, alice):
    client = client_for(alice)
    task_id = submit(client, "bad priority")
    client.post(f"/v1/async/cancel/{task_id}")
    response = retry(client, task_id, priority="urgent")
    assert response.status_code == 400 and response.json()["error"]["param"] == "priority"
    assert client.post(f"/v1/async/retry/{task_id}", [1], format="json").status_code == 400
    assert client.post("/v1/async/retry/not-a-uuid", {}, format="json").status_code == 404


def test_an_auditor_without_the_submit_scope_is_refused(client_for, alice, audrey):
    task_id = submit(client_for(alice), "question")
    assert retry(client_for(audrey), task_id).status_code == 403


def test_the_task_list_filters_by_priority_and_batch(client_for, alice):
    client = client_for(alice)
    low = submit(client, "low one", "low")
    batch = client.post(
        "/v1/async/submit-batch",
        {"requests": [{"agent_type": "Chat", "messages": [{"role": "user", "content": f"b{i}"}]} for i in range(2)]},
        format="json",
    ).json()
    by_priority = client.get("/v1/async/tasks", {"priority": "low"}).json()["results"]
    assert [t["task_id"] for t in by_priority] == [low]
    in_batch = client.get("/v1/async/tasks", {"batch": batch["batch_id"]}).json()["results"]
    assert sorted(t["task_id"] for t in in_batch) == sorted(batch["task_ids"])
    assert client.get("/v1/async/tasks", {"priority": "urgent"}).json()["error"]["param"] == "priority"
    assert client.get("/v1/async/tasks", {"batch": "nope"}).json()["error"]["param"] == "batch"
