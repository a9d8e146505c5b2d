"""Who sees what, endpoint by endpoint and over every websocket, across two organizations.

Personas: alice and bob are clinicians at ``demo`` (Demo Hospital); dana is demo's location admin;
audrey is demo's auditor; carol is a clinician at ``east`` of another organization (Eastside
Clinic). alice owns a queued task, a completed one and a batch; carol owns a queued task.

The rule (``visible_to``, the one queryset of every view and consumer): a clinician sees their own
tasks, a location admin every task of the location, an auditor none (the audit is theirs); another
user's or location's object answers 404, never 403 (that would confirm it exists). Aggregates
(``/v1/async/health``, a task's ``position``, ``/v1/usage``) count only what the caller may see.
``test_every_v1_endpoint_is_in_this_table`` fails when an endpoint is added without a row here.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from apps.accounts.models import Location, Organization, User
from apps.accounts.services import authenticate_header
from apps.inference import queue
from apps.inference.models import InferenceTask
from tests.conftest import _user, records_written, register_model

PERSONAS = ("alice", "bob", "dana", "audrey", "carol")
SEES_ALICES = {"alice", "dana"}  # the owner and the location admin
CHAT = {"agent_type": "Chat", "messages": [{"role": "user", "content": "Mrs. Garcia, chest pain"}], "max_tokens": 4}


@pytest.fixture(autouse=True)
def _fast_passwords(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # five personas a test


@pytest.fixture
def east(db) -> Location:
    other = Organization.objects.create(name="Eastside Clinic")
    return Location.objects.create(organization=other, code="east", name="Eastside ward")


@pytest.fixture
def carol(east) -> User:
    return _user("carol", User.Role.CLINICIAN, east.organization, east)


@pytest.fixture
def dana(org, demo) -> User:
    return _user("dana", User.Role.ADMIN, org, demo)


@pytest.fixture
def world(alice, bob, dana, audrey, carol, token_for) -> dict[str, Any]:
    """The objects, and each persona's token."""
    register_model("stub", "http://127.0.0.1:9/v1")  # nothing runs: queued tasks stay queued
    tokens = {u.username: token_for(u) for u in (alice, bob, dana, audrey, carol)}
    as_alice = authenticate_header(f"Bearer {tokens['alice']}")
    as_carol = authenticate_header(f"Bearer {tokens['carol']}")
    carols = queue.submit_task(as_carol, {**CHAT, "messages": [{"role": "user", "content": "carol's"}]}).task
    queued = queue.submit_task(as_alice, CHAT).task
    batch, batch_tasks = queue.submit_batch(
        as_alice, [{**CHAT, "messages": [{"role": "user", "content": f"item {i}"}]} for i in range(2)]
    )
    now = timezone.now()
    completed = InferenceTask.objects.create(
        user=alice,
        location=queued.location,
        status=InferenceTask.Status.COMPLETED,
        request=CHAT,
        result={"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "stub", "choices": []},
        created_at=now,
        finished_at=now,
        result_expires_at=now + timedelta(hours=1),
    )
    return {
        "tokens": tokens,
        "queued": queued,
        "completed": completed,
        "batch": batch,
        "alices": {str(t.id) for t in (queued, completed, *batch_tasks)},
        "carols": carols,
    }


def _client(world: dict[str, Any], persona: str) -> Any:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {world['tokens'][persona]}")
    return client


OBJECT_ENDPOINTS = [
    ("async-status", "get", "/v1/async/status/{queued}"),
    ("async-result", "get", "/v1/async/result/{completed}"),
    ("async-batch-status", "get", "/v1/async/batch-status/{batch}"),
]


def _same_for_any_id(body: str, real_id: Any, fake_id: str) -> str:
    return body.replace(str(real_id), fake_id)


@pytest.mark.parametrize("name, method, path", OBJECT_ENDPOINTS, ids=[e[0] for e in OBJECT_ENDPOINTS])
def test_alices_objects_are_found_only_by_those_who_may_see_them(world, name, method, path):
    real = {"queued": world["queued"].id, "completed": world["completed"].id, "batch": world["batch"].id}
    fake = "00000000-0000-4000-8000-000000000000"
    for persona in PERSONAS:
        client = _client(world, persona)
        response = getattr(client, method)(path.format(**real))
        if persona in SEES_ALICES:
            assert response.status_code == 200, (persona, response.content)
            continue
        assert response.status_code == 404, (persona, response.content)
        assert response.json()["error"]["type"] == "not_found_error"
        # indistinguishable from an id that exists nowhere: nothing confirms alice's object exists
        missing = getattr(client, method)(path.format(**dict.fromkeys(real, fake)))
        assert missing.status_code == 404
        assert (
            _same_for_any_id(
                response.content.decode(), next(v for v in real.values() if str(v) in path.format(**real)), fake
            )
            == missing.content.decode()
        )


def test_others_cannot_cancel_alices_task(world):
    fake = "00000000-0000-4000-8000-000000000000"
    for persona in ("bob", "audrey", "carol"):
        client = _client(world, persona)
        response = client.post(f"/v1/async/cancel/{world['queued'].id}")
        missing = client.post(f"/v1/async/cancel/{fake}")
        # 404 (an auditor: 403, no inference scope), exactly as for a task that exists nowhere
        assert response.status_code == (403 if persona == "audrey" else 404), (persona, response.content)
        assert (response.status_code, response.content.decode().replace(str(world["queued"].id), fake)) == (
            missing.status_code,
            missing.content.decode(),
        )
        world["queued"].refresh_from_db()
        assert world["queued"].status == InferenceTask.Status.QUEUED
    assert _client(world, "alice").post(f"/v1/async/cancel/{world['queued'].id}").status_code == 200


def test_only_the_owner_can_retry_her_task(world):
    """A retry resubmits the task's stored prompt as the caller: even the location admin, who may
    read alice's tasks, may not send her prompt again under their own name (404, as for a task
    that exists nowhere; an auditor: 403, no inference scope)."""
    assert _client(world, "alice").post(f"/v1/async/cancel/{world['queued'].id}").status_code == 200
    cancelled = world["queued"]  # retryable now, by its owner
    fake = "00000000-0000-4000-8000-000000000000"
    before = InferenceTask.objects.count()
    for persona in ("bob", "dana", "audrey", "carol"):
        client = _client(world, persona)
        response = client.post(f"/v1/async/retry/{cancelled.id}")
        missing = client.post(f"/v1/async/retry/{fake}")
        assert response.status_code == (403 if persona == "audrey" else 404), (persona, response.content)
        assert (response.status_code, response.content.decode().replace(str(cancelled.id), fake)) == (
            missing.status_code,
            missing.content.decode(),
        )
    assert InferenceTask.objects.count() == before
    answer = _client(world, "alice").post(f"/v1/async/retry/{cancelled.id}")
    assert answer.status_code == 202, answer.content
    assert InferenceTask.objects.get(id=answer.json()["task_id"]).user == cancelled.user


def test_the_task_list_holds_only_visible_tasks(world):
    for persona in PERSONAS:
        body = _client(world, persona).get("/v1/async/tasks?page_size=100").json()
        ids = {t["task_id"] for t in body["results"]}
        expected = world["alices"] if persona in SEES_ALICES else set()
        if persona == "carol":
            expected = {str(world["carols"].id)}
        assert ids == expected, persona


def test_queue_health_counts_only_visible_tasks(world):
    for persona in PERSONAS:
        body = _client(world, persona).get("/v1/async/health").json()
        expected = {"alice": 3, "dana": 3, "bob": 0, "audrey": 0, "carol": 1}[persona]  # queued ones
        assert body["queued"] == expected, (persona, body)
        assert body["processing"] == 0


def test_the_system_status_counts_only_the_callers_organization(world):
    """The System page's queue: their organization's queued tasks (what a position counts, never
    another organization's) and the ones they may see (as /v1/async/health)."""
    for persona in PERSONAS:
        queue = _client(world, persona).get("/v1/system/status").json()["queue"]
        organization = 1 if persona == "carol" else 3  # carol's at Eastside, alice's three at Demo
        yours = {"alice": 3, "dana": 3, "bob": 0, "audrey": 0, "carol": 1}[persona]
        assert (queue["organization"]["queued"], queue["yours"]["queued"]) == (organization, yours), persona


def test_a_position_counts_only_the_callers_organization(world):
    # carol submitted first, then alice three tasks: carol is first in line in the shared queue,
    # alice's first task second in the broker's order, yet first among Demo Hospital's.
    carol = _client(world, "carol").get(f"/v1/async/status/{world['carols'].id}").json()
    alice = _client(world, "alice").get(f"/v1/async/status/{world['queued'].id}").json()
    assert carol["position"] == 1
    assert alice["position"] == 1


def test_usage_names_nothing_of_the_other_organization(world):
    for persona in PERSONAS:
        response = _client(world, persona).get("/v1/usage?group_by=organization,location,user")
        assert response.status_code in (200, 403), response.content
        text = response.content.decode()
        if persona == "carol":
            assert "Demo Hospital" not in text and '"demo"' not in text and "alice" not in text
        else:
            assert "Eastside" not in text and '"east"' not in text and "carol" not in text, persona


def test_me_is_oneself(world):
    for persona in PERSONAS:
        body = json.dumps(_client(world, persona).get("/v1/auth/me").json())
        assert persona in body and all(other not in body for other in PERSONAS if other != persona)


def test_submissions_land_at_the_callers_own_location(world):
    for persona in PERSONAS:
        response = _client(world, persona).post("/v1/async/submit", {**CHAT, "max_tokens": 5}, format="json")
        if persona == "audrey":  # an auditor has no inference scope
            assert response.status_code == 403
            continue
        assert response.status_code in (200, 202), (persona, response.content)
        task = InferenceTask.objects.get(id=response.json()["task_id"])
        assert task.location.code == ("east" if persona == "carol" else "demo")
        assert task.user.username == persona


@pytest.mark.django_db(transaction=True)  # the record writer's thread writes the records
def test_completions_are_recorded_under_the_callers_own_location(world):
    """(Legacy) completions keep no object a caller could read back: each request's record (here a
    503, no model server) lands at the caller's own location under the caller's name."""
    for persona in PERSONAS:
        body = {"agent_type": "Chat", "prompt": f"{persona}'s note", "max_tokens": 2}
        response = _client(world, persona).post("/v1/completions", body, format="json")
        if persona == "audrey":  # an auditor has no inference scope
            assert response.status_code == 403, response.content
            continue
        assert response.status_code == 503, (persona, response.content)
    records_written()
    records = InferenceTask.objects.filter(kind="completions")
    assert sorted(records.values_list("user__username", "location__code")) == [
        ("alice", "demo"),
        ("bob", "demo"),
        ("carol", "east"),
        ("dana", "demo"),
    ]


def _stored_response(owner: User, location: Location, text: str) -> str:
    """A stored response of ``owner``'s (``POST /v1/responses`` with store: its record keeps the
    conversation and the Response); its public id."""
    now = timezone.now()
    task = InferenceTask.objects.create(
        user=owner,
        location=location,
        mode=InferenceTask.Mode.SYNC,
        kind="response",
        status=InferenceTask.Status.COMPLETED,
        request={"messages": [{"role": "user", "content": text}]},
        result={"id": "", "object": "response", "status": "completed", "output": []},
        created_at=now,
        finished_at=now,
        result_expires_at=now + timedelta(hours=1),
    )
    rid = f"resp_{task.id.hex}"
    InferenceTask.objects.filter(pk=task.pk).update(result={**task.result, "id": rid})
    return rid


@pytest.mark.django_db(transaction=True)  # the record writer's thread writes the records
def test_a_stored_response_is_its_owners_alone(world, alice, carol):
    """A stored response is read, deleted and continued (``previous_response_id``) by its owner
    only: the location admin too gets the 404 of an id that exists nowhere (a conversation is
    the clinician's, not the location's), an auditor a 403 (no inference scope). A new response
    is recorded at the caller's own location under the caller's name."""
    alices = _stored_response(alice, world["queued"].location, "Mrs. Garcia, chest pain")
    carols = _stored_response(carol, Location.objects.get(code="east"), "carol's")
    fake = "resp_" + "0" * 32
    for persona in PERSONAS:
        client = _client(world, persona)
        own = carols if persona == "carol" else alices if persona == "alice" else None
        for rid in (alices, carols):
            if rid == own:
                continue
            for method in ("get", "delete"):
                theirs, nowhere = (
                    getattr(client, method)(f"/v1/responses/{rid}"),
                    getattr(client, method)(f"/v1/responses/{fake}"),
                )
                expected = 403 if persona == "audrey" and method == "delete" else 404
                assert theirs.status_code == expected, (persona, method, theirs.content)
                assert theirs.content.decode().replace(rid, fake) == nowhere.content.decode()
            follow = client.post(
                "/v1/responses", {"agent_type": "Chat", "input": "and?", "previous_response_id": rid}, format="json"
            )
            assert follow.status_code == (403 if persona == "audrey" else 404), (persona, follow.content)
        if own is not None:
            assert client.get(f"/v1/responses/{own}").json()["id"] == own
    assert InferenceTask.objects.filter(kind="response", content_purged_at__isnull=True).count() == 2
    for persona in PERSONAS:  # a new response (a 503 here: no model server) is the caller's own
        response = _client(world, persona).post(
            "/v1/responses",
            {"agent_type": "Chat", "input": f"{persona}'s note", "max_output_tokens": 16},
            format="json",
        )
        assert response.status_code == (403 if persona == "audrey" else 503), (persona, response.content)
    records_written()
    records = InferenceTask.objects.filter(kind="response", status="failed")
    assert sorted(records.values_list("user__username", "location__code")) == [
        ("alice", "demo"),
        ("bob", "demo"),
        ("carol", "east"),
        ("dana", "demo"),
    ]


FAKE_FILE, FAKE_BATCH = "file-" + "0" * 32, "batch_" + "0" * 32


def _jsonl(*contents: str) -> bytes:
    lines = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "Chat", "messages": [{"role": "user", "content": c}], "max_tokens": 4},
        }
        for i, c in enumerate(contents)
    ]
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


