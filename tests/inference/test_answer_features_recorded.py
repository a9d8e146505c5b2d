"""What quality monitoring needs of an answer is on its record before the answer can be purged
(apps/inference/answer_features.py): its length in characters, the finish reason and whether it
was a refusal, for sync, streamed and async chat, and legacy completions; kept after the purge."""

from __future__ import annotations

import httpx
import pytest

from apps.inference import answer_features, queue
from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model
from tests.inference.queue_helpers import submit
from tests.support.servers import set_stub_mode

REFUSAL = "I'm sorry, but I can't help with that request."
ANSWER = "The usual adult dose is 500 mg twice a day with meals."


def _chat(live_medai: str, token: str, **extra: object) -> httpx.Response:
    return httpx.post(
        f"{live_medai}/v1/chat/completions",
        json={"model": "stub-a", "messages": [{"role": "user", "content": "dose?"}], **extra},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


@pytest.mark.django_db(transaction=True)
def test_a_sync_answer_and_a_streamed_refusal_are_recorded_with_their_features(
    live_medai, stub_backend, alice, token_for
):
    register_model("stub-a", stub_backend)
    token = token_for(alice)
    set_stub_mode(stub_backend, "ok", reply={"message": {"content": ANSWER}, "finish_reason": "length"})
    assert _chat(live_medai, token).status_code == 200
    set_stub_mode(stub_backend, "ok", reply={"message": {"content": REFUSAL}})
    with httpx.stream(
        "POST",
        f"{live_medai}/v1/chat/completions",
        json={"model": "stub-a", "messages": [{"role": "user", "content": "x"}], "stream": True},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ) as stream:
        assert b"[DONE]" in b"".join(stream.iter_bytes())
    records_written()
    answered, refused = InferenceTask.objects.order_by("created_at")
    assert (answered.stream, answered.answer_chars, answered.finish_reason, answered.refused) == (
        False,
        len(ANSWER),
        "length",
        False,
    )
    assert (refused.stream, refused.answer_chars, refused.finish_reason, refused.refused) == (
        True,
        len(REFUSAL),
        "stop",
        True,
    )
    assert answered.request is None and answered.result is None  # not stored: the features are all that is kept


@pytest.mark.django_db
def test_an_async_answer_keeps_its_features_after_its_content_is_purged(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    set_stub_mode(stub_backend, "ok", reply={"message": {"content": REFUSAL}})
    task_id = submit(client_for(alice), "Mrs. Garcia's dose?")
    assert queue.run_task(task_id) == "completed"
    InferenceTask.objects.filter(id=task_id).update(request=None, result=None)  # as the purge leaves it
    task = InferenceTask.objects.get(id=task_id)
    assert (task.answer_chars, task.finish_reason, task.refused) == (len(REFUSAL), "stop", True)


@pytest.mark.django_db
def test_a_failed_task_has_no_answer_features(client_for, alice, stub_backend, settings):
    register_model("stub-a", stub_backend)
    set_stub_mode(stub_backend, "error503")
    settings.MEDAI_BACKEND_RETRIES = 0
    task_id = submit(client_for(alice), "q")
    assert queue.run_task(task_id) == "failed"
    task = InferenceTask.objects.get(id=task_id)
    assert (task.answer_chars, task.finish_reason, task.refused) == (None, "", False)


def test_refusals_are_told_by_the_server_or_by_their_opening_words():
    of = answer_features.of_completion
    msg = {"role": "assistant"}
    assert of({"choices": [{"message": {**msg, "content": REFUSAL}, "finish_reason": "stop"}]}).refused
    assert of({"choices": [{"message": {**msg, "content": None, "refusal": "No."}, "finish_reason": "stop"}]}).refused
    assert of({"choices": [{"message": {**msg, "content": "…"}, "finish_reason": "content_filter"}]}).refused
    assert not of({"choices": [{"message": {**msg, "content": ANSWER}, "finish_reason": "stop"}]}).refused
    sorry_but_answers = "I'm sorry, I can't be certain, but the usual dose is 1 g."
    assert not of({"choices": [{"message": {**msg, "content": sorry_but_answers}}]}).refused
    tools_only = of(
        {"choices": [{"message": {**msg, "content": None, "tool_calls": [{}]}, "finish_reason": "tool_calls"}]}
    )
    assert (tools_only.chars, tools_only.refused, tools_only.finish_reason) == (0, False, "tool_calls")
    text = answer_features.of_text_completion({"choices": [{"text": "I cannot provide that."}, {"text": "ok"}]})
    assert (text.chars, text.refused) == (len("I cannot provide that.") + 2, True)
    stream = answer_features.StreamFeatures()
    for piece in ("I am unable", " to answer ", "that question."):
        stream.add({"choices": [{"delta": {"content": piece}}]})
    stream.add({"choices": [{"delta": {}, "finish_reason": "stop"}]})
    assert (stream.features().chars, stream.features().refused) == (len("I am unable to answer that question."), True)
