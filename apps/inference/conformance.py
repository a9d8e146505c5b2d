"""Answers in OpenAI's shape, whatever the model server left out.

Clients are written against OpenAI's ``CreateChatCompletionResponse`` and
``CreateChatCompletionStreamResponse`` (shared/specs/openai-openapi.yaml): a field the spec requires
but may be null (``choices[].logprobs``, ``message.refusal``, ``logprobs.refusal``) must be there.
llama.cpp, vLLM and the rest omit some of them, and some omit a streamed tool call's ``index`` or
send a call's arguments as an object: medai fills in and fixes what is missing, in place, and
counts the tool calls it relays (for the request's record).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any


def _call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _arguments(function: dict[str, Any]) -> None:
    args = function.get("arguments")
    if isinstance(args, (dict, list)):
        function["arguments"] = json.dumps(args, ensure_ascii=False)


def _logprobs(value: Any) -> Any:
    if not isinstance(value, dict):
        return None
    value.setdefault("content", None)
    value.setdefault("refusal", None)
    for key in ("content", "refusal"):
        for entry in value[key] or ():
            if isinstance(entry, dict):
                entry.setdefault("bytes", None)
                tops = entry.setdefault("top_logprobs", [])
                for top in tops if isinstance(tops, list) else ():
                    if isinstance(top, dict):
                        top.setdefault("bytes", None)
    return value


def _usage(usage: Any) -> None:
    if isinstance(usage, dict):
        prompt = usage.setdefault("prompt_tokens", 0)
        completion = usage.setdefault("completion_tokens", 0)
        if "total_tokens" not in usage and isinstance(prompt, int) and isinstance(completion, int):
            usage["total_tokens"] = prompt + completion


def completion(data: dict[str, Any], model: str) -> int:
    """Normalise a non-streamed chat completion under medai's model name; the number of tool calls."""
    data["model"] = model
    data["object"] = "chat.completion"
    if not isinstance(data.get("id"), str):
        data["id"] = "chatcmpl-" + uuid.uuid4().hex
    if not isinstance(data.get("created"), int):
        data["created"] = int(time.time())
    choices = data.get("choices")
    if not isinstance(choices, list):
        choices = data["choices"] = []
    calls = 0
    for position, choice in enumerate(choices):
        if not isinstance(choice, dict):
            continue
        choice.setdefault("index", position)
        message = choice.get("message")
        if not isinstance(message, dict):
            message = choice["message"] = {}
        message.setdefault("role", "assistant")
        message.setdefault("content", None)
        message.setdefault("refusal", None)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list) and tool_calls:
            for call in tool_calls:
                if isinstance(call, dict):
                    call.setdefault("type", "function")
                    if not isinstance(call.get("id"), str) or not call["id"]:
                        call["id"] = _call_id()
                    function = call.get("function")
                    if isinstance(function, dict):
                        _arguments(function)
                        function.setdefault("arguments", "{}")
            calls += len(tool_calls)
        elif "tool_calls" in message:
            del message["tool_calls"]  # null or empty: absent, as OpenAI sends it
        if choice.get("finish_reason") is None:
            choice["finish_reason"] = "tool_calls" if calls else "stop"
        choice["logprobs"] = _logprobs(choice.get("logprobs"))
    _usage(data.get("usage"))
    return calls


