"""Every entry point to a model runs the one pipeline, every step in order (apps/inference/pipeline/):
sync chat, streamed or not, and the async API (submit and submit-batch, then the worker that runs
the task). A batch of 100 items authenticates its caller once and parses no item's JSON again."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from apps.accounts import services as accounts_services
from apps.inference import queue, validation
from apps.inference.models import InferenceTask
from apps.inference.pipeline import steps
from tests.conftest import records_written, register_model

pytestmark = pytest.mark.django_db(transaction=True)

MSG = [{"role": "user", "content": "What is a normal INR?"}]
BEFORE_A_BACKEND = steps.STEPS[: steps.STEPS.index(steps.ROUTE) + 1]  # authenticate … route
AT_RUN_TIME = (steps.ROUTE, *steps.STEPS[steps.STEPS.index(steps.ADMIT) :])  # route again, admit … metrics


@pytest.fixture
def trace() -> Iterator[list[str]]:
    seen: list[str] = []
    with steps.tracing(seen.append):
        yield seen


def _counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[Any]:
    """Count the calls of ``owner.name`` (still calling it)."""
    calls: list[Any] = []
    real: Callable[..., Any] = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_the_steps_are_the_designed_ones_in_order() -> None:
    assert steps.STEPS == (
        "authenticate",
        "authorize",
        "validate",
        "rate_limit",
        "quota_reserve",
        "route",
        "admit",
        "dispatch",
        "reconcile",
        "audit",
        "metrics",
    )


def test_a_chat_completion_passes_every_step_in_order(live_medai, stub_backend, alice, token_for, trace):
    register_model("stub-a", stub_backend)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    response = httpx.post(
        f"{live_medai}/v1/chat/completions",
        json={"model": "stub-a", "messages": MSG, "max_tokens": 1},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert tuple(trace) == steps.STEPS
    records_written()
    assert InferenceTask.objects.get().status == "completed"


def test_a_streamed_chat_completion_passes_every_step_in_order(live_medai, stub_backend, alice, token_for, trace):
    register_model("stub-a", stub_backend)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    body = {"model": "stub-a", "messages": MSG, "stream": True}
    with httpx.stream("POST", f"{live_medai}/v1/chat/completions", json=body, headers=headers, timeout=30) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.status_code == 200 and lines[-1] == "data: [DONE]"
    assert tuple(trace) == steps.STEPS  # recorded (reconcile, audit, metrics) before [DONE]


def test_a_refused_chat_request_stops_at_its_step(live_medai, stub_backend, alice, token_for, trace):
    register_model("stub-a", stub_backend)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    response = httpx.post(
        f"{live_medai}/v1/chat/completions", json={"model": "stub-a", "messages": []}, headers=headers, timeout=30
    )
    assert response.status_code == 400
    assert tuple(trace) == ("authenticate", "authorize", "validate")


def test_an_async_task_passes_every_step_at_submit_and_at_run(client_for, alice, stub_backend, trace):
    register_model("stub-a", stub_backend, agents=("Chat",))
    response = client_for(alice).post("/v1/async/submit", {"agent_type": "Chat", "messages": MSG}, format="json")
    assert response.status_code == 202, response.content
    assert tuple(trace) == BEFORE_A_BACKEND
    trace.clear()
    assert queue.run_task(response.json()["task_id"]) == "completed"
    assert tuple(trace) == AT_RUN_TIME


def test_a_batch_passes_every_step_once_at_submit_and_each_task_at_run(client_for, alice, stub_backend, trace):
    register_model("stub-a", stub_backend, agents=("Chat",))
    requests = [{"agent_type": "Chat", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(3)]
    response = client_for(alice).post("/v1/async/submit-batch", {"requests": requests}, format="json")
    assert response.status_code == 202, response.content
    assert tuple(trace) == BEFORE_A_BACKEND  # once for the whole batch
    for task_id in response.json()["task_ids"]:
        trace.clear()
        assert queue.run_task(task_id, collate=False) == "completed"
        assert tuple(trace) == AT_RUN_TIME


def test_a_batch_of_100_authenticates_once_and_parses_no_item_again(client_for, alice, monkeypatch):
    register_model("stub-a", "http://127.0.0.1:9/v1", agents=("Chat",))
    client = client_for(alice)
    authentications = _counting(monkeypatch, accounts_services, "authenticate_bearer")
    validations = _counting(monkeypatch, validation, "validate_task")
    body_parses = _counting(monkeypatch, validation, "parse_json_object")
    parses = _counting(monkeypatch, json, "loads")
    requests = [{"agent_type": "Chat", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(100)]

    response = client.post("/v1/async/submit-batch", {"requests": requests}, format="json")

    assert response.status_code == 202, response.content
    assert len(set(response.json()["task_ids"])) == 100
    assert len(authentications) == 1
    assert len(validations) == 100  # each item validated once
    assert body_parses == []
    # JSON holding an item is parsed once: the request body, by DRF's parser (no json.dumps round trip)
    holding_an_item = [str(args[0]) for args in parses if "question 42" in str(args[0])]
    assert len(holding_an_item) == 1 and holding_an_item[0].startswith('{"requests"')
