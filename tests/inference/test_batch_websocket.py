"""A file batch's request counts live over the status websocket: its owner (and a socket that
subscribed to ``batch_…``) hears each line's ``task.update`` with the batch's counts, and a
``batch.update`` (OpenAI status, ``request_counts``, its files) at each change of state, sent on
commit. Only the owner may subscribe to a file batch, by either of its ids."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import register_model
from tests.inference.batch_helpers import line, made, run_worker
from tests.inference.ws_helpers import close as _close
from tests.inference.ws_helpers import frames_until as _until
from tests.inference.ws_helpers import no_position_reads
from tests.inference.ws_helpers import socket as _socket

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _no_position_reads(monkeypatch):
    no_position_reads(monkeypatch)  # places are not what these tests are about


async def test_the_owner_hears_the_request_counts_live_and_the_end(alice, stub_backend, client_for, token_for):
    def setup() -> tuple[dict[str, Any], str]:
        register_model("stub-a", stub_backend)
        return made(client_for(alice), [line(f"q{i}", f"question {i}") for i in range(3)]), token_for(alice)

    batch, token = await sync_to_async(setup)()
    ws = await _socket(token)
    await ws.send_json_to({"subscribe": {"batch": batch["id"]}})
    assert await ws.receive_json_from(timeout=5) == {"type": "subscribed", "data": {"batch": batch["id"]}}
    await sync_to_async(run_worker)()
    frames = await _until(ws, lambda f: f["type"] == "batch.update" and f["data"]["status"] == "completed")
    await _close(ws)
    updates = [f["data"] for f in frames if f["type"] == "task.update" and f["data"]["status"] == "completed"]
    assert len(updates) == 3
    assert sorted(u["batch"]["completed"] for u in updates) == [1, 2, 3]  # the counts, live, one per line
    assert {u["batch"]["total"] for u in updates} == {3}
    states = [f["data"] for f in frames if f["type"] == "batch.update"]
    assert [s["status"] for s in states][-2:] == ["finalizing", "completed"]
    final = states[-1]
    assert final["id"] == batch["id"] and final["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert final["output_file_id"].startswith("file-") and final["changed_at"]


async def test_only_the_owner_may_subscribe_to_a_file_batch(alice, bob, stub_backend, client_for, token_for, org, demo):
    from apps.accounts.models import User
    from tests.conftest import _user

    def setup() -> tuple[dict[str, Any], dict[str, str]]:
        register_model("stub-a", stub_backend)
        dana = _user("dana", User.Role.ADMIN, org, demo)
        return made(client_for(alice), [line("a")]), {u.username: token_for(u) for u in (alice, bob, dana)}

    batch, tokens = await sync_to_async(setup)()
    uuid_form = batch["id"].removeprefix("batch_")
    uuid_form = f"{uuid_form[:8]}-{uuid_form[8:12]}-{uuid_form[12:16]}-{uuid_form[16:20]}-{uuid_form[20:]}"
    for name, token in tokens.items():
        ws = await _socket(token)
        for batch_id in (batch["id"], uuid_form):
            await ws.send_json_to({"subscribe": {"batch": batch_id}})
            answer = await ws.receive_json_from(timeout=5)
            if name == "alice":
                assert answer["type"] == "subscribed", answer
            else:  # a colleague, or the location admin who sees the tasks: not the batch
                assert answer["type"] == "error" and answer["data"]["code"] == "batch_not_found", (name, answer)
        await _close(ws)
