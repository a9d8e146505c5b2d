"""Emergency mode is one rule (``queue.room``) used by admission and by /v1/async/health: below
MEDAI_QUEUE_MAX queued tasks every priority is accepted and the flag is off; from MAX on the flag
is on and exactly then LOW and NORMAL answer 429 while HIGH and CRITICAL are still accepted, each
task of a batch at its own priority."""

from __future__ import annotations

import pytest

from apps.inference.models import InferenceTask, Priority
from tests.conftest import register_model
from tests.inference.queue_helpers import ask, submit

pytestmark = pytest.mark.django_db

MAX = 3


@pytest.fixture(autouse=True)
def small_queue(db, settings):
    settings.MEDAI_QUEUE_MAX = MAX
    register_model("stub", "http://127.0.0.1:9/v1")


def fill_to(client, depth: int) -> None:
    while InferenceTask.objects.filter(status="queued").count() < depth:
        submit(client, f"filler {InferenceTask.objects.count()}", "critical")


def item(text: str, priority: str) -> dict:
    return {"agent_type": "Chat", "priority": priority, "messages": [{"role": "user", "content": text}]}


@pytest.mark.parametrize("depth", [MAX - 1, MAX, MAX + 1])
def test_the_flag_is_on_exactly_when_routine_work_is_refused(client_for, alice, depth):
    client = client_for(alice)
    fill_to(client, depth)
    health = client.get("/v1/async/health").json()
    assert (health["queued"], health["queue_max"]) == (depth, MAX)
    routine = ask(client, "routine", "low")
    assert health["emergency_mode"] is (routine.status_code == 429)
    assert health["emergency_mode"] is (depth >= MAX)
    if routine.status_code == 429:
        assert (
            routine.json()["error"]["code"] == "queue_full" and "emergency mode" in routine.json()["error"]["message"]
        )
    assert ask(client, "urgent", "high").status_code == 202


def test_a_batch_cannot_carry_routine_work_into_emergency_mode(client_for, alice):
    client = client_for(alice)
    fill_to(client, MAX)
    mixed = client.post(
        "/v1/async/submit-batch", {"requests": [item("urgent", "high"), item("routine", "low")]}, format="json"
    )
    assert mixed.status_code == 429 and mixed.json()["error"]["code"] == "queue_full"
    assert InferenceTask.objects.count() == MAX
    urgent = client.post(
        "/v1/async/submit-batch", {"requests": [item("urgent 1", "high"), item("urgent 2", "critical")]}, format="json"
    )
    assert urgent.status_code == 202


def test_below_the_limit_a_batch_may_fill_it_exactly(client_for, alice):
    client = client_for(alice)
    fill_to(client, MAX - 2)
    batch = client.post("/v1/async/submit-batch", {"requests": [item("a", "low"), item("b", "normal")]}, format="json")
    assert batch.status_code == 202
    assert client.get("/v1/async/health").json()["emergency_mode"] is True
    assert ask(client, "one too many", "normal").status_code == 429
    assert InferenceTask.objects.filter(priority=Priority.LOW).count() == 1
