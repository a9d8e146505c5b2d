"""Task updates are pushed over the status websocket to the owner (``user.<id>``) and to
subscribers of ``task.<uuid>``; another location's task cannot be subscribed to."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from medai.asgi import application
from tests.conftest import register_model

pytestmark = pytest.mark.django_db(transaction=True)


def _submit_and_cancel_setup(alice, token_for):
    from apps.accounts.services import authenticate_header
    from apps.inference import queue

    register_model("stub", "http://127.0.0.1:9/v1")
    principal = authenticate_header(f"Bearer {token_for(alice)}")
    return str(
        queue.submit_task(principal, {"agent_type": "Chat", "messages": [{"role": "user", "content": "hi"}]}).task.id
    )


def _cancel(task_id: str, alice_principal_token: str) -> None:
    from apps.accounts.services import authenticate_bearer
    from apps.inference import queue
    from apps.inference.models import InferenceTask

    _, principal = authenticate_bearer(alice_principal_token)
    queue.cancel_task(principal, InferenceTask.objects.get(id=task_id))


async def test_a_subscriber_sees_its_task_change_status(alice, charlie, token_for):
    task_id = await sync_to_async(_submit_and_cancel_setup)(alice, token_for)
    token = await sync_to_async(token_for)(alice)
    ws = WebsocketCommunicator(application, f"/ws/status/?token={token}")
    assert (await ws.connect())[0]
    await ws.receive_json_from()  # hello
    await ws.send_json_to({"subscribe": {"task": task_id}})
    assert await ws.receive_json_from(timeout=5) == {"type": "subscribed", "data": {"task": task_id}}
    await sync_to_async(_cancel)(task_id, token)
    update = await ws.receive_json_from(timeout=5)
    assert update["type"] == "task.update"
    assert (update["data"]["task_id"], update["data"]["status"]) == (task_id, "cancelled")
    await ws.disconnect()

    other = WebsocketCommunicator(application, f"/ws/status/?token={await sync_to_async(token_for)(charlie)}")
    assert (await other.connect())[0]
    await other.receive_json_from()
    await other.send_json_to({"subscribe": {"task": task_id}})
    answer = await other.receive_json_from(timeout=5)
    assert answer["type"] == "error" and answer["data"]["code"] == "task_not_found"
    await other.disconnect()
