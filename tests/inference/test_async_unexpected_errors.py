"""An unexpected error while running a task ends it FAILED with a readable error and an audit event,
never stuck in PROCESSING: a payload that cannot be encoded, a result that cannot be written, a row
that cannot be read. The worker runs as django-q2 runs it (the broker delivers, ``run_task`` runs,
the monitor acknowledges). The payloads are written to the task rows directly: they stand for
whatever request validation lets through.
"""

from __future__ import annotations

import uuid

import pytest
from cryptography.fernet import Fernet, MultiFernet
from django.db import connection

from apps.audit.models import AuditEvent
from apps.inference import queue
from apps.inference.broker import PriorityBroker
from apps.inference.models import InferenceTask, InferenceTaskQuerySet, QueueEntry
from tests.conftest import register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db

UNENCODABLE = {"messages": [{"role": "user", "content": "lone surrogate \ud800"}], "max_tokens": 4}


@pytest.fixture(autouse=True)
def model(db, stub_backend):
    register_model("stub-a", stub_backend)


def poison(task_id: str, payload: dict | None = None) -> None:
    task = InferenceTask.objects.get(id=task_id)
    task.request = {**task.request, "payload": payload or UNENCODABLE}
    task.save(update_fields=["request"])


def delivered_and_run(task_id: str) -> tuple[str, int]:
    """The broker delivers the head entry (leased), the worker runs it, the monitor acknowledges it."""
    broker = PriorityBroker(list_key=queue.list_key())
    [(ack_id, _)] = broker._claim()
    assert str(QueueEntry.objects.get(pk=ack_id).task_id) == task_id
    state = queue.run_task(task_id)
    broker.acknowledge(ack_id)
    return state, ack_id


def test_a_payload_that_cannot_be_encoded_fails_the_task_readably(client_for, alice):
    client = client_for(alice)
    task_id = submit(client, "What is a normal INR?")
    poison(task_id)

    assert delivered_and_run(task_id)[0] == "failed"
    status = client.get(f"/v1/async/status/{task_id}").json()
    assert status["status"] == "failed" and status["finished_at"]
    assert status["error"]["code"] == "internal_error"
    assert "UnicodeEncodeError" in status["error"]["message"] and "Traceback" not in status["error"]["message"]
    result = client.get(f"/v1/async/result/{task_id}")
    assert result.status_code == 502 and result.json()["error"]["code"] == "internal_error"
    assert not QueueEntry.objects.filter(task_id=task_id).exists()  # acknowledged once it ended
    event = AuditEvent.objects.get(action="inference.complete", object_id=task_id)
    assert (event.outcome, event.details["status"], event.details["error_code"]) == (
        "failure",
        "failed",
        "internal_error",
    )
    # it is over: cancel says so, an identical request is a new task, the prompt is purged on time
    assert client.post(f"/v1/async/cancel/{task_id}").json()["error"]["code"] == "not_cancellable"
    again = client.post(
        "/v1/async/submit",
        {
            "agent_type": "Chat",
            "priority": "normal",
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "What is a normal INR?"}],
        },
        format="json",
    ).json()
    assert again["task_id"] != task_id and again["deduplicated"] is False
    task = InferenceTask.objects.get(id=task_id)
    queue.expire_and_purge(task.result_expires_at)
    assert InferenceTask.objects.get(id=task_id).request is None


def test_one_bad_task_in_a_collated_group_fails_alone(client_for, alice):
    client = client_for(alice)
    ids = [submit(client, f"question {i}") for i in range(3)]
    poison(ids[1])
    assert delivered_and_run(ids[0])[0] == "completed"
    statuses = dict(InferenceTask.objects.filter(id__in=ids).values_list("id", "status"))
    assert [statuses[InferenceTask._meta.pk.to_python(i)] for i in ids] == ["completed", "failed", "completed"]
    assert not QueueEntry.objects.exists()


def test_an_outcome_that_cannot_be_written_fails_the_task(client_for, alice, monkeypatch):
    client = client_for(alice)
    task_id = submit(client, "Its answer will not save")
    write = InferenceTaskQuerySet.write_outcomes
    calls = []

    def broken_once(self, tasks, *fence):
        calls.append(len(tasks))
        if len(calls) == 1:
            raise ValueError("cannot store this result")
        return write(self, tasks, *fence)

    monkeypatch.setattr(InferenceTaskQuerySet, "write_outcomes", broken_once)
    assert delivered_and_run(task_id)[0] == "failed"
    task = InferenceTask.objects.get(id=task_id)
    assert (task.status, task.error_code, task.result) == ("failed", "internal_error", None)
    assert "ValueError" in task.error_message and "cannot store" not in task.error_message  # the type, not the text
    assert not QueueEntry.objects.exists()


