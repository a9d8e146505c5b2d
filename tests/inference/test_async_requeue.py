"""A queued task that admission turns away for now (its model at its concurrency limit, the GPU
policy holding new work) goes back to the queue in its place instead of failing."""

from __future__ import annotations

import pytest

from apps.gpu import slots
from apps.gpu.policy import ModelInfo
from apps.inference import queue
from apps.inference.broker import PriorityBroker
from apps.inference.models import InferenceTask, QueueEntry
from tests.conftest import register_model
from tests.gpu.conftest import publish_decision, reading
from tests.inference.queue_helpers import drain, submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def busy_model(settings, stub_backend):
    """A model at HIGH pressure (one request in flight at a time) whose one slot this test holds."""
    settings.MEDAI_GPU_STATE_CACHE_SECONDS = 0.0
    settings.MEDAI_BACKEND_RETRIES = 0
    ep = register_model("stub-a", stub_backend)
    publish_decision([reading(75)], [ModelInfo(ep.pk, ep.name, ep.rank, ep.vram_mb, None)], wait_seconds=0.2)
    lease = slots.try_acquire(ep.pk, 1)
    assert lease is not None
    yield lease
    lease.release()


def deliver() -> tuple[int, str]:
    """What django-q2's pusher does: claim the head entry (leased), return its id and task."""
    [(ack_id, _payload)] = PriorityBroker(list_key=queue.list_key())._claim()
    return ack_id, str(QueueEntry.objects.get(pk=ack_id).task_id)


def test_a_task_turned_away_as_busy_is_queued_again_in_its_place(client_for, alice, busy_model):
    client = client_for(alice)
    first, second = submit(client, "first"), submit(client, "second")
    ack_id, delivered = deliver()
    assert delivered == first

    assert queue.run_task(first) == "queued"  # it and its companion waited 0.2 s for the slot
    PriorityBroker(list_key=queue.list_key()).acknowledge(ack_id)  # django-q2 acknowledges the delivery

    for task_id in (first, second):
        task = InferenceTask.objects.get(id=task_id)
        assert (task.status, task.started_at, task.error_code) == ("queued", None, "")
    assert client.get(f"/v1/async/status/{first}").json()["position"] == 1
    assert drain() == [first, second]  # back at the head, in their old order


def test_a_requeued_task_completes_once_the_model_has_room(client_for, alice, busy_model):
    client = client_for(alice)
    task_id = submit(client, "Patient asks about ibuprofen")
    ack_id, _ = deliver()
    assert queue.run_task(task_id, collate=False) == "queued"
    PriorityBroker(list_key=queue.list_key()).acknowledge(ack_id)

    busy_model.release()
    ack_id, delivered = deliver()
    assert delivered == task_id
    assert queue.run_task(task_id) == "completed"
    result = client.get(f"/v1/async/result/{task_id}")
    assert result.status_code == 200 and result.json()["medai"]["attempts"] == 2
