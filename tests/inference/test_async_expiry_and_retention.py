"""A task still queued at its deadline expires; a result past MEDAI_RESULT_TTL is purged
(content gone, metadata kept) and answers 410."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.inference import queue
from apps.inference.models import InferenceTask, QueueEntry
from tests.conftest import register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def model(db):
    register_model("stub", "http://127.0.0.1:9/v1")


def test_a_task_queued_past_its_deadline_expires_and_leaves_the_queue(client_for, alice):
    client = client_for(alice)
    urgent = submit(client, "answer within a minute", deadline_s=60)
    patient = submit(client, "no deadline")
    assert queue.expire_and_purge(timezone.now() + timedelta(seconds=61))["expired"] == 1
    task = InferenceTask.objects.get(id=urgent)
    assert (task.status, task.error_code) == ("expired", "deadline_exceeded")
    assert task.request is not None and task.result_expires_at  # kept for a retry until its retention ends
    queue.expire_and_purge(task.result_expires_at + timedelta(seconds=1))
    assert InferenceTask.objects.get(id=urgent).request is None
    assert not QueueEntry.objects.filter(task_id=urgent).exists()
    assert InferenceTask.objects.get(id=patient).status == "queued"
    assert client.get(f"/v1/async/result/{urgent}").status_code == 410


def test_a_result_past_retention_is_purged_but_its_record_kept(client_for, alice, settings):
    client = client_for(alice)
    task_id = submit(client, "a question")
    done = timezone.now()
    InferenceTask.objects.filter(id=task_id).update(
        status="completed",
        result={"choices": [{"message": {"content": "an answer"}}]},
        finished_at=done,
        completion_tokens=7,
        result_expires_at=done + timedelta(seconds=settings.MEDAI_RESULT_TTL),
    )
    assert client.get(f"/v1/async/result/{task_id}").status_code == 200
    swept = done + timedelta(seconds=settings.MEDAI_RESULT_TTL + 1)
    assert queue.expire_and_purge(swept)["purged"] == 1
    task = InferenceTask.objects.get(id=task_id)
    assert (task.status, task.result, task.request, task.content_purged_at) == ("completed", None, None, swept)
    assert (task.completion_tokens, task.finished_at) == (7, done)
    result = client.get(f"/v1/async/result/{task_id}")
    assert (result.status_code, result.json()["error"]["code"]) == (410, "result_purged")
    assert client.get(f"/v1/async/status/{task_id}").json()["status"] == "completed"


def test_a_bad_deadline_is_refused_with_the_field_named(client_for, alice):
    response = client_for(alice).post(
        "/v1/async/submit",
        {"agent_type": "Chat", "deadline_s": -1, "messages": [{"role": "user", "content": "x"}]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "deadline_s"


def test_a_result_past_retention_answers_410_before_the_sweep_runs(client_for, alice):
    task_id = submit(client_for(alice), "swept later")
    InferenceTask.objects.filter(id=task_id).update(
        status="completed", result={"choices": []}, result_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert client_for(alice).get(f"/v1/async/result/{task_id}").status_code == 410


def test_the_sweep_is_scheduled_for_the_worker_cluster():
    from django_q.models import Schedule

    schedule = Schedule.objects.get(func="apps.inference.tasks.expire_tasks")
    assert (schedule.schedule_type, schedule.minutes) == (Schedule.MINUTES, 1)
