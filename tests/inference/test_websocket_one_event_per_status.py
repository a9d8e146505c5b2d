"""Each status change of a task reaches a subscriber exactly once over ``/ws/status/``, even when the
socket is in several of the groups the update goes to (its owner's ``user.<id>``, the task's
``task.<uuid>`` and the batch's ``batch.<uuid>`` it subscribed to): ``processing`` was sent once per
group, i.e. twice or three times."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from medai.asgi import application
from tests.conftest import register_model

pytestmark = pytest.mark.django_db(transaction=True)


def _submit_one_task_batch(token: str, backend: str) -> tuple[str, str]:
    from apps.accounts.services import authenticate_header
    from apps.inference import push, queue

    register_model("stub-a", backend)
    batch, tasks = queue.submit_batch(
        authenticate_header(f"Bearer {token}"),
        [{"agent_type": "Chat", "messages": [{"role": "user", "content": "What is a normal INR?"}]}],
    )
    assert push.flush(5)
    return str(batch.id), str(tasks[0].id)


def _run(task_id: str) -> str:
    from apps.inference import push, queue

    outcome = queue.run_task(task_id)
    assert push.flush(5)
    return outcome


async def _frames(ws: WebsocketCommunicator) -> list[dict]:
    frames = []
    while not await ws.receive_nothing(timeout=0.5):
        frames.append(await ws.receive_json_from())
    return frames


async def test_the_owner_subscribed_to_its_task_and_batch_sees_each_status_once(alice, token_for, stub_backend):
    token = await sync_to_async(token_for)(alice)
    ws = WebsocketCommunicator(application, "/ws/status/", subprotocols=["bearer", token])
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["type"] == "hello"
    batch_id, task_id = await sync_to_async(_submit_one_task_batch)(token, stub_backend)
    queued = await _frames(ws)
    assert [(f["data"]["task_id"], f["data"]["status"]) for f in queued] == [(task_id, "queued")]
    for kind, object_id in (("task", task_id), ("batch", batch_id)):
        await ws.send_json_to({"subscribe": {kind: object_id}})
        assert await ws.receive_json_from(timeout=5) == {"type": "subscribed", "data": {kind: object_id}}

    assert await sync_to_async(_run)(task_id) == "completed"
    frames = await _frames(ws)
    assert [(f["type"], f["data"]["task_id"], f["data"]["status"]) for f in frames] == [
        ("task.update", task_id, "processing"),
        ("task.update", task_id, "completed"),
    ]
    await ws.disconnect()


async def test_a_second_socket_of_the_owner_gets_its_own_copy(alice, token_for, stub_backend):
    """De-duplication is per socket: two sockets of one user each get every status once."""
    token = await sync_to_async(token_for)(alice)
    sockets = [WebsocketCommunicator(application, f"/ws/status/?token={token}") for _ in range(2)]
    for ws in sockets:
        assert (await ws.connect())[0]
        await ws.receive_json_from()
    _, task_id = await sync_to_async(_submit_one_task_batch)(token, stub_backend)
    await sockets[0].send_json_to({"subscribe": {"task": task_id}})
    for ws in sockets:
        await _frames(ws)
    assert await sync_to_async(_run)(task_id) == "completed"
    for ws in sockets:
        assert [f["data"]["status"] for f in await _frames(ws)] == ["processing", "completed"]
        await ws.disconnect()