def _upload(client: Any, *contents: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    form = {"file": SimpleUploadedFile("b.jsonl", _jsonl(*contents)), "purpose": "batch"}
    return client.post("/v1/files", form, format="multipart")


@pytest.fixture
def alices_batch(world) -> dict[str, str]:
    """alice's input file and a batch of it (its lines queued; nothing runs them)."""
    client = _client(world, "alice")
    file_id = _upload(client, "Mrs. Garcia, chest pain", "second").json()["id"]
    batch = client.post(
        "/v1/batches",
        {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )
    assert batch.status_code == 200, batch.content
    return {"file": file_id, "batch": batch.json()["id"]}


FILE_ENDPOINTS = [
    ("file-detail", "/v1/files/{file}", FAKE_FILE),
    ("file-content", "/v1/files/{file}/content", FAKE_FILE),
    ("batch-detail", "/v1/batches/{batch}", FAKE_BATCH),
]


@pytest.mark.parametrize("name, path, fake", FILE_ENDPOINTS, ids=[e[0] for e in FILE_ENDPOINTS])
def test_alices_files_and_batches_are_found_by_her_alone(world, alices_batch, name, path, fake):
    """Not even the location admin, who sees her tasks: a file or a batch is its owner's (an
    auditor has the read scope and gets the same 404)."""
    real_id = alices_batch["batch" if "batch" in path else "file"]
    for persona in PERSONAS:
        response = _client(world, persona).get(path.format(**alices_batch))
        if persona == "alice":
            assert response.status_code == 200, response.content
            continue
        assert response.status_code == 404, (persona, response.content)
        missing = _client(world, persona).get(path.format(file=fake, batch=fake))
        assert (404, response.content.decode().replace(real_id, fake)) == (404, missing.content.decode())


def test_the_file_and_batch_lists_hold_only_the_callers_own(world, alices_batch):
    for persona in PERSONAS:
        client = _client(world, persona)
        files = {f["id"] for f in client.get("/v1/files").json()["data"]}
        batches = {b["id"] for b in client.get("/v1/batches").json()["data"]}
        if persona == "alice":
            assert (files, batches) == ({alices_batch["file"]}, {alices_batch["batch"]})
        else:
            assert (files, batches) == (set(), set()), persona


def test_others_cannot_delete_alices_file_or_cancel_her_batch(world, alices_batch):
    for persona in ("bob", "dana", "audrey", "carol"):
        client = _client(world, persona)
        for method, path, fake in (
            ("delete", f"/v1/files/{alices_batch['file']}", f"/v1/files/{FAKE_FILE}"),
            ("post", f"/v1/batches/{alices_batch['batch']}/cancel", f"/v1/batches/{FAKE_BATCH}/cancel"),
        ):
            response, missing = getattr(client, method)(path), getattr(client, method)(fake)
            # 404 as for an id that exists nowhere (an auditor: 403, no submit scope)
            assert response.status_code == (403 if persona == "audrey" else 404), (persona, path, response.content)
            assert response.status_code == missing.status_code
    alice = _client(world, "alice")
    assert alice.get(f"/v1/batches/{alices_batch['batch']}").json()["status"] == "in_progress"
    assert alice.get(f"/v1/files/{alices_batch['file']}").status_code == 200


def test_a_batch_is_made_only_of_the_callers_own_files_at_their_location(world, alices_batch):
    body = {"input_file_id": alices_batch["file"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    for persona in ("bob", "dana", "carol"):
        client = _client(world, persona)
        assert client.post("/v1/batches", body, format="json").status_code == 404, persona  # not theirs
        own = _upload(client, f"{persona}'s question").json()["id"]
        made = client.post("/v1/batches", {**body, "input_file_id": own}, format="json")
        assert made.status_code == 200, (persona, made.content)
        tasks = InferenceTask.objects.filter(batch_id=made.json()["id"].removeprefix("batch_"))
        assert {(t.user.username, t.location.code) for t in tasks} == {
            (persona, "east" if persona == "carol" else "demo")
        }
    assert _upload(_client(world, "audrey"), "x").status_code == 403  # no submit scope


@pytest.mark.django_db(transaction=True)  # the record writer's thread writes the records
@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/embeddings", {"model": "stub-embed", "input": ["Mrs. Garcia, chest pain"]}),
        ("/v1/rerank", {"model": "stub-embed", "query": "chest pain", "documents": ["Mrs. Garcia"]}),
    ],
    ids=["embeddings", "rerank"],
)
def test_embeddings_and_rerank_are_recorded_under_the_callers_own_location(world, path, body):
    """Embeddings and rerank keep no object a caller could read back: each request's record (here
    a 503, no model server) lands at the caller's own location under the caller's name, and the
    auditor, who has no inference scope, is refused."""
    register_model("stub-embed", "http://127.0.0.1:9/v1", agents=(), supports_embeddings=True, rerank="embeddings")
    for persona in PERSONAS:
        response = _client(world, persona).post(path, body, format="json")
        if persona == "audrey":
            assert response.status_code == 403, response.content
            continue
        assert response.status_code == 503, (persona, response.content)
    records_written()
    kind = path.rsplit("/", 1)[1]
    assert sorted(InferenceTask.objects.filter(kind=kind).values_list("user__username", "location__code")) == [
        ("alice", "demo"),
        ("bob", "demo"),
        ("carol", "east"),
        ("dana", "demo"),
    ]


@pytest.fixture
def exchanges(world, alice, carol) -> dict[str, Any]:
    """alice and carol each have a stored exchange (``store: true``), each naming a patient Zephyrine."""
    from tests.inference.history_helpers import stored_exchange

    return {
        "alice": stored_exchange(alice, "Mrs. Zephyrine Alder, chest pain: troponin?"),
        "carol": stored_exchange(carol, "Mr. Zephyrine Moss, dyspnoea: BNP?"),
    }


def test_the_history_is_the_owners_alone(world, exchanges):
    """``/v1/history`` and its search list the caller's own exchanges only: dana, demo's location
    admin, who sees alice's tasks, does not read her history."""
    alices = world["alices"] | {str(exchanges["alice"].id)}  # her async tasks are history too
    for persona in PERSONAS:
        client = _client(world, persona)
        listed = {r["exchange_id"] for r in client.get("/v1/history?page_size=100").json()["results"]}
        found = client.post("/v1/history/search", {"q": "zephyrine"}, format="json").json()["results"]
        expected = {"alice": alices, "carol": {str(world["carols"].id), str(exchanges["carol"].id)}}.get(persona, set())
        assert listed == expected, persona
        assert {r["exchange_id"] for r in found} == {str(e.id) for e in exchanges.values()} & expected, persona


def test_a_conversation_is_found_by_its_owner_only(world, exchanges):
    fake = "00000000-0000-4000-8000-000000000000"
    conversation = exchanges["alice"].conversation_id
    for persona in PERSONAS:
        client = _client(world, persona)
        response = client.get(f"/v1/conversations/{conversation}")
        if persona == "alice":
            assert response.status_code == 200, response.content
            continue
        missing = client.get(f"/v1/conversations/{fake}")
        assert response.status_code == 404 == missing.status_code, (persona, response.content)
        assert response.content.decode().replace(str(conversation), fake) == missing.content.decode()


def test_only_the_owner_rates_her_answer(world, exchanges):
    """Feedback is on one's own answers: anyone else (dana, the location admin, too) finds no
    such exchange (404, as for one that exists nowhere; an auditor: 403, no inference scope)."""
    from apps.inference.models import Feedback

    fake = "00000000-0000-4000-8000-000000000000"
    exchange = str(exchanges["alice"].id)
    for persona in ("bob", "dana", "audrey", "carol"):
        client = _client(world, persona)
        response = client.post("/v1/feedback", {"exchange_id": exchange, "rating": "down"}, format="json")
        missing = client.post("/v1/feedback", {"exchange_id": fake, "rating": "down"}, format="json")
        assert response.status_code == (403 if persona == "audrey" else 404), (persona, response.content)
        assert (response.status_code, response.content.decode().replace(exchange, fake)) == (
            missing.status_code,
            missing.content.decode(),
        )
    assert not Feedback.objects.exists()
    mine = _client(world, "alice").post("/v1/feedback", {"exchange_id": exchange, "rating": "up"}, format="json")
    assert mine.status_code == 201, mine.content


def test_the_feedback_export_holds_only_the_callers_organization(world, exchanges):
    """alice (Demo) and carol (Eastside) rate their answers: Demo's auditor and admin export Demo's
    ratings alone; clinicians export nothing (403: the export is the auditor's and the admin's)."""
    for persona in ("alice", "carol"):
        rated = _client(world, persona).post(
            "/v1/feedback", {"exchange_id": str(exchanges[persona].id), "rating": "down"}, format="json"
        )
        assert rated.status_code == 201, rated.content
    for persona in PERSONAS:
        response = _client(world, persona).get("/v1/feedback/export")
        if persona not in ("audrey", "dana"):
            assert response.status_code == 403, (persona, response.content)
            continue
        assert response.status_code == 200, (persona, response.content)
        rows = [json.loads(line) for line in response.content.decode().splitlines()]
        assert [r["exchange_id"] for r in rows] == [str(exchanges["alice"].id)], persona
        assert {r["location"] for r in rows} == {"demo"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("persona", PERSONAS)
async def test_only_those_who_may_see_a_task_can_subscribe_to_it(persona, alice, bob, dana, audrey, carol, token_for):
    from medai.asgi import application

    world = await sync_to_async(_world_for_ws)(alice, carol, token_for)
    token = await sync_to_async(token_for)(
        {"alice": alice, "bob": bob, "dana": dana, "audrey": audrey, "carol": carol}[persona]
    )
    ws = WebsocketCommunicator(application, "/ws/status/", subprotocols=["bearer", token])
    assert (await ws.connect())[0]
    hello = await ws.receive_json_from(timeout=5)
    assert hello["data"]["user"] == persona
    for kind in ("task", "batch"):
        await ws.send_json_to({"subscribe": {kind: world[kind]}})
        answer = await ws.receive_json_from(timeout=5)
        if persona in SEES_ALICES:
            assert answer == {"type": "subscribed", "data": {kind: world[kind]}}
        else:
            assert answer["type"] == "error" and answer["data"]["code"] == f"{kind}_not_found"
    await ws.disconnect()


def _world_for_ws(alice, carol, token_for) -> dict[str, str]:
    register_model("stub", "http://127.0.0.1:9/v1")
    as_alice = authenticate_header(f"Bearer {token_for(alice)}")
    task = queue.submit_task(as_alice, CHAT).task
    batch, _ = queue.submit_batch(as_alice, [{**CHAT, "messages": [{"role": "user", "content": "b"}]}])
    return {"task": str(task.id), "batch": str(batch.id)}


@pytest.mark.django_db(transaction=True)
async def test_the_gpu_socket_is_the_same_for_every_organization(alice, carol, token_for):
    """GPU state is the machine's (no organization's data): everyone with ``read`` gets it."""
    from medai.asgi import application

    for user in (alice, carol):
        ws = WebsocketCommunicator(
            application, "/ws/gpu/", subprotocols=["bearer", await sync_to_async(token_for)(user)]
        )
        assert (await ws.connect())[0]
        assert (await ws.receive_json_from(timeout=5))["type"] == "gpu.status"
        await ws.disconnect()


def test_the_audit_trail_shows_only_the_callers_organization(world):
    """carol's submit at Eastside wrote an audit event; Demo's auditor and admin never read it."""
    from apps.audit.models import AuditEvent

    assert AuditEvent.objects.filter(actor="carol", location="east").exists()  # there is one to hide
    for persona in PERSONAS:
        response = _client(world, persona).get("/v1/audit/events?limit=200")
        if persona not in ("audrey", "dana"):  # no audit:read
            assert response.status_code == 403, (persona, response.content)
            continue
        assert response.status_code == 200, (persona, response.content)
        text = response.content.decode()
        assert "alice" in text  # the organization's own trail is there
        assert "carol" not in text and '"east"' not in text, persona


# Each /v1/ route name, and where this file (or another) holds it to the rule.
# --- workflow runs ----------------------------------------------------------------------------------


@pytest.fixture
def alices_run(world) -> str:
    """A run of alice's (one step on the Chat route: queued, never run)."""
    from apps.inference.models import AgentRoute, Workflow, WorkflowStep
    from apps.inference.workflows import runs

    workflow = Workflow.objects.create(name="triage")
    WorkflowStep.objects.create(workflow=workflow, name="triage", agent_type=AgentRoute.objects.get(agent_type="Chat"))
    as_alice = authenticate_header(f"Bearer {world['tokens']['alice']}")
    return str(runs.start_run(as_alice, "triage", {"document": "Mrs. Garcia, chest pain"}).pk)


def test_alices_workflow_run_is_found_only_by_those_who_may_see_it(world, alices_run):
    fake = "00000000-0000-4000-8000-000000000000"
    for persona in PERSONAS:
        client = _client(world, persona)
        response = client.get(f"/v1/workflows/runs/{alices_run}")
        if persona in SEES_ALICES:
            assert response.status_code == 200, (persona, response.content)
            continue
        missing = client.get(f"/v1/workflows/runs/{fake}")
        assert response.status_code == missing.status_code == 404, (persona, response.content)
        assert response.content.decode().replace(alices_run, fake) == missing.content.decode()


def test_the_workflow_run_list_holds_only_the_runs_the_caller_may_see(world, alices_run):
    for persona in PERSONAS:
        response = _client(world, persona).get("/v1/workflows/runs")
        assert response.status_code == 200, (persona, response.content)
        listed = [r["id"] for r in response.json()["data"]]
        assert listed == ([alices_run] if persona in SEES_ALICES else []), persona


def test_only_alice_cancels_her_workflow_run(world, alices_run):
    """The location admin reads alice's run but does not act on it (as with a retry)."""
    fake = "00000000-0000-4000-8000-000000000000"
    for persona in ("bob", "dana", "audrey", "carol"):
        client = _client(world, persona)
        response = client.post(f"/v1/workflows/runs/{alices_run}/cancel")
        missing = client.post(f"/v1/workflows/runs/{fake}/cancel")
        assert response.status_code == (403 if persona == "audrey" else 404), (persona, response.content)
        assert (response.status_code, response.content.decode().replace(alices_run, fake)) == (
            missing.status_code,
            missing.content.decode(),
        )
    assert _client(world, "alice").post(f"/v1/workflows/runs/{alices_run}/cancel").status_code == 200


def test_workflow_runs_land_at_the_callers_own_location(world, alices_run):
    from apps.inference.models import WorkflowRun

    for persona in PERSONAS:
        response = _client(world, persona).post(
            "/v1/workflows/triage/runs", {"document": f"{persona}'s note"}, format="json"
        )
        if persona == "audrey":  # an auditor has no inference scope
            assert response.status_code == 403, response.content
            continue
        assert response.status_code == 202, (persona, response.content)
        run = WorkflowRun.objects.select_related("location", "user").get(pk=response.json()["id"])
        assert (run.location.code, run.user.username) == ("east" if persona == "carol" else "demo", persona)
        assert {t.location.code for t in InferenceTask.objects.filter(batch_id=run.pk)} == {run.location.code}


COVERED = {
    "async-status": "OBJECT_ENDPOINTS",
    "async-result": "OBJECT_ENDPOINTS",
    "async-batch-status": "OBJECT_ENDPOINTS",
    "async-cancel": "test_others_cannot_cancel_alices_task",
    "async-retry": "test_only_the_owner_can_retry_her_task",
    "async-tasks": "test_the_task_list_holds_only_visible_tasks",
    "async-health": "test_queue_health_counts_only_visible_tasks",
    "async-submit": "test_submissions_land_at_the_callers_own_location",
    "async-submit-batch": "queue.submit_batch under each caller's principal (location from the token)",
    "usage": "test_usage_names_nothing_of_the_other_organization",
    "audit-events": "test_the_audit_trail_shows_only_the_callers_organization",
    "auth-me": "test_me_is_oneself",
    "chat-completions": "answered to the caller only (tests/inference/test_chat_auth.py); a stored exchange's "
    "conversation_id is the owner's alone (tests/inference/test_stored_exchanges.py)",
    "history": "test_the_history_is_the_owners_alone",
    "history-search": "test_the_history_is_the_owners_alone",
    "conversation-detail": "test_a_conversation_is_found_by_its_owner_only",
    "feedback": "test_only_the_owner_rates_her_answer",
    "feedback-export": "test_the_feedback_export_holds_only_the_callers_organization",
    "completions": "test_completions_are_recorded_under_the_callers_own_location",
    "responses": "test_a_stored_response_is_its_owners_alone (create, continue with previous_response_id)",
    "response-detail": "test_a_stored_response_is_its_owners_alone (read, delete)",
    "embeddings": "test_embeddings_and_rerank_are_recorded_under_the_callers_own_location",
    "rerank": "test_embeddings_and_rerank_are_recorded_under_the_callers_own_location",
    "models": "the model registry is global, the same for every organization",
    "model-detail": "the model registry is global, the same for every organization",
    "system-status": "test_the_system_status_counts_only_the_callers_organization",
    "gpu-status": "the machine's GPUs, no organization's data (and test_the_gpu_socket_is_the_same_...)",
    "auth-login": "no object; a login names its location (tests/accounts/test_login.py)",
    "auth-refresh": "no object: the caller's own token",
    "auth-logout": "no object: the caller's own token",
    "files": "test_the_file_and_batch_lists_hold_only_the_callers_own (list); uploads: test_a_batch_is_made_...",
    "file-detail": "FILE_ENDPOINTS and test_others_cannot_delete_alices_file_or_cancel_her_batch",
    "file-content": "FILE_ENDPOINTS",
    "batches": "test_the_file_and_batch_lists_hold_only_the_callers_own and test_a_batch_is_made_only_of_...",
    "batch-detail": "FILE_ENDPOINTS",
    "batch-cancel": "test_others_cannot_delete_alices_file_or_cancel_her_batch",
    "workflows": "workflow definitions are global (admin's), the same for every organization",
    "workflow-runs": "test_workflow_runs_land_at_the_callers_own_location",
    "workflow-run-detail": "test_alices_workflow_run_is_found_only_by_those_who_may_see_it",
    "workflow-runs-list": "test_the_workflow_run_list_holds_only_the_runs_the_caller_may_see",
    "workflow-run-cancel": "test_only_alice_cancels_her_workflow_run",
}


def _v1_route_names() -> set[str]:
    names: set[str] = set()

    def walk(patterns: list[Any], prefix: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern) and (prefix + str(p.pattern)).startswith("v1/"):
                names.add(p.name or str(p.pattern))

    walk(get_resolver().url_patterns, "")
    return names


def test_every_v1_endpoint_is_in_this_table():
    assert _v1_route_names() - set(COVERED) == set(), "a /v1/ endpoint has no isolation row in this file"