class ChunkNormaliser:
    """Normalises one stream's chunks in turn (they share an id, a creation time and the indices
    of their tool calls); each call returns how many new tool calls the chunk started."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self._seen_id = False
        self._calls: dict[Any, _CallIndex] = {}

    def __call__(self, event: dict[str, Any]) -> int:
        event["model"] = self.model
        event["object"] = "chat.completion.chunk"
        if isinstance(event.get("id"), str) and not self._seen_id:
            self.id, self._seen_id = event["id"], True
        event.setdefault("id", self.id)
        if not isinstance(event.get("created"), int):
            event["created"] = self.created
        choices = event.get("choices")
        if not isinstance(choices, list):
            choices = event["choices"] = []
        started = 0
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                continue
            choice.setdefault("index", position)
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = choice["delta"] = {}
            choice.setdefault("finish_reason", None)
            if "logprobs" in choice:
                choice["logprobs"] = _logprobs(choice["logprobs"])
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                index = self._calls.setdefault(choice["index"], _CallIndex())
                started += sum(index.place(call) for call in tool_calls if isinstance(call, dict))
            elif "tool_calls" in delta:
                del delta["tool_calls"]
        if "usage" in event:
            _usage(event["usage"])
        return started


class _CallIndex:
    """The tool calls of one streamed choice: gives a delta without an ``index`` the index of its
    call (known by its id, else the call in progress, else a new one)."""

    def __init__(self) -> None:
        self.by_id: dict[str, int] = {}
        self.seen: set[int] = set()
        self.last: int | None = None

    def place(self, call: dict[str, Any]) -> int:
        call_id = call.get("id") if isinstance(call.get("id"), str) else None
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            if call_id is not None and call_id in self.by_id:
                index = self.by_id[call_id]
            elif call_id is not None or self.last is None:
                index = max(self.seen, default=-1) + 1
            else:
                index = self.last
            call["index"] = index
        new = index not in self.seen
        if call_id is not None:
            self.by_id[call_id] = index
            call.setdefault("type", "function")
        self.seen.add(index)
        self.last = index
        function = call.get("function")
        if isinstance(function, dict):
            _arguments(function)
        return int(new)


# --- (legacy) completions: CreateCompletionResponse, streamed or not ---------------------------


def _completion_id() -> str:
    return "cmpl-" + uuid.uuid4().hex


def _text_choice(choice: Any, index: int) -> dict[str, Any]:
    if not isinstance(choice, dict):
        choice = {}
    text = choice.get("text")
    choice["text"] = text if isinstance(text, str) else ""
    choice["index"] = index
    choice["logprobs"] = None  # refused at validation: the servers' chat-shaped ones are not the legacy shape
    if choice.get("finish_reason") not in ("stop", "length", "content_filter"):
        choice["finish_reason"] = "stop"
    return choice


def text_completion(answers: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """One ``text_completion`` from the backend's answers to each prompt, in order (the choice's
    ``index`` is its prompt's place), under medai's model name, with the usage of them all."""
    choices: list[dict[str, Any]] = []
    prompt_tokens = completion_tokens = 0
    for answer in answers:
        got = answer.get("choices") if isinstance(answer, dict) else None
        for choice in got if isinstance(got, list) else [{}]:
            choices.append(_text_choice(choice, len(choices)))
        usage = answer.get("usage") if isinstance(answer, dict) else None
        if isinstance(usage, dict):
            prompt_tokens += _count(usage.get("prompt_tokens"))
            completion_tokens += _count(usage.get("completion_tokens"))
    first = answers[0] if answers and isinstance(answers[0], dict) else {}
    data: dict[str, Any] = {
        "id": _completion_id(),
        "object": "text_completion",
        "created": first["created"] if isinstance(first.get("created"), int) else int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    if isinstance(first.get("system_fingerprint"), str):
        data["system_fingerprint"] = first["system_fingerprint"]
    return data


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class TextChunkNormaliser:
    """Normalises one (legacy) completions stream's chunks: medai's model name and one id and
    creation time for them all; ``finish_reason`` null until the last (as OpenAI streams it).
    Returns 0 (no tool calls on this endpoint), as ``ChunkNormaliser`` returns its count."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = _completion_id()
        self.created = int(time.time())

    def __call__(self, event: dict[str, Any]) -> int:
        event["id"] = self.id
        event["object"] = "text_completion"
        event["model"] = self.model
        event["created"] = self.created
        choices = event.get("choices")
        if not isinstance(choices, list):
            choices = event["choices"] = []
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                choices[position] = choice = {}
            if not isinstance(choice.get("text"), str):
                choice["text"] = ""
            choice.setdefault("index", position)
            choice["logprobs"] = None
            choice.setdefault("finish_reason", None)
        if "usage" in event:
            _usage(event["usage"])
        return 0
