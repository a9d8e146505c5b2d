"""Every inference leaves exactly one audit event (``inference.complete``), sync or async, streamed
or not, succeeded or failed: with the actor (user and API key), location, model, outcome, HTTP
status and correlation id, the IP and user agent where a request has them, and no PHI."""

from __future__ import annotations

import json

import httpx
import pytest

from apps.accounts.models import ApiKey
from apps.audit.models import AuditEvent
from apps.audit.services import verify_chain
from apps.inference import queue
from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model
from tests.inference.queue_helpers import submit
from tests.support.servers import set_stub_mode

PROMPT = "Patient John Smith, MRN 12345678, asks about his INR of 4.2"
MSG = [{"role": "user", "content": PROMPT}]
DETAIL_KEYS = {
    "mode",
    "kind",
    "stream",
    "status",
    "model",
    "requested_model",
    "agent_type",
    "priority",
    "http_status",
    "error_code",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
}


def the_event(task: InferenceTask) -> AuditEvent:
    """The one inference event of this task (fails if there are none or several)."""
    events = list(AuditEvent.objects.filter(action="inference.complete", object_id=str(task.id)))
    assert len(events) == 1, f"{len(events)} audit events for task {task.id}"
    event = events[0]
    assert event.object_type == "inference.inferencetask"
    assert set(event.details) == DETAIL_KEYS
    text = json.dumps(event.details)
    assert "Smith" not in text and "INR" not in text and "12345678" not in text  # no PHI
    return event


def one_per_inference() -> None:
    assert AuditEvent.objects.filter(action="inference.complete").count() == InferenceTask.objects.count()
    assert verify_chain().ok


# --- sync chat, over real HTTP -------------------------------------------------------------------


@pytest.fixture
def chat(live_medai, alice, api_key_for, stub_backend, settings):
    settings.MEDAI_BACKEND_RETRIES = 0
    register_model("stub-a", stub_backend)
    key = api_key_for(alice)

    def chat(stream: bool = False, request_id: str = "req-audit-1"):
        headers = {"Authorization": f"Bearer {key}", "User-Agent": "ward-7-tablet/2.1", "X-Request-ID": request_id}
        body = {"model": "stub-a", "messages": MSG, "stream": stream}
        if not stream:
            return httpx.post(f"{live_medai}/v1/chat/completions", json=body, headers=headers, timeout=30)
        with httpx.stream(
            "POST", f"{live_medai}/v1/chat/completions", json=body, headers=headers, timeout=30
        ) as response:
            response.read()
            return response

    return chat


def _assert_sync_identity(event: AuditEvent, alice) -> None:
    assert (event.actor_id, event.actor, event.location) == (alice.pk, "alice", "demo")
    assert event.api_key_id == ApiKey.objects.get(user=alice).pk
    assert event.ip == "127.0.0.1" and event.user_agent == "ward-7-tablet/2.1"


@pytest.mark.django_db(transaction=True)
def test_a_sync_completion_is_audited_with_actor_key_location_and_request(chat, alice):
    assert chat(request_id="req-sync-ok").status_code == 200
    records_written()
    task = InferenceTask.objects.get()
    event = the_event(task)
    _assert_sync_identity(event, alice)
    assert (event.outcome, event.correlation_id) == ("success", "req-sync-ok")
    assert event.details["model"] == "stub-a" and event.details["http_status"] == 200
    assert (event.details["mode"], event.details["stream"], event.details["status"]) == ("sync", False, "completed")
    one_per_inference()


@pytest.mark.django_db(transaction=True)
def test_a_failed_sync_completion_is_audited_as_a_failure(chat, alice, stub_backend):
    set_stub_mode(stub_backend, "error503")
    assert chat(request_id="req-sync-fail").status_code == 503
    records_written()
    event = the_event(InferenceTask.objects.get())
    _assert_sync_identity(event, alice)
    assert (event.outcome, event.correlation_id) == ("failure", "req-sync-fail")
    assert (event.details["http_status"], event.details["error_code"]) == (503, "backend_unavailable")
    one_per_inference()


@pytest.mark.django_db(transaction=True)
def test_a_stream_is_audited_once_it_ends(chat, alice):
    assert chat(stream=True, request_id="req-stream-ok").status_code == 200
    records_written()  # a stream's record: by the background writer after [DONE]
    task = InferenceTask.objects.get()
    event = the_event(task)
    _assert_sync_identity(event, alice)
    assert (event.outcome, event.correlation_id) == ("success", "req-stream-ok")
    assert (event.details["stream"], event.details["model"], event.details["completion_tokens"]) == (True, "stub-a", 2)
    one_per_inference()


