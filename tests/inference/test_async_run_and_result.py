"""A worker runs a queued task against the backend: status moves QUEUED → PROCESSING → COMPLETED,
the result comes back in the OpenAI shape with timings; exhausted backends fail it readably."""

from __future__ import annotations

import httpx
import pytest

from apps.inference import queue
from apps.inference.models import InferenceTask, QueueEntry
from tests.conftest import register_model
from tests.inference.queue_helpers import submit
from tests.support.servers import set_stub_mode

pytestmark = pytest.mark.django_db


def test_a_completed_task_answers_with_the_completion_and_timings(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    client = client_for(alice)
    task_id = submit(client, "What is a normal INR?", "high")
    status = client.get(f"/v1/async/status/{task_id}").json()
    assert (status["status"], status["priority"], status["position"]) == ("queued", "high", 1)
    assert client.get(f"/v1/async/result/{task_id}").status_code == 409

    assert queue.run_task(task_id) == "completed"
    result = client.get(f"/v1/async/result/{task_id}")
    assert result.status_code == 200
    body = result.json()
    assert body["model"] == "stub-a" and body["choices"][0]["message"]["content"] == "OK"
    assert body["medai"]["task_id"] == task_id and body["medai"]["attempts"] == 1
    task = InferenceTask.objects.get(id=task_id)
    assert task.model_name == "stub-a" and task.started_at and task.finished_at and task.result_expires_at
    assert task.queue_wait_ms is not None and task.inference_ms is not None
    listed = client.get("/v1/async/tasks?status=completed").json()
    assert [t["task_id"] for t in listed["results"]] == [task_id]


def test_the_result_is_written_once_even_if_delivered_again(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    task_id = submit(client_for(alice), "Delivered twice")
    assert queue.run_task(task_id) == "completed"
    first = InferenceTask.objects.get(id=task_id)
    assert queue.run_task(task_id) == "completed"  # a second delivery finds it finished and does nothing
    again = InferenceTask.objects.get(id=task_id)
    assert (again.attempts, again.finished_at) == (first.attempts, first.finished_at)


def test_a_task_whose_backends_all_fail_is_failed_with_a_readable_error(client_for, alice, stub_backend, settings):
    settings.MEDAI_BACKEND_RETRIES = 0
    register_model("stub-a", stub_backend)
    set_stub_mode(stub_backend, "error503")
    client = client_for(alice)
    task_id = submit(client, "Nobody can answer")
    assert queue.run_task(task_id) == "failed"
    status = client.get(f"/v1/async/status/{task_id}").json()
    assert status["status"] == "failed" and status["error"]["code"] == "backend_unavailable"
    assert "stub-a" in status["error"]["message"]
    assert client.get(f"/v1/async/result/{task_id}").status_code == 503


def test_queued_tasks_for_the_same_model_are_dispatched_together(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    register_model("stub-b", stub_backend, agents=("Billing",))
    client = client_for(alice)
    set_stub_mode(stub_backend, "slow", delay=0.3)
    same = [submit(client, f"same model {i}") for i in range(5)]
    other = submit(client, "other model", agent_type="Billing")
    assert queue.run_task(same[0]) == "completed"
    statuses = {str(k): v for k, v in InferenceTask.objects.values_list("id", "status")}
    assert [statuses[t] for t in same] == ["completed"] * 5
    assert statuses[other] == "queued"
    assert not QueueEntry.objects.filter(task_id__in=same[1:]).exists()  # the companions were acknowledged
    stats = httpx.get(stub_backend.removesuffix("/v1") + "/_stats", timeout=5).json()
    assert stats["max_in_flight"] > 1  # sent concurrently (up to the model's concurrency slots)
