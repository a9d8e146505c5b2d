"""A batch is queued all or none and reports its progress as its tasks finish."""

from __future__ import annotations

import pytest

from apps.inference import queue
from apps.inference.models import InferenceTask, TaskBatch
from tests.conftest import register_model

pytestmark = pytest.mark.django_db


def _requests(n: int) -> list[dict]:
    return [
        {"agent_type": "Chat", "messages": [{"role": "user", "content": f"question {i}"}], "priority": "low"}
        for i in range(n)
    ]


def test_batch_progress_counts_finished_tasks(client_for, alice, charlie, stub_backend):
    register_model("stub-a", stub_backend)
    client = client_for(alice)
    response = client.post("/v1/async/submit-batch", {"requests": _requests(4)}, format="json")
    assert response.status_code == 202
    batch_id, task_ids = response.json()["batch_id"], response.json()["task_ids"]
    assert len(task_ids) == 4
    progress = client.get(f"/v1/async/batch-status/{batch_id}").json()
    assert (progress["total"], progress["queued"], progress["progress_percent"]) == (4, 4, 0.0)

    queue.run_task(task_ids[0], collate=False)
    client.post(f"/v1/async/cancel/{task_ids[1]}")
    progress = client.get(f"/v1/async/batch-status/{batch_id}").json()
    assert (progress["completed"], progress["cancelled"], progress["queued"]) == (1, 1, 2)
    assert progress["progress_percent"] == 50.0
    assert client_for(charlie).get(f"/v1/async/batch-status/{batch_id}").status_code == 404


def test_a_batch_with_one_bad_request_queues_nothing(client_for, alice):
    register_model("stub-a", "http://127.0.0.1:9/v1")
    requests = _requests(3)
    requests[2]["messages"] = []
    response = client_for(alice).post("/v1/async/submit-batch", {"requests": requests}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith("requests[2]")
    assert InferenceTask.objects.count() == TaskBatch.objects.count() == 0


def test_a_batch_larger_than_the_limit_is_refused(client_for, alice, settings):
    register_model("stub-a", "http://127.0.0.1:9/v1")
    settings.MEDAI_BATCH_MAX = 2
    response = client_for(alice).post("/v1/async/submit-batch", {"requests": _requests(3)}, format="json")
    assert response.status_code == 413
