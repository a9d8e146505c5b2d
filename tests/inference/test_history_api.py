"""The history API (apps/inference/api/history_views.py): a clinician's own stored exchanges,
paged, searched and by conversation, decrypted for their owner only, gone once retention purges
them, never cached, every read audited without the words searched for."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.inference import retention
from apps.inference.models import InferenceTask
from tests.conftest import _user
from tests.inference.history_helpers import follow_up, stored_exchange

pytestmark = pytest.mark.django_db


@pytest.fixture
def dana(org, demo):
    from apps.accounts.models import User

    return _user("dana", User.Role.ADMIN, org, demo)


def test_the_history_lists_the_owners_exchanges_newest_first(client_for, alice):
    older = stored_exchange(
        alice, "Dose of amoxicillin for otitis media?", "80-90 mg/kg/day.", ago=timedelta(minutes=10)
    )
    newer = follow_up(older, "And for a penicillin allergy?", "Azithromycin.")
    response = client_for(alice).get("/v1/history")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 2 and (body["page"], body["page_size"]) == (1, 20)
    assert [r["exchange_id"] for r in body["results"]] == [str(newer.id), str(older.id)]
    first = body["results"][1]
    assert first["question"] == "Dose of amoxicillin for otitis media?"
    assert first["answer"] == "80-90 mg/kg/day."
    assert first["conversation_id"] == str(older.conversation_id) == body["results"][0]["conversation_id"]
    assert (first["mode"], first["status"], first["agent_type"], first["model"]) == (
        "sync",
        "completed",
        "MedicalQA",
        "smollm2",
    )
    assert response["Cache-Control"] == "no-store"


def test_the_history_pages(client_for, alice):
    for i in range(5):
        stored_exchange(alice, f"question {i}", ago=timedelta(minutes=i))
    client = client_for(alice)
    page2 = client.get("/v1/history?page=2&page_size=2").json()
    assert page2["count"] == 5 and [r["question"] for r in page2["results"]] == ["question 2", "question 3"]
    assert client.get("/v1/history?page=4&page_size=2").status_code == 404
    for query, param in (
        ("page=0", "page"),
        ("page=x", "page"),
        ("page_size=101", "page_size"),
        ("page_size=-1", "page_size"),
    ):
        bad = client.get(f"/v1/history?{query}")
        assert bad.status_code == 400, query
        assert bad.json()["error"]["param"] == param


def test_an_exchange_without_store_is_not_history(client_for, alice):
    now = timezone.now()
    InferenceTask.objects.create(  # a sync record of a chat completion sent without store
        mode=InferenceTask.Mode.SYNC,
        user=alice,
        location=alice.locations.first(),
        status="completed",
        created_at=now,
        finished_at=now,
    )
    assert client_for(alice).get("/v1/history").json()["count"] == 0


def test_an_async_task_is_a_conversation_of_its_own(client_for, alice):
    now = timezone.now()
    task = InferenceTask.objects.create(
        mode=InferenceTask.Mode.ASYNC,
        user=alice,
        location=alice.locations.first(),
        status="completed",
        agent_type="MedicalQA",
        model_name="smollm2",
        request={"model": "", "agent_type": "MedicalQA", "payload": {"messages": [{"role": "user", "content": "Q?"}]}},
        result={"choices": [{"index": 0, "message": {"role": "assistant", "content": "A."}, "finish_reason": "stop"}]},
        created_at=now,
        finished_at=now,
        result_expires_at=now + timedelta(hours=1),
    )
    [row] = client_for(alice).get("/v1/history").json()["results"]
    assert (row["exchange_id"], row["conversation_id"], row["question"], row["answer"]) == (str(task.id),) * 2 + (
        "Q?",
        "A.",
    )
    conversation = client_for(alice).get(f"/v1/conversations/{task.id}").json()
    assert [e["exchange_id"] for e in conversation["exchanges"]] == [str(task.id)]


def test_a_conversation_holds_its_exchanges_in_order_with_their_messages(client_for, alice):
    first = stored_exchange(
        alice,
        "Signs of sepsis?",
        "Fever, tachycardia.",
        ago=timedelta(minutes=5),
        system_prompt="You are a careful clinical assistant.",
    )
    second = follow_up(first, "And in a child?", "Also poor feeding.")
    stored_exchange(alice, "Another conversation")
    response = client_for(alice).get(f"/v1/conversations/{first.conversation_id}")
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["conversation_id"] == str(first.conversation_id)
    assert [e["exchange_id"] for e in body["exchanges"]] == [str(first.id), str(second.id)]
    # the route's system prompt is the server's, not the clinician's: it is left out
    assert body["exchanges"][0]["messages"] == [{"role": "user", "content": "Signs of sepsis?"}]
    assert body["exchanges"][1]["messages"] == [
        {"role": "user", "content": "Signs of sepsis?"},
        {"role": "assistant", "content": "Fever, tachycardia."},
        {"role": "user", "content": "And in a child?"},
    ]
    assert body["exchanges"][1]["answer"] == "Also poor feeding."


def test_another_users_conversation_is_not_found_even_by_the_location_admin(client_for, alice, bob, dana):
    mine = stored_exchange(alice, "Mrs. Garcia's potassium is 6.1, next step?")
    fake = uuid.uuid4()
    for who in (bob, dana):
        client = client_for(who)
        response = client.get(f"/v1/conversations/{mine.conversation_id}")
        missing = client.get(f"/v1/conversations/{fake}")
        assert response.status_code == 404 == missing.status_code
        assert response.content.decode().replace(str(mine.conversation_id), str(fake)) == missing.content.decode()
        assert response["Cache-Control"] == "no-store"
        assert client.get("/v1/history").json()["count"] == 0
        assert client.post("/v1/history/search", {"q": "garcia"}, format="json").json()["results"] == []


def test_search_finds_the_words_in_questions_and_answers_in_any_case(client_for, alice):
    asked = stored_exchange(alice, "Warfarin and ibuprofen together?", "Bleeding risk rises.", ago=timedelta(minutes=2))
    answered = stored_exchange(alice, "Headache relief?", "Paracetamol; avoid IBUPROFEN with warfarin.")
    stored_exchange(alice, "Something else", "Nothing relevant.")
    client = client_for(alice)
    found = client.post("/v1/history/search", {"q": "  ibuprofen "}, format="json")
    assert found.status_code == 200, found.content
    assert found["Cache-Control"] == "no-store"
    assert [r["exchange_id"] for r in found.json()["results"]] == [str(answered.id), str(asked.id)]
    limited = client.post("/v1/history/search", {"q": "ibuprofen", "limit": 1}, format="json").json()
    assert [r["exchange_id"] for r in limited["results"]] == [str(answered.id)]


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "q"),
        ({"q": "   "}, "q"),
        ({"q": 3}, "q"),
        ({"q": "x" * 501}, "q"),
        ({"q": "x", "limit": 0}, "limit"),
        ({"q": "x", "limit": "many"}, "limit"),
        ({"q": "x", "page": 2}, "page"),
    ],
)
def test_a_bad_search_is_a_400_naming_the_field(client_for, alice, body, param):
    response = client_for(alice).post("/v1/history/search", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == param


def test_a_search_body_that_is_not_an_object_is_a_400(client_for, alice):
    response = client_for(alice).post("/v1/history/search", ["q"], format="json")
    assert response.status_code == 400
    assert client_for(alice).get("/v1/history/search").status_code == 405


def test_purged_and_expired_exchanges_are_gone(client_for, alice):
    kept = stored_exchange(alice, "still kept")
    stored_exchange(alice, "past its retention", ago=timedelta(hours=2))  # expired, not swept yet
    purged = stored_exchange(alice, "swept", ago=timedelta(hours=2))
    InferenceTask.objects.filter(id=purged.id).update(result_expires_at=timezone.now() - timedelta(seconds=1))
    retention.purge()
    assert InferenceTask.objects.get(id=purged.id).content_purged_at is not None
    client = client_for(alice)
    assert [r["exchange_id"] for r in client.get("/v1/history").json()["results"]] == [str(kept.id)]
    assert client.post("/v1/history/search", {"q": "swept"}, format="json").json()["results"] == []
    assert client.get(f"/v1/conversations/{purged.conversation_id}").status_code == 404


def test_an_auditor_has_no_history_and_needs_the_read_scope(client_for, audrey, alice):
    stored_exchange(alice, "alice's")
    assert client_for(audrey).get("/v1/history").json()["count"] == 0
    from rest_framework.test import APIClient

    assert APIClient().get("/v1/history").status_code == 401


def test_every_read_is_audited_without_the_words_searched_for(client_for, alice):
    exchange = stored_exchange(alice, "Mr. Okafor's INR is 4.2")
    client = client_for(alice)
    client.get("/v1/history")
    client.post("/v1/history/search", {"q": "Okafor"}, format="json")
    client.get(f"/v1/conversations/{exchange.conversation_id}")
    events = list(AuditEvent.objects.filter(action="inference.read_history").order_by("seq"))
    assert [(e.details["read"], e.details["count"]) for e in events] == [
        ("page", 1),
        ("search", 1),
        ("conversation", 1),
    ]
    assert all(e.actor == "alice" and e.location == "demo" for e in events)
    assert events[2].object_id == str(exchange.conversation_id)
    assert not any("Okafor" in str(e.details) for e in events)
