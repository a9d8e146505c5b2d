"""A stream sends ``[DONE]`` only once its record is in the database: its row goes through the
background record writer, which commits it without lingering (apps/inference/recorder.py,
``committed``). When the database cannot take it in time the stream ends with an error event
instead, and the record still lands once the database is back."""

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

    def stream() -> list[str]:
        with httpx.stream(
            "POST",
            f"{live_medai}/v1/chat/completions",
            json={"model": "stub-a", "messages": MSG, "stream": True},
            headers=headers,
            timeout=30,
        ) as response:
            assert response.status_code == 200
            return [line for line in response.iter_lines() if line]

    return stream


def test_a_client_that_saw_done_finds_its_record_and_audit_event(stream):
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