def test_an_unexpected_error_in_the_worker_loop_fails_its_tasks(client_for, alice, monkeypatch):
    client = client_for(alice)
    task_id = submit(client, "The worker trips over itself")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(queue.run, "_timed", broken)  # fails outside any task's own steps
    assert delivered_and_run(task_id)[0] == "failed"
    task = InferenceTask.objects.get(id=task_id)
    assert (task.status, task.error_code) == ("failed", "internal_error")
    assert not QueueEntry.objects.exists()


def test_a_task_that_cannot_be_claimed_fails_instead_of_staying_queued(client_for, alice, monkeypatch):
    client = client_for(alice)
    task_id, companion = submit(client, "Its claim breaks"), submit(client, "A companion")
    claim = queue._claim_group

    def broken_with_companions(task_id, model, limit):
        if limit > 1:
            raise ValueError("a companion's row is broken")
        return claim(task_id, model, limit)

    monkeypatch.setattr(queue.run, "_claim_group", broken_with_companions)
    assert delivered_and_run(task_id)[0] == "completed"  # run alone when its companions cannot be claimed

    def broken(*args):
        raise ValueError("its own row is broken")

    monkeypatch.setattr(queue.run, "_claim_group", broken)
    assert delivered_and_run(companion)[0] == "failed"
    status = client.get(f"/v1/async/status/{companion}").json()
    assert (status["status"], status["error"]["code"]) == ("failed", "internal_error")
    assert not QueueEntry.objects.exists()


def test_a_request_that_cannot_be_decrypted_fails_readably(client_for, alice):
    client = client_for(alice)
    task_id = submit(client, "Encrypted with a key that is gone")
    table, pk = InferenceTask._meta.db_table, InferenceTask._meta.pk
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET request = %s WHERE id = %s",
            ["not a token", pk.get_db_prep_value(pk.to_python(task_id), connection)],
        )
    assert delivered_and_run(task_id)[0] == "failed"
    status = client.get(f"/v1/async/status/{task_id}").json()
    assert (status["status"], status["error"]["code"]) == ("failed", "request_unreadable")
    assert not QueueEntry.objects.exists()


POISON = """
from apps.inference.models import InferenceTask
task = InferenceTask.objects.get(id=ids[0])
task.request = {**task.request, "payload": {"messages": [{"role": "user", "content": "x \\ud800"}], "max_tokens": 4}}
task.save(update_fields=["request"])
"""


@pytest.mark.django_db(transaction=True)
def test_a_real_cluster_fails_the_task_that_breaks_it_and_runs_the_next(cluster_env, tmp_path):
    from tests.inference.cluster_helpers import Store, qcluster, setup_tasks, stop, wait_for
    from tests.support.servers import start_stub

    stub, url = start_stub("ok")
    cluster = None
    try:
        store = Store(cluster_env["DATABASE_URL"])
        bad, good = setup_tasks(cluster_env, url, 2, then=POISON)
        cluster_env["MEDAI_Q_WORKERS"] = "1"
        cluster = qcluster(cluster_env, tmp_path / "cluster.log")
        wait_for(lambda: store.tasks()[good][0] == "completed", 90, "the second task to complete")
        wait_for(
            lambda: store.rows("SELECT count(*) FROM inference_queueentry") == [(0,)],
            30,
            "both deliveries to be acknowledged",
        )
        rows = {
            str(uuid.UUID(str(i))): rest
            for i, *rest in store.rows("SELECT id, status, error_code, error_message FROM inference_inferencetask")
        }
        status, code, message = rows[bad]
        # The error text is encrypted at rest (a backend's error may echo the prompt), under the keys
        # the cluster generated into its own var dir.
        keys = (tmp_path / "encryption-keys").read_text().strip().split(",")
        text = MultiFernet([Fernet(k.strip()) for k in keys]).decrypt(message.encode()).decode()
        assert (status, code) == ("failed", "internal_error") and "UnicodeEncodeError" in text
        assert store.rows("SELECT count(*) FROM audit_auditevent WHERE action = 'inference.complete'") == [(2,)]
    finally:
        if cluster is not None:
            stop(cluster)
        stub.stop()
