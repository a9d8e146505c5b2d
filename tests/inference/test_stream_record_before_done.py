"""A stored exchange (``store: true``) is confirmed only once its record is in the database, for
its id goes to the client, who may name it in a follow-up at once: a stream sends ``[DONE]``, a
non-streamed answer is sent, after the background writer committed it without lingering
(apps/inference/recorder.py, ``committed``). When the database cannot take it in time the stream
ends with an error event instead, and the record still lands once the database is back. Any other
request, streamed or not, is recorded by the same writer after its end (within its linger)."""

from __future__ import annotations

import json
from unittest import mock

import httpx
import pytest
from django.db import OperationalError

from apps.inference import recorder
from apps.inference.models import InferenceTask
from apps.inference.pipeline import run
from tests.conftest import records_written, register_model

pytestmark = pytest.mark.django_db(transaction=True)

MSG = [{"role": "user", "content": "Dose of paracetamol for an adult?"}]


@pytest.fixture
def stream(live_medai, alice, token_for, stub_backend):
    register_model("stub-a", stub_backend)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}

    def stream(store: bool = True) -> list[str]:
        with httpx.stream(
            "POST",
            f"{live_medai}/v1/chat/completions",
            json={"model": "stub-a", "messages": MSG, "stream": True, "store": store},
            headers=headers,
            timeout=30,
        ) as response:
            assert response.status_code == 200
            return [line for line in response.iter_lines() if line]

    return stream


def test_a_client_that_saw_done_finds_its_stored_exchange_and_audit_event(stream):
    from apps.audit.models import AuditEvent

    for _ in range(3):
        assert stream()[-1] == "data: [DONE]"
        # no records_written() here: the record must already be committed
        assert InferenceTask.objects.filter(stream=True, status="completed").count() == _ + 1
    assert AuditEvent.objects.filter(action="inference.complete").count() == 3


def test_a_stream_whose_record_cannot_be_written_ends_with_an_error_not_done(stream):
    real = recorder._insert_tasks  # the batch's INSERT
    down = [True]

    def database(tasks):
        if down[0]:
            raise OperationalError("database is locked")
        return real(tasks)

    with (
        mock.patch.object(run, "RECORD_WAIT_SECONDS", 0.3),
        mock.patch.object(recorder, "_insert_tasks", side_effect=database),
    ):
        lines = stream()
        assert "data: [DONE]" not in lines
        error = json.loads(lines[-1].removeprefix("data: "))["error"]
        assert error["code"] == "recording_unavailable"
        assert (
            "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "") for line in lines[:-1]) == "OK"
        )  # the answer itself was relayed in full
        down[0] = False  # the database is back: the writer's retry writes the record
        records_written()
    assert InferenceTask.objects.get().status == "completed"


def test_a_stream_that_is_not_stored_ends_at_once_and_is_recorded_after_it(stream):
    from apps.audit.models import AuditEvent

    assert stream(store=False)[-1] == "data: [DONE]"
    records_written()  # the background writer, as for a non-streamed answer
    assert InferenceTask.objects.filter(stream=True, status="completed").count() == 1
    assert AuditEvent.objects.filter(action="inference.complete").count() == 1


def test_a_stored_non_streamed_answer_arrives_with_its_record_committed(live_medai, alice, token_for, stub_backend):
    register_model("stub-b", stub_backend)
    for i in range(3):
        response = httpx.post(
            f"{live_medai}/v1/chat/completions",
            json={"model": "stub-b", "messages": MSG, "store": True},
            headers={"Authorization": f"Bearer {token_for(alice)}"},
            timeout=30,
        )
        assert response.status_code == 200
        # no records_written() here: the exchange named in the header is in the database already
        exchange = response.headers["X-Medai-Exchange-Id"]
        assert InferenceTask.objects.filter(id=exchange, status="completed").exists(), i
