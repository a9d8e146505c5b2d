"""Task updates are pushed in batches from one long-lived loop per process: a batch of tasks reaches
the owner's socket as one group message, unpacked by the consumer into one ``task.update`` frame
per task; groups nobody listens to are not sent to at all."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from medai.asgi import application
from tests.conftest import register_model

pytestmark = pytest.mark.django_db(transaction=True)


def _submit_batch(alice, token_for, n: int) -> tuple[str, list[str]]:
    from apps.accounts.services import authenticate_header
    from apps.inference import push, queue

    register_model("stub", "http://127.0.0.1:9/v1")
    principal = authenticate_header(f"Bearer {token_for(alice)}")
    before = push.pusher().sent_messages
    batch, tasks = queue.submit_batch(
        principal,
        [{"agent_type": "Chat", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(n)],
    )
    assert push.flush(5)
    return str(before), [str(t.id) for t in tasks]


async def test_a_batch_reaches_the_owner_as_one_message_and_one_frame_per_task(alice, token_for):
    from apps.inference import push

    token = await sync_to_async(token_for)(alice)
    ws = WebsocketCommunicator(application, f"/ws/status/?token={token}")
    assert (await ws.connect())[0]
    await ws.receive_json_from()  # hello
    before, task_ids = await sync_to_async(_submit_batch)(alice, token_for, 3)
    frames = [await ws.receive_json_from(timeout=5) for _ in task_ids]
    assert [(f["type"], f["data"]["task_id"], f["data"]["status"]) for f in frames] == [
        ("task.update", t, "queued") for t in task_ids
    ]
    assert await ws.receive_nothing(timeout=0.3)
    # only user.<id> has a listener: one group message for the three tasks, none to task./batch. groups
    assert push.pusher().sent_messages - int(before) == 1
    await ws.disconnect()


def test_updates_are_grouped_per_listened_group() -> None:
    from apps.inference.push import _groups

    updates = [
        (7, {"task_id": f"t{i}", "status": "queued", "priority": "low", "model": "", "batch_id": "b1"})
        for i in range(3)
    ]
    groups = _groups(updates)
    assert [len(groups[g]) for g in ("user.7", "batch.b1", "task.t0", "task.t1", "task.t2")] == [3, 3, 1, 1, 1]
