"""A chat completion → OpenAI's Response object (``Response`` in shared/specs/openai-openapi.yaml).

The assistant's text becomes a ``message`` item with one ``output_text`` part (a refusal: a
``refusal`` part), each tool call a ``function_call`` item (its ``call_id`` the chat call's id);
``finish_reason: length`` makes the response ``incomplete`` (``max_output_tokens``); usage is
renamed (prompt → input, completion → output tokens).
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from apps.inference.responses.request import ResponseRequest


def new_id(prefix: str) -> str:
    """An output item's id (``msg_…``, ``fc_…``): 128 random bits (a quarter of uuid4's cost)."""
    return f"{prefix}_{os.urandom(16).hex()}"


def response_id(task_id: uuid.UUID) -> str:
    """A response's public id: its record's id (``resp_<hex>``)."""
    return f"resp_{task_id.hex}"


def task_id_of(rid: str) -> uuid.UUID | None:
    """The record id of a public response id; None when it is not one of medai's."""
    if not isinstance(rid, str) or not rid.startswith("resp_"):
        return None
    try:
        return uuid.UUID(hex=rid[len("resp_") :])
    except ValueError:
        return None


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
        "output_tokens": completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt_tokens + completion_tokens,
    }


def skeleton(rr: ResponseRequest, rid: str, model: str, created_at: int | None = None) -> dict[str, Any]:
    """The Response object before any output: ``in_progress``, what the request asked echoed; no
    ``usage`` yet (OpenAI's schema has no null usage: ``finish`` adds it)."""
    body: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": "in_progress",
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "instructions": rr.instructions,
        "max_output_tokens": rr.max_output_tokens,
        "max_tool_calls": rr.max_tool_calls,
        "model": model,
        "output": [],
        "parallel_tool_calls": rr.parallel_tool_calls,
        "previous_response_id": rr.previous_response_id,
        "reasoning": None,
        "service_tier": "default",
        "store": rr.store,
        "temperature": rr.temperature,
        "text": rr.text,
        "tool_choice": rr.tool_choice,
        "tools": rr.tools,
        "top_p": rr.top_p,
        "truncation": "disabled",
        "metadata": rr.metadata,
        "background": False,
    }
    if rr.user is not None:
        body["user"] = rr.user
    if rr.safety_identifier is not None:
        body["safety_identifier"] = rr.safety_identifier
    return body


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, parts: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": parts}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def finish(body: dict[str, Any], finish_reason: str | None, prompt_tokens: int, completion_tokens: int) -> None:
    """Mark ``body`` finished (completed, or incomplete on a length or content-filter stop) with its usage."""
    if finish_reason in ("length", "content_filter"):
        body["status"] = "incomplete"
        body["incomplete_details"] = {"reason": "max_output_tokens" if finish_reason == "length" else "content_filter"}
    else:
        body["status"] = "completed"
        body["completed_at"] = int(time.time())
    body["usage"] = usage(prompt_tokens, completion_tokens)


def from_completion(data: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The finished Response of a (conformant) chat completion, built on ``body`` (``skeleton``)."""
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    finish_reason = choice.get("finish_reason")
    incomplete = finish_reason in ("length", "content_filter")
    output: list[dict[str, Any]] = []
    parts = []
    content = message.get("content")
    if isinstance(content, str) and (content or not message.get("tool_calls")):
        parts.append(text_part(content))
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if parts:
        output.append(message_item(new_id("msg"), parts, "incomplete" if incomplete else "completed"))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        output.append(
            call_item(
                new_id("fc"),
                call.get("id") or new_id("call"),
                function.get("name") or "",
                function.get("arguments") or "",
            )
        )
    body["output"] = output
    used = data.get("usage") or {}
    finish(body, finish_reason, _int(used.get("prompt_tokens")), _int(used.get("completion_tokens")))
    cached = (used.get("prompt_tokens_details") or {}).get("cached_tokens")
    if isinstance(cached, int):
        body["usage"]["input_tokens_details"]["cached_tokens"] = cached
    return body


def as_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A Response's output items as the chat messages that continue its conversation (one
    assistant turn: its text and its tool calls)."""
    text = "".join(
        p.get("text") or p.get("refusal") or ""
        for item in output
        if item.get("type") == "message"
        for p in item.get("content") or ()
    )
    calls = [
        {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
        for item in output
        if item.get("type") == "function_call"
    ]
    turn: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        turn["tool_calls"] = calls
    return [turn]


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0
