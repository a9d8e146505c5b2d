"""An identical request while one is queued, running or retained returns the existing task;
never across locations."""

from __future__ import annotations

import pytest

from apps.inference.models import InferenceTask
from tests.conftest import register_model
from tests.inference.queue_helpers import ask, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def model(db):
    register_model("stub", "http://127.0.0.1:9/v1")


def test_identical_request_returns_the_queued_task(client_for, alice):
    first = ask(client_for(alice), "Dose of amoxicillin for a child of 20 kg?")
    again = ask(client_for(alice), "Dose of amoxicillin for a child of 20 kg?")
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    assert (first.json()["deduplicated"], again.json()["deduplicated"]) == (False, True)
    assert InferenceTask.objects.count() == 1


def test_a_colleague_asking_the_same_gets_a_task_of_their_own(client_for, alice, bob):
    mine = submit(client_for(alice), "Same question at demo")
    theirs = ask(client_for(bob), "Same question at demo")
    assert theirs.json()["task_id"] != mine
    assert client_for(bob).get(f"/v1/async/status/{theirs.json()['task_id']}").status_code == 200


def test_other_parameters_make_another_task(client_for, alice):
    client = client_for(alice)
    one = submit(client, "Same question", max_tokens=4)
    other = submit(client, "Same question", max_tokens=8)
    assert one != other


def test_no_deduplication_across_locations(client_for, alice, charlie):
    at_demo = submit(client_for(alice), "Same question everywhere")
    at_north = submit(client_for(charlie), "Same question everywhere")
    assert at_demo != at_north
    assert InferenceTask.objects.get(id=at_north).location.code == "north"


def test_a_finished_task_is_reused_only_while_its_result_is_retained(client_for, alice, settings):
    from datetime import timedelta

    from django.utils import timezone

    client = client_for(alice)
    first = submit(client, "Retained question")
    InferenceTask.objects.filter(id=first).update(
        status="completed", result={"choices": []}, result_expires_at=timezone.now() + timedelta(seconds=300)
    )
    assert submit(client, "Retained question") == first
    InferenceTask.objects.filter(id=first).update(result_expires_at=timezone.now() - timedelta(seconds=1))
    assert submit(client, "Retained question") != first


def test_a_deduplicated_submit_is_audited_as_an_access_to_the_existing_task(client_for, alice):
    from apps.audit.models import AuditEvent

    client = client_for(alice)
    body = {"agent_type": "Chat", "max_tokens": 4, "messages": [{"role": "user", "content": "Audited twice"}]}
    first = client.post("/v1/async/submit", body, format="json", HTTP_X_PURPOSE_OF_USE="TREAT").json()
    again = client.post("/v1/async/submit", body, format="json", HTTP_X_PURPOSE_OF_USE="ETREAT").json()
    assert again["task_id"] == first["task_id"] and again["deduplicated"] is True
    events = list(AuditEvent.objects.filter(action="inference.submit").order_by("seq"))
    assert [e.object_id for e in events] == [first["task_id"]] * 2
    assert [bool(e.details.get("deduplicated")) for e in events] == [False, True]
    assert [(e.actor, e.purpose_of_use) for e in events] == [("alice", "TREAT"), ("alice", "ETREAT")]
