"""Stored exchanges and conversations: a clinician's history.

A chat completion sent with ``store: true`` keeps its exchange (the request's messages and the
answer) on its ``InferenceTask`` record: a sync row, COMPLETED (or FAILED, or CANCELLED when the
client stopped the stream, with what was streamed until then), its ``request`` and ``result``
encrypted (apps/audit/fields.py), ``result_expires_at`` = the end of its retention
(``MEDAI_RESULT_TTL``, legal holds apply: apps/inference/retention.py), owned by the caller. Its
``conversation_id`` groups the exchanges of one conversation: a follow-up sends the id of an
earlier answer (``X-Medai-Conversation-Id``) with the whole conversation's messages, as OpenAI's
chat API wants. Without ``store`` (the API's default) nothing of the content is kept.

The history is the caller's own (``InferenceTask.objects.owned_by``: not even the location admin
reads it): stored exchanges and async tasks, each decrypted for its owner only, gone when retention
purges it. An async task is a conversation of one, whose id is its own.

For the other entry points that keep exchanges (the Responses API's ``store`` and
``previous_response_id``): ``check_conversation`` + ``begin`` before the call, ``record_fields``
on the record, ``StreamAnswer`` for a stream, and ``exchange`` / ``continuation`` to read one back.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.inference.errors import ApiError
from apps.inference.models import Feedback, InferenceTask

S = InferenceTask.Status
# Search decrypts in Python (the columns are encrypted): at most this many of the caller's most
# recent retained exchanges are read per search. Retention bounds what there is to read anyway.
SEARCH_SCAN_MAX = 2000
SEARCH_LIMIT_MAX = 100
PAGE_SIZE_MAX = 100


# --- storing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Storage:
    """What a stored exchange is kept as, decided before the model is called (the ids are in the
    response's headers before the first token)."""

    exchange_id: uuid.UUID
    conversation_id: uuid.UUID
    request: dict[str, Any]


def check_conversation(principal: Any, conversation_id: uuid.UUID) -> None:
    """The conversation a follow-up continues must be the caller's own and still retained, else
    ApiError 404 (another user's conversation is not found, as one that never was). Queries."""
    # An async task is a conversation of its own (its id): a follow-up on it continues it.
    if not history_of(principal).filter(Q(conversation_id=conversation_id) | Q(id=conversation_id)).exists():
        raise ApiError(
            404,
            "conversation_not_found",
            f"Conversation '{conversation_id}' does not exist (or its retention ended).",
            "conversation_id",
        )


def begin(
    principal: Any,
    *,
    payload: dict[str, Any],
    model: str = "",
    agent_type: str = "",
    route_system: bool = False,
    conversation_id: uuid.UUID | None = None,
) -> Storage:
    """A new stored exchange (in ``conversation_id``, already checked with ``check_conversation``,
    or a new conversation). ``payload``: the messages and parameters sent to the model;
    ``route_system``: its first message is the route's system prompt (not the caller's)."""
    return Storage(
        exchange_id=uuid.uuid4(),
        conversation_id=conversation_id or uuid.uuid4(),
        request={"model": model, "agent_type": agent_type, "payload": payload, "route_system": route_system},
    )


def record_fields(storage: Storage, answer: dict[str, Any] | None, finished_at: datetime) -> dict[str, Any]:
    """The record's fields that keep a stored exchange (merged into the sync record's fields)."""
    return {
        "id": storage.exchange_id,
        "conversation_id": storage.conversation_id,
        "request": storage.request,
        "result": answer,
        "result_expires_at": finished_at + timedelta(seconds=settings.MEDAI_RESULT_TTL),
    }


@dataclass
class StreamAnswer:
    """A streamed answer put together from its chunks, to be stored as a chat completion."""

    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    id: str = ""
    created: int = 0

    def add(self, chunk: dict[str, Any]) -> None:
        self.id = self.id or str(chunk.get("id") or "")
        self.created = self.created or int(chunk.get("created") or 0)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self.text.append(delta["content"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def completion(self, model: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created or int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self.text)},
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


# --- reading --------------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One exchange of the caller's history, decrypted."""

    id: uuid.UUID
    conversation_id: uuid.UUID
    mode: str
    status: str
    agent_type: str
    model: str
    created_at: datetime
    finished_at: datetime | None
    messages: list[dict[str, Any]]  # the conversation up to the question (the route's system prompt left out)
    answer: str | None  # the assistant's text (None: none yet, or only tool calls)
    finish_reason: str | None
    error: dict[str, str] | None
    prompt_tokens: int
    completion_tokens: int
    result_expires_at: datetime | None
    feedback: dict[str, Any] | None = None  # the owner's own rating of it (apps/inference/feedback.py)

    @property
    def question(self) -> str:
        """The last user message's text."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return _text(message.get("content"))
        return ""

    def searchable(self) -> str:
        return "\n".join([*(_text(m.get("content")) for m in self.messages), self.answer or ""]).casefold()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _retained(qs: Any) -> Any:
    """Exchanges whose content is still kept (the sweep runs every minute: past the end of retention
    counts as gone already)."""
    return qs.filter(content_purged_at__isnull=True).exclude(result_expires_at__lte=timezone.now())


def history_of(principal: Any) -> Any:
    """The caller's own stored exchanges and async chat tasks, retained, newest first."""
    qs = InferenceTask.objects.owned_by(principal).filter(kind="chat")
    qs = qs.filter(Q(mode=InferenceTask.Mode.ASYNC) | Q(conversation_id__isnull=False))
    return _retained(qs).order_by("-created_at", "-id")


def _exchange(task: InferenceTask) -> Exchange:
    request = task.request or {}
    messages = list((request.get("payload") or {}).get("messages") or [])
    if request.get("route_system") and messages:
        messages = messages[1:]
    result = task.result or {}
    choice = (result.get("choices") or [{}])[0] or {}
    content = (choice.get("message") or {}).get("content")
    return Exchange(
        id=task.id,
        conversation_id=task.conversation_id or task.id,
        mode=task.mode,
        status=task.status,
        agent_type=task.agent_type,
        model=task.model_name,
        created_at=task.created_at,
        finished_at=task.finished_at,
        messages=messages,
        answer=content if isinstance(content, str) else None,
        finish_reason=choice.get("finish_reason"),
        error={"code": task.error_code, "message": task.error_message} if task.error_code else None,
        prompt_tokens=task.prompt_tokens,
        completion_tokens=task.completion_tokens,
        result_expires_at=task.result_expires_at,
    )


def read_exchange(task: InferenceTask) -> Exchange:
    """A record's exchange, decrypted (for whoever the caller already established may read it: the
    owner's history here, an export with a purpose of use in apps/inference/feedback_export.py)."""
    return _exchange(task)


def _with_feedback(principal: Any, exchanges: list[Exchange]) -> list[Exchange]:
    """The caller's own ratings of these exchanges, on them (one query)."""
    if exchanges:
        rows = Feedback.objects.filter(task_id__in=[e.id for e in exchanges], user_id=principal.user_id)
        mine = {f.task_id: f for f in rows.only("task_id", "rating", "reasons", "comment")}
        for e in exchanges:
            if (f := mine.get(e.id)) is not None:
                e.feedback = {"rating": f.rating, "reasons": list(f.reasons or []), "comment": f.comment}
    return exchanges


def history(principal: Any, *, page: int = 1, page_size: int = 20) -> tuple[int, list[Exchange]]:
    """(how many, one page of them): the caller's recent exchanges, newest first."""
    page_size = max(1, min(page_size, PAGE_SIZE_MAX))
    qs = history_of(principal)
    start = (max(page, 1) - 1) * page_size
    count = qs.count()
    if start >= count:  # past the end (an offset beyond what the database takes, too)
        return count, []
    return count, _with_feedback(principal, [_exchange(t) for t in qs[start : start + page_size]])


def search(principal: Any, query: str, *, limit: int = 20) -> list[Exchange]:
    """The caller's exchanges whose messages or answer hold ``query`` (case-insensitive), newest
    first: the content is decrypted here, never matched in SQL (it is encrypted at rest)."""
    needle = query.casefold().strip()
    found = []
    for task in history_of(principal)[:SEARCH_SCAN_MAX].iterator(chunk_size=200):
        exchange = _exchange(task)
        if needle in exchange.searchable():
            found.append(exchange)
            if len(found) >= limit:
                break
    return _with_feedback(principal, found)


def conversation(principal: Any, conversation_id: uuid.UUID) -> list[Exchange]:
    """The exchanges of one of the caller's conversations, oldest first; ApiError 404 for none
    (another user's, purged, or never)."""
    tasks = list(
        history_of(principal).filter(Q(conversation_id=conversation_id) | Q(id=conversation_id)).order_by("created_at")
    )
    if not tasks:
        raise ApiError(404, "conversation_not_found", f"Conversation '{conversation_id}' does not exist.")
    return _with_feedback(principal, [_exchange(t) for t in tasks])


def exchange(principal: Any, exchange_id: uuid.UUID) -> Exchange:
    """One of the caller's retained exchanges; ApiError 404 otherwise."""
    task = history_of(principal).filter(id=exchange_id).first()
    if task is None:
        raise ApiError(404, "exchange_not_found", f"Exchange '{exchange_id}' does not exist.")
    return _exchange(task)


def continuation(principal: Any, exchange_id: uuid.UUID) -> tuple[Exchange, list[dict[str, Any]]]:
    """An exchange and the messages that continue after it: its messages then its answer as the
    assistant's turn (what a follow-up sends before its new question). ApiError 404."""
    found = exchange(principal, exchange_id)
    messages = list(found.messages)
    if found.answer is not None:
        messages.append({"role": "assistant", "content": found.answer})
    return found, messages
