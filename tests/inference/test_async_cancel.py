"""Cancelling: a queued task is cancelled and leaves the queue; others' tasks answer 404."""

from __future__ import annotations

import pytest

from apps.inference.models import InferenceTask, QueueEntry
from tests.conftest import register_model
from tests.inference.queue_helpers import drain, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def model(db):
    register_model("stub", "http://127.0.0.1:9/v1")


def test_a_queued_task_is_cancelled_and_never_delivered(client_for, alice):
    client = client_for(alice)
    doomed, kept = submit(client, "cancel me"), submit(client, "keep me")
    response = client.post(f"/v1/async/cancel/{doomed}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert not QueueEntry.objects.filter(task_id=doomed).exists()
    assert drain() == [kept]
    assert client.get(f"/v1/async/result/{doomed}").status_code == 409


def test_a_running_task_cannot_be_cancelled(client_for, alice):
    client = client_for(alice)
    task_id = submit(client, "already running")
    InferenceTask.objects.filter(id=task_id).update(status="processing")
    response = client.post(f"/v1/async/cancel/{task_id}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_cancellable"


def test_another_users_or_locations_task_answers_404(client_for, alice, bob, charlie):
    task_id = submit(client_for(alice), "alice's question")
    for other in (bob, charlie):
        client = client_for(other)
        assert client.post(f"/v1/async/cancel/{task_id}").status_code == 404
        assert client.get(f"/v1/async/status/{task_id}").status_code == 404
        assert client.get(f"/v1/async/result/{task_id}").status_code == 404
    assert InferenceTask.objects.get(id=task_id).status == "queued"
