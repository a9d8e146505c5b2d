"""Workers claim and finish a collated group in bulk, and a worker whose model heads a deep queue
goes on with the next group of it; other work at the head stops that at once, and more urgent work
(a CRITICAL task for another model) is started by the draining worker itself. Each finished task gets its audit event, in one valid chain."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.audit.services import verify_chain
from apps.inference import queue
from apps.inference.models import InferenceTask, QueueEntry
from tests.conftest import register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_batches(monkeypatch, settings):
    from apps.gpu import policy

    monkeypatch.setattr(policy, "batch_size", lambda: 2)
    settings.MEDAI_QUEUE_DRAIN_SECONDS = 60


def _deliver() -> str:
    """What the broker hands a worker next (its entry leased, as in a real cluster), run, acknowledged."""
    from apps.inference.broker import PriorityBroker

    broker = PriorityBroker(list_key=queue.list_key())
    [(ack, _)] = broker._claim()
    task_id = str(QueueEntry.objects.get(pk=ack).task_id)
    state = queue.run_task(task_id)
    broker.acknowledge(ack)
    return state


def _statuses(ids: list[str]) -> list[str]:
    found = {str(k): v for k, v in InferenceTask.objects.filter(id__in=ids).values_list("id", "status")}
    return [found[i] for i in ids]


def test_a_worker_drains_its_model_until_other_work_heads_the_queue(client_for, alice, stub_backend, small_batches):
    register_model("stub-a", stub_backend)
    register_model("stub-b", stub_backend, agents=("Billing",))
    client = client_for(alice)
    first = [submit(client, f"a{i}") for i in range(5)]
    other = submit(client, "b", agent_type="Billing")
    later = [submit(client, f"a-late{i}") for i in range(2)]
    assert _deliver() == "completed"
    # at most 2 in flight; refills from the head while it is "a" (a4 may bring a-late0 along from the
    # head window), then "b" heads the queue and the worker stops
    assert _statuses(first) == ["completed"] * 5
    assert _statuses([other, later[1]]) == ["queued", "queued"]
    done = [t for t in first + later if _statuses([t]) == ["completed"]]
    assert set(QueueEntry.objects.values_list("task_id", flat=True)) == {
        t.id for t in InferenceTask.objects.filter(status="queued")
    }
    completes = AuditEvent.objects.filter(action="inference.complete")
    assert sorted(completes.values_list("object_id", flat=True)) == sorted(done)
    assert verify_chain().ok


def _low_then_urgent(client, stub_backend):
    """Six LOW tasks for stub-a; a worker takes the first; then a CRITICAL one for stub-b arrives."""
    from apps.inference.broker import PriorityBroker

    register_model("stub-a", stub_backend)
    register_model("stub-b", stub_backend, agents=("Billing",))
    low = [submit(client, f"low {i}", "low") for i in range(6)]
    broker = PriorityBroker(list_key=queue.list_key())
    [(ack, _)] = broker._claim()
    urgent = submit(client, "urgent", "critical", agent_type="Billing")
    return low, urgent, broker, ack


def test_a_critical_task_for_another_model_ends_collation_and_the_drain(client_for, alice, stub_backend, small_batches):
    low, urgent, _, ack = _low_then_urgent(client_for(alice), stub_backend)
    group, _ = queue._claim_group(str(QueueEntry.objects.get(pk=ack).task_id), None, 2)
    # low 0 is claimed alone: no companions while more urgent work for another model waits
    assert [str(c.task.id) for c in group] == [low[0]]
    assert _statuses([urgent] + low[1:]) == ["queued"] * 6


def test_a_worker_starts_more_urgent_work_at_once_beside_its_own(client_for, alice, stub_backend, small_batches):
    low, urgent, broker, ack = _low_then_urgent(client_for(alice), stub_backend)
    assert queue.run_task(str(QueueEntry.objects.get(pk=ack).task_id)) == "completed"
    broker.acknowledge(ack)
    # after low 0 the worker found the CRITICAL task at the head and ran it itself, before going on
    # with its own model from the head of the queue (strict order: urgent first, then low 1, ...)
    assert _statuses([urgent] + low) == ["completed"] * 7
    started = dict(InferenceTask.objects.filter(id__in=[urgent] + low).values_list("id", "started_at"))
    started = {str(k): v for k, v in started.items()}
    assert started[low[0]] <= started[urgent] <= started[low[1]]
    assert not QueueEntry.objects.exists()
    assert verify_chain().ok


def test_a_companion_claimed_again_elsewhere_is_not_overwritten(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    client = client_for(alice)
    ids = [submit(client, f"q{i}") for i in range(2)]
    group, state = queue._claim_group(ids[0], None, 2)
    assert state == "processing" and [str(c.task.id) for c in group] == ids
    assert [c.attempt for c in group] == [1, 1]
    # the lease ended and another worker claimed the companion again (attempt 2)
    InferenceTask.objects.filter(id=ids[1]).update(attempts=2)
    states = queue._finish_group(group, queue._execute_group(group))
    assert states == ["completed", "superseded"]
    assert InferenceTask.objects.get(id=ids[1]).status == "processing"
    assert AuditEvent.objects.filter(action="inference.complete").count() == 1


def test_work_the_broker_already_handed_out_ends_the_drain(client_for, alice, stub_backend, small_batches):
    from apps.inference.broker import PriorityBroker

    register_model("stub-a", stub_backend)
    register_model("stub-b", stub_backend, agents=("Billing",))
    client = client_for(alice)
    low = [submit(client, f"low {i}", "low") for i in range(6)]
    broker = PriorityBroker(list_key=queue.list_key())
    [(ack, _)] = broker._claim()  # a worker took low 0 ...
    urgent = submit(client, "urgent", "critical", agent_type="Billing")
    [(prefetched, _)] = broker._claim()  # ... and the cluster prefetched the urgent one for its next free worker
    assert str(QueueEntry.objects.get(pk=prefetched).task_id) == urgent
    assert queue.run_task(str(QueueEntry.objects.get(pk=ack).task_id)) == "completed"
    assert _statuses(low) == ["completed", "completed"] + ["queued"] * 4
