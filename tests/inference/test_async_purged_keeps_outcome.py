"""When a task's retention ends its content (prompt and result) is purged and the time recorded,
but its outcome stays: a purged COMPLETED task is still COMPLETED in its status, in the task
list and in admin; its result answers 410 ``result_purged`` saying when. EXPIRED means only a
task still queued at its deadline."""

from __future__ import annotations

import importlib
from datetime import timedelta

import pytest
from django.apps import apps
from django.utils import timezone

from apps.inference import queue
from apps.inference.models import InferenceTask
from tests.conftest import register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def model(db, stub_backend):
    register_model("stub-a", stub_backend)


def past_retention(task_id: str) -> object:
    task = InferenceTask.objects.get(id=task_id)
    swept = task.result_expires_at + timedelta(seconds=1)
    queue.expire_and_purge(swept)
    return swept


def test_a_completed_task_stays_completed_after_its_content_is_purged(client_for, alice):
    client = client_for(alice)
    task_id = submit(client, "What is a normal INR?")
    assert queue.run_task(task_id) == "completed"
    assert client.get(f"/v1/async/status/{task_id}").json()["content_purged_at"] is None
    swept = past_retention(task_id)

    task = InferenceTask.objects.get(id=task_id)
    assert (task.status, task.request, task.result, task.content_purged_at) == ("completed", None, None, swept)
    status = client.get(f"/v1/async/status/{task_id}").json()
    assert status["status"] == "completed" and status["content_purged_at"] is not None
    listed = client.get("/v1/async/tasks?status=completed").json()["results"]
    assert [(t["task_id"], t["status"]) for t in listed] == [(task_id, "completed")]
    assert listed[0]["content_purged_at"] == status["content_purged_at"]
    assert client.get("/v1/async/tasks?status=expired").json()["count"] == 0

    result = client.get(f"/v1/async/result/{task_id}")
    assert result.status_code == 410
    error = result.json()["error"]
    assert error["code"] == "result_purged"
    assert "completed" in error["message"] and swept.isoformat(timespec="seconds") in error["message"]


def test_failed_and_cancelled_tasks_keep_their_outcome_too(client_for, alice, settings):
    settings.MEDAI_BACKEND_RETRIES = 0
    client = client_for(alice)
    failed, cancelled = submit(client, "will fail"), submit(client, "will be cancelled")
    assert client.post(f"/v1/async/cancel/{cancelled}").status_code == 200
    InferenceTask.objects.filter(id=failed).update(request={"model": "", "agent_type": "NoSuchAgent", "payload": {}})
    assert queue.run_task(failed) == "failed"
    past_retention(failed)
    past_retention(cancelled)  # a cancelled task's prompt is kept for a retry until its retention ends
    statuses = {
        t["task_id"]: (t["status"], t["content_purged_at"] is not None)
        for t in client.get("/v1/async/tasks").json()["results"]
    }
    assert statuses == {failed: ("failed", True), cancelled: ("cancelled", True)}
    assert client.get(f"/v1/async/result/{failed}").json()["error"]["code"] != "result_purged"  # its error stays


def test_a_task_queued_past_its_deadline_is_the_only_expired_one(client_for, alice):
    client = client_for(alice)
    late = submit(client, "needed within a minute", deadline_s=60)
    queue.expire_and_purge(timezone.now() + timedelta(seconds=61))
    status = client.get(f"/v1/async/status/{late}").json()
    assert (status["status"], status["error"]["code"]) == ("expired", "deadline_exceeded")
    assert status["content_purged_at"] is None and status["result_expires_at"]  # kept for a retry, then purged
    past_retention(late)
    assert client.get(f"/v1/async/status/{late}").json()["content_purged_at"] is not None
    result = client.get(f"/v1/async/result/{late}")
    assert (result.status_code, result.json()["error"]["code"]) == (410, "task_expired")


def test_admin_shows_when_the_content_was_purged(admin_client, client_for, alice):
    task_id = submit(client_for(alice), "shown in admin")
    assert queue.run_task(task_id) == "completed"
    past_retention(task_id)
    page = admin_client.get("/admin/inference/inferencetask/?content=purged")
    assert page.status_code == 200
    assert b"Content purged at" in page.content and task_id.encode() in page.content
    assert task_id.encode() not in admin_client.get("/admin/inference/inferencetask/?content=kept").content


def test_the_migration_restores_the_outcome_of_tasks_purged_before(client_for, alice):
    client = client_for(alice)
    done, failed = submit(client, "answered"), submit(client, "failed")
    ended = timezone.now() - timedelta(hours=1)
    # what the old sweep left: expired, content gone, the rest of the record kept
    InferenceTask.objects.filter(id=done).update(status="expired", http_status=200, result_expires_at=ended)
    InferenceTask.objects.filter(id=failed).update(
        status="expired", error_code="backend_unavailable", result_expires_at=ended
    )
    migration = importlib.import_module("apps.inference.migrations.0007_task_content_purged_at")
    migration.restore_outcomes(apps, None)
    rows = dict(InferenceTask.objects.values_list("id", "status"))
    assert [rows[InferenceTask._meta.pk.to_python(t)] for t in (done, failed)] == ["completed", "failed"]
    assert InferenceTask.objects.get(id=done).content_purged_at == ended
