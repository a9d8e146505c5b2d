"""A task's correlation id follows it into the worker: the line each task's run logs names the
submitting request's X-Request-ID, tasks run together (collated) each log under their own, and
nothing of the worker's run leaks an id into the next task's lines or the worker's own."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from rest_framework.test import APIClient

from apps.audit.context import get_correlation_id
from apps.audit.logging import CorrelationFilter
from apps.inference import queue
from tests.conftest import register_model
from tests.inference.queue_helpers import submit
from tests.support.servers import set_stub_mode


class Collect(logging.Handler):
    """A handler like the console's: the correlation filter runs when a line is emitted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(CorrelationFilter())
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage(), record.correlation_id))  # type: ignore[attr-defined]


@pytest.fixture
def logged() -> Iterator[Collect]:
    handler = Collect()
    log = logging.getLogger("medai.queue")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield handler
    log.removeHandler(handler)
    log.setLevel(level)


def _client(api_key: str, request_id: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}", HTTP_X_REQUEST_ID=request_id)
    return client


@pytest.mark.django_db
def test_each_tasks_line_carries_its_submitters_correlation_id(logged, alice, api_key_for, stub_backend):
    register_model("stub-a", stub_backend)
    key = api_key_for(alice)
    ids = {submit(_client(key, f"req-{n}"), f"question {n}"): f"req-{n}" for n in range(3)}
    first = next(iter(ids))
    assert queue.run_task(first) == "completed"  # the three run together (collation)
    finished = {tid: cid for msg, cid in logged.lines for tid in ids if msg.startswith(f"task {tid} completed")}
    assert finished == ids  # one line per task, each under its own request's id
    assert get_correlation_id() == ""  # nothing left behind for the worker's next lines


@pytest.mark.django_db
def test_a_failed_tasks_line_carries_its_id_and_the_error_code_not_the_text(
    logged, alice, api_key_for, stub_backend, settings
):
    settings.MEDAI_BACKEND_RETRIES = 0
    register_model("stub-a", stub_backend)
    set_stub_mode(stub_backend, "error503")
    task_id = submit(_client(api_key_for(alice), "req-failing"), "Mrs. Quillfeather's INR")
    assert queue.run_task(task_id) == "failed"
    [(msg, cid)] = [(m, c) for m, c in logged.lines if m.startswith(f"task {task_id} ")]
    assert cid == "req-failing"
    assert "failed (backend_unavailable)" in msg and "Quillfeather" not in msg
