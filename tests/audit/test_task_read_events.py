"""Who saw what: reading a task's result (the PHI) is audited before the answer leaves, whether it
was shown or refused (not finished, purged); status reads, batch progress and task lists are
audited too (metadata), and so is a cancel, each with the request's purpose of use."""

from __future__ import annotations

import pytest

from apps.inference import queue
from tests.conftest import register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db

WHY = {"HTTP_X_PURPOSE_OF_USE": "TREAT"}


@pytest.fixture
def client(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    return client_for(alice)


def test_a_result_read_is_audited_when_refused_and_when_shown(client, events):
    task_id = submit(client, "What is the INR target?")
    assert client.get(f"/v1/async/result/{task_id}", **WHY).status_code == 409
    assert queue.run_task(task_id) == "completed"
    assert client.get(f"/v1/async/result/{task_id}", **WHY).status_code == 200
    refused, shown = events("inference.read_result")
    assert (refused.outcome, refused.details) == ("failure", {"status": "queued", "code": "task_not_finished"})
    assert (shown.outcome, shown.details) == ("success", {"status": "completed"})
    for event in (refused, shown):
        assert (event.actor, event.object_id, event.purpose_of_use) == ("alice", task_id, "TREAT")


def test_status_batch_and_list_reads_are_audited(client, events):
    task_id = submit(client, "status please")
    assert client.get(f"/v1/async/status/{task_id}", **WHY).status_code == 200
    batch = client.post(
        "/v1/async/submit-batch",
        {"requests": [{"agent_type": "Chat", "messages": [{"role": "user", "content": "x"}]}]},
        format="json",
    ).json()
    assert client.get(f"/v1/async/batch-status/{batch['batch_id']}", **WHY).status_code == 200
    assert client.get("/v1/async/tasks", **WHY).status_code == 200
    reads = events("inference.read_status")
    assert [(e.object_type, e.object_id) for e in reads] == [
        ("inference.inferencetask", task_id),
        ("inference.taskbatch", batch["batch_id"]),
        ("inference.inferencetask", ""),
    ]
    assert reads[2].details == {"count": 2}
    assert {e.purpose_of_use for e in reads} == {"TREAT"}


def test_a_cancel_is_audited(client, events):
    task_id = submit(client, "never mind")
    assert client.post(f"/v1/async/cancel/{task_id}", **WHY).status_code == 200
    [event] = events("inference.cancel")
    assert (event.actor, event.object_id, event.purpose_of_use) == ("alice", task_id, "TREAT")


def test_another_users_task_is_not_found_and_its_result_read_not_recorded_as_shown(client, charlie, client_for, events):
    task_id = submit(client, "mine")
    assert client_for(charlie).get(f"/v1/async/result/{task_id}").status_code == 404
    assert events("inference.read_result") == []
