"""Feedback on answers (``POST /v1/feedback``, apps/inference/feedback.py): a clinician rates an
answer of their own history up or down, with an optional comment (encrypted, never audited,
purged with the exchange) and reason codes, kept against the model and route that answered; one
rating per user per exchange; bad input a 400 naming the field; anyone else's exchange a 404."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.inference import retention
from apps.inference.models import Feedback, InferenceTask
from tests.conftest import register_model
from tests.inference.history_helpers import stored_exchange

pytestmark = pytest.mark.django_db

COMMENT = "Wrong for Mrs. Okafor: she is on dialysis"


@pytest.fixture
def exchange(alice):
    endpoint = register_model("smollm2", "http://127.0.0.1:9/v1", agents=("MedicalQA",))
    task = stored_exchange(alice, "Max dose of metformin?", "3 g a day.")
    InferenceTask.objects.filter(id=task.id).update(endpoint=endpoint)
    return task


def test_a_rating_is_kept_against_the_model_and_route_that_answered(client_for, alice, exchange):
    response = client_for(alice).post(
        "/v1/feedback",
        {"exchange_id": str(exchange.id), "rating": "down", "comment": f"  {COMMENT} ", "reasons": ["wrong", "unsafe"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert (body["exchange_id"], body["rating"], body["reasons"], body["comment"]) == (
        str(exchange.id),
        "down",
        ["wrong", "unsafe"],
        COMMENT,
    )
    assert (body["model"], body["agent_type"]) == ("smollm2", "MedicalQA")
    feedback = Feedback.objects.get()
    assert (feedback.task_id, feedback.user, feedback.location.code) == (exchange.id, alice, "demo")
    assert (feedback.model_name, feedback.agent_type, feedback.endpoint.name) == ("smollm2", "MedicalQA", "smollm2")
    assert feedback.comment == COMMENT


def test_the_comment_is_encrypted_at_rest(client_for, alice, exchange):
    client_for(alice).post(
        "/v1/feedback", {"exchange_id": str(exchange.id), "rating": "down", "comment": COMMENT}, format="json"
    )
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT comment FROM {Feedback._meta.db_table}")
        [(raw,)] = cursor.fetchall()
    assert raw and "Okafor" not in raw and "dialysis" not in raw


def test_rating_again_changes_the_one_rating(client_for, alice, exchange):
    client = client_for(alice)
    first = client.post(
        "/v1/feedback", {"exchange_id": str(exchange.id), "rating": "down", "comment": COMMENT}, format="json"
    )
    again = client.post("/v1/feedback", {"exchange_id": str(exchange.id), "rating": "up", "reasons": []}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["feedback_id"] == first.json()["feedback_id"]
    feedback = Feedback.objects.get()
    assert (feedback.rating, feedback.comment, feedback.reasons) == ("up", "", [])
    assert feedback.updated_at >= feedback.created_at


def test_each_user_rates_their_own_exchanges_only(client_for, alice, bob, exchange):
    fake = str(uuid.uuid4())
    client = client_for(bob)
    theirs = client.post("/v1/feedback", {"exchange_id": str(exchange.id), "rating": "up"}, format="json")
    missing = client.post("/v1/feedback", {"exchange_id": fake, "rating": "up"}, format="json")
    assert theirs.status_code == 404 == missing.status_code
    assert theirs.json()["error"]["code"] == "exchange_not_found"
    assert theirs.content.decode().replace(str(exchange.id), fake) == missing.content.decode()
    assert not Feedback.objects.exists()


def test_an_exchange_past_its_retention_cannot_be_rated(client_for, alice):
    old = stored_exchange(alice, "old question", ago=timedelta(hours=2))
    response = client_for(alice).post("/v1/feedback", {"exchange_id": str(old.id), "rating": "up"}, format="json")
    assert response.status_code == 404


def test_a_queued_task_has_no_answer_to_rate(client_for, alice):
    now = timezone.now()
    queued = InferenceTask.objects.create(
        mode=InferenceTask.Mode.ASYNC, user=alice, location=alice.locations.first(), status="queued", created_at=now
    )
    response = client_for(alice).post("/v1/feedback", {"exchange_id": str(queued.id), "rating": "up"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "exchange_not_answered"


@pytest.mark.parametrize(
    "change, param",
    [
        ({"exchange_id": None}, "exchange_id"),
        ({"exchange_id": "not-a-uuid"}, "exchange_id"),
        ({"rating": "meh"}, "rating"),
        ({"rating": None}, "rating"),
        ({"rating": True}, "rating"),
        ({"comment": 42}, "comment"),
        ({"comment": "x" * 2001}, "comment"),
        ({"reasons": "wrong"}, "reasons"),
        ({"reasons": ["wrong", "boring"]}, "reasons[1]"),
        ({"reasons": ["wrong", "wrong"]}, "reasons"),
        ({"stars": 5}, "stars"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(client_for, alice, exchange, change, param):
    body = {"exchange_id": str(exchange.id), "rating": "up", **change}
    response = client_for(alice).post("/v1/feedback", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == param
    assert not Feedback.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(client_for, alice):
    response = client_for(alice).post("/v1/feedback", ["up"], format="json")
    assert response.status_code == 400
    assert client_for(alice).get("/v1/feedback").status_code == 405


def test_an_auditor_may_not_rate(client_for, audrey, exchange):
    response = client_for(audrey).post("/v1/feedback", {"exchange_id": str(exchange.id), "rating": "up"}, format="json")
    assert response.status_code == 403


def test_a_rating_is_audited_without_the_comment(client_for, alice, exchange):
    client = client_for(alice)
    body = {"exchange_id": str(exchange.id), "rating": "down", "comment": COMMENT, "reasons": ["outdated"]}
    client.post("/v1/feedback", body, format="json")
    client.post("/v1/feedback", {**body, "rating": "up", "comment": ""}, format="json")
    events = list(AuditEvent.objects.filter(action="feedback.create").order_by("seq"))
    assert [(e.details["rating"], e.details["has_comment"], e.details["changed"]) for e in events] == [
        ("down", True, False),
        ("up", False, True),
    ]
    first = events[0]
    assert (first.actor, first.location, first.object_type) == ("alice", "demo", "inference.feedback")
    assert first.details["exchange_id"] == str(exchange.id) and first.details["reasons"] == ["outdated"]
    assert first.details["model"] == "smollm2" and first.details["agent_type"] == "MedicalQA"
    assert all("Okafor" not in str(e.details) and "dialysis" not in str(e.details) for e in AuditEvent.objects.all())


def test_the_comment_is_purged_with_the_exchange_and_the_rating_stays(client_for, alice, exchange):
    client_for(alice).post(
        "/v1/feedback", {"exchange_id": str(exchange.id), "rating": "down", "comment": COMMENT}, format="json"
    )
    retention.purge(timezone.now() + timedelta(days=1))
    feedback = Feedback.objects.get()
    assert (feedback.comment, feedback.rating) == ("", "down")
    assert feedback.comment_purged_at is not None


def test_a_legal_hold_keeps_the_comment(client_for, alice, exchange):
    client_for(alice).post(
        "/v1/feedback", {"exchange_id": str(exchange.id), "rating": "down", "comment": COMMENT}, format="json"
    )
    retention.place_hold(None, reason="case 7", task=exchange)
    retention.purge(timezone.now() + timedelta(days=1))
    assert Feedback.objects.get().comment == COMMENT


def test_the_owners_rating_shows_in_her_history(client_for, alice, exchange):
    client = client_for(alice)
    body = {"exchange_id": str(exchange.id), "rating": "down", "comment": COMMENT, "reasons": ["wrong"]}
    client.post("/v1/feedback", body, format="json")
    expected = {"rating": "down", "reasons": ["wrong"], "comment": COMMENT}
    [listed] = client.get("/v1/history").json()["results"]
    assert listed["feedback"] == expected
    [shown] = client.get(f"/v1/conversations/{exchange.conversation_id}").json()["exchanges"]
    assert shown["feedback"] == expected


def test_the_admin_lists_ratings_read_only_and_never_shows_the_comment(client_for, alice, exchange, django_user_model):
    from django.test import Client

    client_for(alice).post(
        "/v1/feedback",
        {"exchange_id": str(exchange.id), "rating": "down", "comment": COMMENT, "reasons": ["unsafe", "wrong"]},
        format="json",
    )
    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser("root", password="x-" * 10))
    listing = admin.get("/admin/inference/feedback/")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "unsafe, wrong" in html and "smollm2" in html and "MedicalQA" in html
    assert f'title="{exchange.id}">{str(exchange.id)[:8]}' in html
    feedback = Feedback.objects.get()
    detail = admin.get(f"/admin/inference/feedback/{feedback.pk}/change/")
    assert detail.status_code == 200
    assert "Okafor" not in html and "Okafor" not in detail.content.decode()
    assert admin.get("/admin/inference/feedback/add/").status_code == 403
    assert admin.post(f"/admin/inference/feedback/{feedback.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Feedback.objects.filter(pk=feedback.pk).exists()