@pytest.mark.django_db(transaction=True)
def test_a_stream_that_fails_to_open_is_audited_as_a_failure(chat, alice, stub_backend):
    set_stub_mode(stub_backend, "error500")
    assert chat(stream=True, request_id="req-stream-fail").status_code == 503
    event = the_event(InferenceTask.objects.get())
    _assert_sync_identity(event, alice)
    assert (event.outcome, event.details["http_status"], event.details["stream"]) == ("failure", 503, True)
    one_per_inference()


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_records_and_their_events_are_written_together(chat, alice):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: chat(request_id=f"req-batch-{i}").status_code, range(16)))
    assert answers == [200] * 16
    records_written()
    for task in InferenceTask.objects.all():
        assert the_event(task).correlation_id == task.correlation_id
    assert {t.correlation_id for t in InferenceTask.objects.all()} == {f"req-batch-{i}" for i in range(16)}
    one_per_inference()


@pytest.mark.django_db(transaction=True)
def test_a_record_is_never_written_without_its_event(chat, alice):
    from unittest import mock

    from django.db import OperationalError

    from apps.audit import services as audit_services

    real = audit_services.record_events
    failures: list[int] = []

    def flaky(events):
        if not failures:
            failures.append(1)  # the first try fails after its records were inserted: all of it rolls back
            raise OperationalError("database is locked")
        return real(events)

    with mock.patch.object(audit_services, "record_events", side_effect=flaky):
        assert chat(request_id="req-retried").status_code == 200
        records_written()
    assert failures
    the_event(InferenceTask.objects.get())  # one record, one event: the retry did not write the record twice
    one_per_inference()


# --- async tasks, run by the worker ----------------------------------------------------------------


@pytest.mark.django_db
def test_an_async_task_is_audited_with_the_submitters_actor_key_and_location(
    client_for,
    alice,
    api_key_for,
    stub_backend,
):
    from rest_framework.test import APIClient

    register_model("stub-a", stub_backend)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_for(alice)}", HTTP_X_REQUEST_ID="req-async-ok")
    task_id = submit(client, PROMPT, "high")
    assert queue.run_task(task_id) == "completed"
    task = InferenceTask.objects.get(id=task_id)
    event = the_event(task)
    assert (event.actor_id, event.actor, event.location) == (alice.pk, "alice", "demo")
    assert event.api_key_id == ApiKey.objects.get(user=alice).pk
    assert (event.outcome, event.correlation_id) == ("success", "req-async-ok")
    assert (event.details["mode"], event.details["model"], event.details["http_status"]) == ("async", "stub-a", 200)
    assert event.details["priority"] == "high"
    # the submission has its own action; the inference itself is audited once
    assert AuditEvent.objects.filter(action="inference.submit", object_id=task_id).count() == 1
    one_per_inference()


@pytest.mark.django_db
def test_a_failed_async_task_is_audited_as_a_failure(client_for, alice, stub_backend, settings):
    settings.MEDAI_BACKEND_RETRIES = 0
    register_model("stub-a", stub_backend)
    set_stub_mode(stub_backend, "error503")
    task_id = submit(client_for(alice), PROMPT)
    assert queue.run_task(task_id) == "failed"
    event = the_event(InferenceTask.objects.get(id=task_id))
    assert (event.actor, event.location, event.api_key_id) == ("alice", "demo", None)
    assert (event.outcome, event.details["http_status"], event.details["error_code"]) == (
        "failure",
        503,
        "backend_unavailable",
    )
    one_per_inference()


@pytest.mark.django_db
def test_collated_async_tasks_each_get_their_own_event(client_for, alice, bob, stub_backend):
    register_model("stub-a", stub_backend)
    ids = [submit(client_for(user), f"question {i} from {user.username}") for i, user in enumerate([alice, bob] * 3)]
    assert queue.run_task(ids[0]) == "completed"
    assert set(InferenceTask.objects.values_list("status", flat=True)) == {"completed"}  # run together
    for task in InferenceTask.objects.all():
        event = the_event(task)
        assert event.actor_id == task.user_id and event.actor == task.user.username and event.location == "demo"
    one_per_inference()
