"""Past MEDAI_QUEUE_MAX queued tasks: 429 with Retry-After; emergency mode accepts only HIGH and
CRITICAL; a database outage answers 503 with nothing written."""

from __future__ import annotations

from unittest import mock

import pytest
from django.db import OperationalError

from apps.inference.models import InferenceTask, QueueEntry, TaskBatch
from tests.conftest import register_model
from tests.inference.queue_helpers import ask, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def model(db):
    register_model("stub", "http://127.0.0.1:9/v1")


def test_a_full_queue_answers_429_and_accepts_only_high_and_critical(client_for, alice, settings):
    settings.MEDAI_QUEUE_MAX = 3
    client = client_for(alice)
    for i in range(3):
        submit(client, f"routine {i}")
    for level in ("low", "normal"):
        refused = ask(client, f"one more {level}", level)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused["Retry-After"]) > 0
    assert ask(client, "urgent", "high").status_code == 202
    assert ask(client, "very urgent", "critical").status_code == 202
    assert InferenceTask.objects.count() == QueueEntry.objects.count() == 5
    assert client.get("/v1/async/health").json()["emergency_mode"] is True


def test_a_database_outage_answers_503_and_writes_nothing(client_for, alice):
    client = client_for(alice)
    # the queue entries are the last write of a submit: failing there must roll the task rows back
    with mock.patch("apps.inference.broker.put_many", side_effect=OperationalError("connection refused")):
        response = ask(client, "during the outage")
        batch = client.post(
            "/v1/async/submit-batch",
            {
                "requests": [
                    {"agent_type": "Chat", "messages": [{"role": "user", "content": f"outage {i}"}]} for i in range(3)
                ]
            },
            format="json",
        )
    assert response.status_code == batch.status_code == 503
    assert response.json()["error"]["code"] == batch.json()["error"]["code"] == "database_unavailable"
    assert InferenceTask.objects.count() == QueueEntry.objects.count() == TaskBatch.objects.count() == 0
