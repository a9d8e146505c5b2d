"""A queue entry is never removed before its task reaches a final state, whatever django-q2 does
with it (acknowledge after a success or a failure, ``fail`` on an unreadable package), and a task
left PROCESSING without a live lease is recovered: delivered again, failed as ``worker_lost`` once
its workers kept dying, or sent back to the queue by the sweep if its entry is gone."""

from __future__ import annotations

import pytest
from django_q.signing import SignedPackage

from apps.audit.models import AuditEvent
from apps.inference import queue
from apps.inference.broker import PriorityBroker
from apps.inference.models import InferenceTask, QueueEntry
from tests.conftest import register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def model(db, stub_backend):
    register_model("stub-a", stub_backend)


@pytest.fixture
def broker():
    return PriorityBroker(list_key=queue.list_key())


def test_acknowledging_a_task_that_has_not_ended_keeps_its_entry(client_for, alice, broker):
    task_id = submit(client_for(alice), "still running")
    [(ack_id, _)] = broker._claim()
    for status in ("processing", "queued"):  # its run raised before writing an outcome; it was sent back
        InferenceTask.objects.filter(id=task_id).update(status=status)
        broker.acknowledge(ack_id)  # what django-q2's monitor does after the task function returned or raised
        assert QueueEntry.objects.filter(pk=ack_id).exists(), status
    InferenceTask.objects.filter(id=task_id).update(status="completed")
    broker.acknowledge(ack_id)
    assert not QueueEntry.objects.filter(pk=ack_id).exists()


def test_an_unreadable_package_of_a_live_task_is_signed_again_and_delivered(client_for, alice, broker):
    task_id = submit(client_for(alice), "signed with an old key")
    QueueEntry.objects.filter(task_id=task_id).update(payload="not a signed package")
    [(ack_id, payload)] = broker._claim()
    with pytest.raises(Exception):  # noqa: B017 - django-q2's pusher: BadSignature, then broker.fail
        SignedPackage.loads(payload)
    broker.fail(ack_id)
    [(again, payload)] = broker._claim()
    assert again == ack_id and SignedPackage.loads(payload)["args"] == (task_id,)
    assert queue.run_task(task_id) == "completed"


def test_a_task_whose_workers_kept_dying_fails_as_worker_lost(client_for, alice, broker, settings):
    client = client_for(alice)
    task_id = submit(client, "kills every worker")
    for _ in range(queue.max_deliveries()):
        [(ack_id, _)] = broker._claim()  # delivered; the worker claims it, then dies (no outcome, no ack)
        queue._claim_group(task_id, None, 1)
        QueueEntry.objects.filter(pk=ack_id).update(locked_until=InferenceTask.objects.get(id=task_id).started_at)
    assert InferenceTask.objects.get(id=task_id).status == "processing"
    [(ack_id, _)] = broker._claim()  # the lease ended once more
    assert queue.run_task(task_id) == "failed"
    broker.acknowledge(ack_id)
    status = client.get(f"/v1/async/status/{task_id}").json()
    assert (status["status"], status["error"]["code"]) == ("failed", "worker_lost")
    assert f"started {queue.max_deliveries()} times" in status["error"]["message"]
    assert not QueueEntry.objects.exists()
    assert AuditEvent.objects.filter(action="inference.complete", object_id=task_id, outcome="failure").exists()


def test_a_live_task_that_lost_its_entry_is_sent_back_to_the_queue(client_for, alice, broker):
    client = client_for(alice)
    first, lost = submit(client, "first"), submit(client, "lost")
    InferenceTask.objects.filter(id=lost).update(status="processing")
    QueueEntry.objects.filter(task_id=lost).delete()  # what django-q2's ack of a failure used to do
    assert queue.recover_orphans() == 1
    assert queue.recover_orphans() == 0
    assert client.get(f"/v1/async/status/{lost}").json()["status"] == "queued"
    assert client.get(f"/v1/async/status/{lost}").json()["position"] == 2  # behind first, as before
    assert queue.run_task(lost, collate=False) == "completed"
    assert InferenceTask.objects.get(id=first).status == "queued"
