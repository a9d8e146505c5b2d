"""A forced tool call (``tool_choice`` ``required`` or a named function) on llama.cpp, through
a JSON schema of the call.

llama.cpp's ``tool_choice: "required"`` lets the model write any text before its first call (its
grammar allows content up to the tool-call marker), so a small model may ramble until
``max_tokens`` and call nothing: not what OpenAI's "required" means. llama.cpp does hold
``response_format`` strictly, so for a forced call medai asks for the call itself as JSON
(``{"name": ..., "arguments": {...}}``, one of the allowed tools, their parameters as its schema)
with the tools still in the prompt, and turns the answer back into ``tool_calls``, streamed or not.
Other servers (vLLM, TGI...) force calls with guided decoding themselves and get the request as is.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

SCHEMA_NAME = "medai_tool_call"


def applies(payload: dict[str, Any], kind: str) -> bool:
    return (
        kind == "llamacpp"
        and bool(payload.get("tools"))
        and payload.get("tool_choice") == "required"
        and payload.get("response_format") is None
    )


def _call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    return {
        "type": "object",
        "properties": {
            "name": {"const": function["name"]},
            "arguments": function.get("parameters") or {"type": "object"},
        },
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def request(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload asking for the forced call as JSON."""
    calls = [_call_schema(t) for t in payload["tools"]]
    one = calls[0] if len(calls) == 1 else {"anyOf": calls}
    schema = one
    if payload.get("parallel_tool_calls"):
        schema = {
            "type": "object",
            "properties": {"tool_calls": {"type": "array", "items": one, "minItems": 1}},
            "required": ["tool_calls"],
            "additionalProperties": False,
        }
    forced = {k: v for k, v in payload.items() if k not in ("tool_choice", "parallel_tool_calls")}
    forced["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True},
    }
    return forced


def _calls(text: str) -> list[dict[str, Any]] | None:
    """The tool calls in the model's JSON answer; None when it is not one (cut off by max_tokens)."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    items = data.get("tool_calls") if isinstance(data, dict) and "tool_calls" in data else [data]
    if not isinstance(items, list) or not items:
        return None
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        calls.append(
            {
                "id": "call_" + uuid.uuid4().hex[:24],
                "type": "function",
                "function": {
                    "name": item["name"],
                    "arguments": json.dumps(item.get("arguments", {}), ensure_ascii=False),
                },
            }
        )
    return calls


def completion(data: dict[str, Any]) -> None:
    """Turn the JSON answer of each choice into its tool calls (in place)."""
    for choice in data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            continue
        calls = _calls(message["content"])
        if calls is not None:
            message["content"] = None
            message["tool_calls"] = calls
            if choice.get("finish_reason") in (None, "stop"):
                choice["finish_reason"] = "tool_calls"


class StreamConverter:
    """Holds back a stream's content (the JSON of the call) and sends it as tool-call deltas, each
    call with its own index, just before the chunk that finishes the choice."""

    def __init__(self) -> None:
        self.text: dict[int, str] = {}

    def __call__(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The chunks to send for this backend chunk (none while the call is being written)."""
        out: list[dict[str, Any]] = []
        choices = event.get("choices")
        if not isinstance(choices, list) or not choices:
            return [event]
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                delta = {}
            content = delta.pop("content", None)
            if isinstance(content, str):
                self.text[index] = self.text.get(index, "") + content
            if choice.get("finish_reason") is None:
                continue
            text = self.text.pop(index, "")
            calls = _calls(text)
            if calls is None:  # cut off (the finish chunk says "length"): what was written, as is
                out.append(
                    {
                        **{k: v for k, v in event.items() if k != "usage"},
                        "choices": [{"index": index, "delta": {"content": text}, "finish_reason": None}],
                    }
                )
                continue
            head = {k: v for k, v in event.items() if k != "usage"}
            out.append(
                {
                    **head,
                    "choices": [
                        {
                            "index": index,
                            "delta": {"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]},
                            "finish_reason": None,
                        }
                    ],
                }
            )
            if choice["finish_reason"] == "stop":
                choice["finish_reason"] = "tool_calls"
        keep = [
            c
            for c in choices
            if isinstance(c, dict) and (c.get("finish_reason") is not None or set(c.get("delta") or {}) - {"content"})
        ]
        if keep or event.get("usage"):
            out.append({**event, "choices": keep})
        return out
