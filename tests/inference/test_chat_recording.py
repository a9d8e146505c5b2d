"""Non-streamed chat completions are recorded after the answer by the background writer
(apps/inference/recorder.py): promptly, surviving a database error, and never beyond its bound."""

from __future__ import annotations

import time
from unittest import mock

import httpx
import pytest
from django.db import OperationalError

from apps.inference import recorder
from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model

pytestmark = pytest.mark.django_db(transaction=True)

MSG = [{"role": "user", "content": "Normal adult temperature?"}]


@pytest.fixture
def post(live_medai, alice, token_for, stub_backend):
    register_model("stub-a", stub_backend)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}

    def post():
        return httpx.post(
            f"{live_medai}/v1/chat/completions", json={"model": "stub-a", "messages": MSG}, headers=headers, timeout=30
        )

    return post


def _exists() -> bool:
    try:
        return InferenceTask.objects.exists()
    except OperationalError:  # the test database is in-memory SQLite with a shared cache, whose
        return False  # table locks answer "table is locked" while the writer's insert runs


def served(stub_url: str) -> int:
    return httpx.get(stub_url.removesuffix("/v1") + "/_stats").json()["requests"]


def test_the_record_appears_on_its_own_shortly_after_the_answer(post):
    assert post().status_code == 200
    deadline = time.monotonic() + 10  # a generous bound: the writer lingers ~20 ms
    while not _exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    task = InferenceTask.objects.get()
    assert (task.mode, task.status, task.model_name) == ("sync", "completed", "stub-a")


def test_a_database_error_delays_the_record_but_does_not_lose_it(post):
    real = recorder._insert_tasks  # the batch's INSERT
    failures = []

    def flaky(tasks):
        if not failures:
            failures.append(1)
            raise OperationalError("database is locked")
        return real(tasks)

    with mock.patch.object(recorder, "_insert_tasks", side_effect=flaky):
        assert post().status_code == 200
        records_written()
    assert failures and InferenceTask.objects.get().status == "completed"


def test_a_full_backlog_answers_503_before_any_backend_call(post, settings, stub_backend):
    settings.MEDAI_RECORD_BACKLOG = 0  # as if the database had fallen behind by the whole backlog
    response = post()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "recording_unavailable"
    assert response.headers["Retry-After"]
    assert served(stub_backend) == 0
