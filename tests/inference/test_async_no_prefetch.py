"""The broker does not hand out work while every worker of the cluster runs a task: a CRITICAL
task arriving then stays in the table (where a draining worker takes it at once) instead of
waiting in the cluster's local queue behind prefetched work."""

from __future__ import annotations

import os

import pytest
from django_q.conf import Conf

from apps.inference import broker, queue
from apps.inference.models import QueueEntry
from tests.conftest import register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_worker(monkeypatch):
    monkeypatch.setattr(Conf, "WORKERS", 1)
    monkeypatch.setattr(Conf, "POLL", 0.05)


def test_nothing_is_handed_out_while_every_worker_is_busy(client_for, alice, stub_backend, one_worker):
    register_model("stub-a", stub_backend)
    task_id = submit(client_for(alice), "Queued while the only worker is busy")
    pusher = broker.PriorityBroker(list_key=queue.list_key())
    with broker.worker_busy():
        assert broker.workers_busy() == 1
        assert pusher.dequeue() is None
        assert QueueEntry.objects.get(task_id=task_id).deliveries == 0  # not leased, still in the table
    assert broker.workers_busy() == 0
    delivered = pusher.dequeue()
    assert delivered and str(QueueEntry.objects.get(pk=delivered[0][0]).task_id) == task_id


def test_a_killed_worker_no_longer_counts_as_busy(one_worker):
    # a child process marks itself busy and dies without unmarking (as under SIGKILL)
    pid = os.fork()
    if pid == 0:  # the child shares the parent's array, as a forked django-q2 worker does
        try:
            busy = broker.worker_busy()
            busy.__enter__()  # and never leaves it
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert pid in list(broker._busy)
    assert broker.workers_busy() == 0
