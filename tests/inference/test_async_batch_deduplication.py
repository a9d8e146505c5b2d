"""A batch is written in bulk but de-duplicated per item, like single submits: an item identical to
a live or retained task of the caller's, or to an earlier item of the batch, is answered with that
task, and the batch's progress counts it; its items keep their order in the queue."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.audit.services import verify_chain
from apps.inference import queue
from apps.inference.models import InferenceTask, QueueEntry
from tests.conftest import register_model
from tests.inference.queue_helpers import drain, submit

pytestmark = pytest.mark.django_db


def _item(text: str, priority: str = "normal") -> dict:
    return {
        "agent_type": "Chat",
        "messages": [{"role": "user", "content": text}],
        "priority": priority,
        "max_tokens": 4,
    }


def test_batch_items_reuse_identical_tasks_and_progress_counts_them(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    client = client_for(alice)
    earlier = submit(client, "asked before")
    response = client.post(
        "/v1/async/submit-batch",
        {"requests": [_item("asked before"), _item("new one"), _item("new one"), _item("another")]},
        format="json",
    )
    assert response.status_code == 202
    batch_id, ids = response.json()["batch_id"], response.json()["task_ids"]
    assert ids[0] == earlier and ids[1] == ids[2] and len(set(ids)) == 3
    assert InferenceTask.objects.count() == QueueEntry.objects.count() == 3
    progress = client.get(f"/v1/async/batch-status/{batch_id}").json()
    assert (progress["total"], progress["queued"]) == (3, 3)
    queue.run_task(earlier, collate=False)
    progress = client.get(f"/v1/async/batch-status/{batch_id}").json()
    assert (progress["completed"], progress["queued"], progress["progress_percent"]) == (1, 2, 33.3)


def test_a_batch_never_reuses_a_colleagues_task(client_for, alice, bob):
    register_model("stub-a", "http://127.0.0.1:9/v1")
    theirs = submit(client_for(bob), "same words")
    ids = (
        client_for(alice)
        .post("/v1/async/submit-batch", {"requests": [_item("same words")]}, format="json")
        .json()["task_ids"]
    )
    assert ids != [theirs]


def test_a_batch_is_queued_in_item_order_within_a_level_and_audited_once(client_for, alice):
    register_model("stub-a", "http://127.0.0.1:9/v1")
    client = client_for(alice)
    items = [_item(f"q{i}", "low" if i % 2 else "high") for i in range(10)]
    ids = client.post("/v1/async/submit-batch", {"requests": items}, format="json").json()["task_ids"]
    assert drain() == ids[0::2] + ids[1::2]  # HIGH first, each level in item order
    assert AuditEvent.objects.filter(action="inference.submit_batch").count() == 1
    assert verify_chain().ok


def test_a_batch_of_only_known_requests_is_accepted_even_past_the_queue_limit(client_for, alice, settings):
    register_model("stub-a", "http://127.0.0.1:9/v1")
    client = client_for(alice)
    known = submit(client, "known", "low")
    settings.MEDAI_QUEUE_MAX = 1
    submit(client, "fills the queue", "high")
    response = client.post("/v1/async/submit-batch", {"requests": [_item("known", "low")]}, format="json")
    assert response.status_code == 202 and response.json()["task_ids"] == [known]
    assert (
        client.post("/v1/async/submit-batch", {"requests": [_item("unknown", "low")]}, format="json").status_code == 429
    )
