"""Who sees an async task or batch: its owner, at the location it was submitted from, and no one
else. ``InferenceTask.objects.visible_to`` and ``TaskBatch.objects.visible_to`` state the rule once;
every read and cancel view, and the status websocket's subscriptions, go through them. Another
clinician of the same location (bob), one of another location (charlie), an auditor (audrey) and the
owner herself signed in at another location all get 404 (``*_not_found``), never a 403 that would
tell them the object exists."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from apps.accounts.services import authenticate_bearer
from apps.inference.models import InferenceTask, TaskBatch
from tests.conftest import register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db

QUESTION = {"agent_type": "Chat", "messages": [{"role": "user", "content": "alice's batch"}], "max_tokens": 4}


@pytest.fixture(autouse=True)
def model(db):
    register_model("stub", "http://127.0.0.1:9/v1")  # nothing runs here: the tasks stay queued


@pytest.fixture
def alice_elsewhere(alice, north):
    """Alice also works at the north clinic; a credential for it does not see her demo tasks."""
    alice.locations.add(north)
    return north


def _client_of(request, client_for, alice, who):
    """The client of persona ``who`` (created before alice's first request: her memberships are cached)."""
    if who == "alice_elsewhere":
        return client_for(alice, request.getfixturevalue("alice_elsewhere"))
    return client_for(request.getfixturevalue(who))


def _batch(client) -> str:
    response = client.post("/v1/async/submit-batch", {"requests": [QUESTION]}, format="json")
    assert response.status_code == 202, response.content
    return response.json()["batch_id"]


def test_the_owner_sees_her_task_and_batch(client_for, alice):
    client = client_for(alice)
    task_id, batch_id = submit(client, "alice's question"), _batch(client)
    assert client.get(f"/v1/async/status/{task_id}").json()["status"] == "queued"
    assert client.get(f"/v1/async/result/{task_id}").json()["error"]["code"] == "task_not_finished"
    assert client.get(f"/v1/async/batch-status/{batch_id}").json()["total"] == 1
    listed = {t["task_id"] for t in client.get("/v1/async/tasks").json()["results"]}
    assert task_id in listed
    assert client.post(f"/v1/async/cancel/{task_id}").json()["status"] == "cancelled"


@pytest.mark.parametrize("who", ["bob", "charlie", "audrey", "alice_elsewhere"])
def test_anyone_else_gets_404_from_every_read_view(request, client_for, alice, who):
    client = _client_of(request, client_for, alice, who)
    owner = client_for(alice)
    task_id, batch_id = submit(owner, "alice's question"), _batch(owner)

    for path in (f"/v1/async/status/{task_id}", f"/v1/async/result/{task_id}"):
        response = client.get(path)
        assert (response.status_code, response.json()["error"]["code"]) == (404, "task_not_found"), path
    response = client.get(f"/v1/async/batch-status/{batch_id}")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "batch_not_found")
    listed = client.get("/v1/async/tasks").json()
    assert listed["count"] == 0 and listed["results"] == []


@pytest.mark.parametrize("who", ["bob", "charlie", "alice_elsewhere"])
def test_anyone_else_cannot_cancel_the_task(request, client_for, alice, who):
    client = _client_of(request, client_for, alice, who)
    task_id = submit(client_for(alice), "alice's question")
    response = client.post(f"/v1/async/cancel/{task_id}")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "task_not_found")
    assert InferenceTask.objects.get(id=task_id).status == "queued"


def test_an_auditor_cannot_cancel_without_the_inference_scope(client_for, alice, audrey):
    task_id = submit(client_for(alice), "alice's question")
    assert client_for(audrey).post(f"/v1/async/cancel/{task_id}").status_code == 403  # the scope, before any lookup
    assert InferenceTask.objects.get(id=task_id).status == "queued"


def test_the_querysets_state_the_rule(client_for, token_for, alice, bob, charlie, audrey, alice_elsewhere):
    owner = client_for(alice)
    task_id, batch_id = submit(owner, "alice's question"), _batch(owner)

    def principal(user, location=None):
        return authenticate_bearer(token_for(user, location))[1]

    mine = principal(alice)
    assert InferenceTask.objects.visible_to(mine).filter(id=task_id).exists()
    assert TaskBatch.objects.visible_to(mine).filter(id=batch_id).exists()
    for other in (principal(bob), principal(charlie), principal(audrey), principal(alice, alice_elsewhere)):
        assert not InferenceTask.objects.visible_to(other).exists()
        assert not TaskBatch.objects.visible_to(other).exists()


@pytest.mark.django_db(transaction=True)
async def test_only_the_owner_subscribes_to_her_task_and_batch(alice, bob, charlie, audrey, token_for):
    from medai.asgi import application

    def setup() -> tuple[str, str]:
        from rest_framework.test import APIClient

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(alice)}")
        return submit(client, "alice's question"), _batch(client)

    task_id, batch_id = await sync_to_async(setup)()

    async def subscribe(user, kind: str, object_id: str) -> dict:
        ws = WebsocketCommunicator(application, f"/ws/status/?token={await sync_to_async(token_for)(user)}")
        assert (await ws.connect())[0]
        await ws.receive_json_from(timeout=5)  # hello
        await ws.send_json_to({"subscribe": {kind: object_id}})
        answer = await ws.receive_json_from(timeout=5)
        await ws.disconnect()
        return answer

    assert await subscribe(alice, "task", task_id) == {"type": "subscribed", "data": {"task": task_id}}
    assert await subscribe(alice, "batch", batch_id) == {"type": "subscribed", "data": {"batch": batch_id}}
    for other in (bob, charlie, audrey):
        for kind, object_id in (("task", task_id), ("batch", batch_id)):
            answer = await subscribe(other, kind, object_id)
            assert answer["type"] == "error" and answer["data"]["code"] == f"{kind}_not_found", (other, kind)
