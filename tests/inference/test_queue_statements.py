"""What a delivered task's run sends to the database (counted, never timed): its claim is one
``UPDATE … RETURNING``, its outcome's write carries the attempt fence in its ``WHERE``, its audit
event names the submitter from the task itself (no user or location lookup), and a run that finds
the queue empty peeks at it once and claims nothing more."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.audit.services import verify_chain
from apps.inference import queue
from apps.inference.broker import PriorityBroker
from apps.inference.models import InferenceTask, QueueEntry
from tests.conftest import register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db


def _statements(queries: CaptureQueriesContext) -> list[str]:
    """The statements sent, without the savepoints of the test's own transaction."""
    return [
        re.sub(r"\s+", " ", q["sql"])
        for q in queries.captured_queries
        if not re.match(r"\s*(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)", q["sql"], re.I)
    ]


def _delivered() -> tuple[str, int]:
    [(ack, _)] = PriorityBroker(list_key=queue.list_key())._claim()  # its entry leased, as in a cluster
    return str(QueueEntry.objects.get(pk=ack).task_id), ack


def test_the_delivered_task_is_claimed_with_one_statement(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    task_id = submit(client_for(alice), "Claimed at once")
    delivered, _ = _delivered()
    assert delivered == task_id
    with CaptureQueriesContext(connection) as queries:
        group, state = queue._claim_group(task_id, None, 8, 24)
    assert state == "processing" and [str(c.task.id) for c in group] == [task_id]
    [claim] = _statements(queries)
    assert claim.upper().startswith("UPDATE") and " RETURNING " in claim.upper()
    task = InferenceTask.objects.get(id=task_id)
    assert (task.status, task.attempts, group[0].attempt) == ("processing", 1, 1)
    assert task.started_at is not None and task.queue_wait_ms is not None and task.queue_wait_ms >= 0
    assert group[0].task.request["payload"]["messages"][-1]["content"] == "Claimed at once"  # decrypted


def test_a_lone_run_writes_its_outcome_fenced_audits_without_lookups_and_peeks_once(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    task_id = submit(client_for(alice), "Alone in the queue")
    _delivered()
    with CaptureQueriesContext(connection) as queries:
        assert queue.run_task(task_id) == "completed"
    sent = _statements(queries)
    tables = [re.search(r'(?:FROM|UPDATE|INTO) "?(\w+)"?', s, re.I).group(1) for s in sent]  # type: ignore[union-attr]
    assert "accounts_user" not in tables and "accounts_location" not in tables
    # the claim, the fenced outcome, the audit append (chain head, event, head), one peek at the queue
    assert tables == [
        "inference_inferencetask",
        "inference_inferencetask",
        "audit_auditchainhead",
        "audit_auditevent",
        "audit_auditchainhead",
        "inference_queueentry",
    ], sent
    assert "attempts" in sent[1] and sent[1].upper().count("WHERE") == 1  # the fence in the UPDATE itself
    [event] = AuditEvent.objects.filter(action="inference.complete", object_id=task_id)
    assert (event.actor_id, event.actor, event.location) == (alice.pk, alice.username, "demo")
    assert event.organization_id == alice.organization_id
    assert verify_chain().ok


def test_a_task_submitted_before_the_names_were_kept_is_audited_with_them_looked_up(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    task_id = submit(client_for(alice), "From an older release")
    task = InferenceTask.objects.get(id=task_id)
    task.request = {k: v for k, v in task.request.items() if k != "who"}
    task.save(update_fields=["request"])
    _delivered()
    assert queue.run_task(task_id) == "completed"
    [event] = AuditEvent.objects.filter(action="inference.complete", object_id=task_id)
    assert (event.actor, event.location, event.organization_id) == (alice.username, "demo", alice.organization_id)


def test_a_delivered_task_claimed_again_elsewhere_is_not_overwritten(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    task_id = submit(client_for(alice), "Its lease ended")
    _delivered()
    group, _ = queue._claim_group(task_id, None, 1)
    InferenceTask.objects.filter(id=task_id).update(attempts=2)  # another worker claimed it again
    assert queue._finish_group(group, queue._execute_group(group)) == ["superseded"]
    task = InferenceTask.objects.get(id=task_id)
    assert (task.status, task.attempts, task.finished_at) == ("processing", 2, None)
    assert not AuditEvent.objects.filter(action="inference.complete").exists()
