"""Stored exchanges written as the pipeline writes them (``store: true`` on a sync chat
completion: apps/inference/conversations.py), for the history and feedback tests that need
exchanges without a model server. The end-to-end path is tests/inference/test_stored_exchanges.py."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.utils import timezone

from apps.accounts.models import User
from apps.inference.models import InferenceTask


def stored_exchange(
    user: User,
    question: str,
    answer: str | None = "An answer.",
    *,
    conversation_id: uuid.UUID | None = None,
    earlier: list[dict[str, Any]] | None = None,
    ago: timedelta = timedelta(0),
    agent_type: str = "MedicalQA",
    model: str = "smollm2",
    system_prompt: str = "",
    status: str = InferenceTask.Status.COMPLETED,
    expires_in: timedelta = timedelta(hours=1),
) -> InferenceTask:
    """One of ``user``'s stored exchanges at their first location, ``ago`` in the past; ``earlier``:
    the conversation's messages before this question (a follow-up); ``system_prompt``: the route's,
    put first by the pipeline."""
    now = timezone.now() - ago
    messages = [*(earlier or []), {"role": "user", "content": question}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    result = None
    if answer is not None:
        result = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(now.timestamp()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12},
        }
    return InferenceTask.objects.create(
        mode=InferenceTask.Mode.SYNC,
        kind="chat",
        status=status,
        user=user,
        location=user.locations.first(),
        agent_type=agent_type,
        model_name=model,
        conversation_id=conversation_id or uuid.uuid4(),
        request={
            "model": "",
            "agent_type": agent_type,
            "payload": {"messages": messages, "max_tokens": 64},
            "route_system": bool(system_prompt),
        },
        result=result,
        prompt_tokens=7,
        completion_tokens=5,
        created_at=now,
        finished_at=now,
        result_expires_at=now + expires_in,
    )


def follow_up(first: InferenceTask, question: str, answer: str = "A follow-up answer.", **kwargs: Any) -> InferenceTask:
    """The next exchange of ``first``'s conversation (its messages, its answer, the new question)."""
    messages = list(first.request["payload"]["messages"])
    if first.request.get("route_system"):
        messages = messages[1:]
    messages.append(first.result["choices"][0]["message"])
    assert first.user is not None
    return stored_exchange(
        first.user, question, answer, conversation_id=first.conversation_id, earlier=messages, **kwargs
    )
