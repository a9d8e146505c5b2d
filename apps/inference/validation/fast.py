"""The chat request validated without building a serializer (the hot path): DRF deep-copies every
declared field per instance, most of the cost of validating a chat body. ``fast_chat_request``
takes the common plain request and returns what ``ChatCompletionRequestSerializer`` would; anything
unusual is left to the serializer, which decides and words the error."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from django.conf import settings

from apps.inference.models import Priority
from apps.inference.validation.fields import ROLES, StreamOptionsField, is_blank

# --- the chat request without building a serializer (the hot path) ----------------------------

_SKIP = object()  # "not sure": let ChatCompletionRequestSerializer decide (and word the error)
_PRIORITY_NAMES = {name: int(Priority[name]) for name in Priority.names}
_PLAIN_FORMATS = ({"type": "text"}, {"type": "json_object"})


def _text(value: str) -> bool:
    """Whether ``value`` can be sent on as UTF-8 (no lone surrogate)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plain_str(value: Any, max_length: int, allow_blank: bool) -> Any:
    # What CharField returns unchanged: a str it would neither strip nor reject.
    if (
        type(value) is not str
        or len(value) > max_length
        or not value.isascii()
        or "\x00" in value
        or value != value.strip()
        or (not value and not allow_blank)
    ):
        return _SKIP
    return value


def _int(value: Any, lo: int | None, hi: int | None) -> Any:
    if value is None:
        return None
    if type(value) is not int or (lo is not None and value < lo) or (hi is not None and value > hi):
        return _SKIP
    return value


def _float(value: Any, lo: float, hi: float) -> Any:
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or not lo <= value <= hi:
        return _SKIP
    return float(value)


def _bool(value: Any, allow_null: bool) -> Any:
    if type(value) is bool or (value is None and allow_null):
        return value
    return _SKIP


def _stream_options(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is not dict or not all(
        k in StreamOptionsField.KEYS and (v is None or type(v) is bool) for k, v in value.items()
    ):
        return _SKIP
    return dict(value)


def _response_format(value: Any) -> Any:
    if value is None:
        return None
    return dict(value) if type(value) is dict and value in _PLAIN_FORMATS else _SKIP


def _stop(value: Any) -> Any:
    if value is None or (type(value) is str and _text(value)):
        return value
    if type(value) is list and len(value) <= 4 and all(type(s) is str and _text(s) for s in value):
        return value
    return _SKIP


def _priority(value: Any) -> Any:
    if type(value) is str and value.upper() in _PRIORITY_NAMES:
        return _PRIORITY_NAMES[value.upper()]
    if type(value) is int and value in Priority.values:
        return value
    return _SKIP


def _message(value: Any) -> Any:
    if type(value) is not dict:
        return _SKIP
    role, content = value.get("role"), value.get("content")
    # list content, empty or blank turns, tool calls and results: the serializer's rules
    if (
        type(role) is not str
        or role not in ROLES
        or role == "tool"
        or type(content) is not str
        or is_blank(content)
        or not _text(content)
    ):
        return _SKIP
    message = {"role": role, "content": content}
    for key in value:
        if key == "name":
            name = _plain_str(value["name"], 64, allow_blank=False)
            if name is _SKIP:
                return _SKIP
            message["name"] = name
        elif key not in ("role", "content"):
            return _SKIP
    return message


@functools.lru_cache(maxsize=4)
def _fields(limit: int) -> dict[str, Callable[[Any], Any]]:
    return {
        "model": lambda v: _plain_str(v, 100, allow_blank=True),
        "agent_type": lambda v: _plain_str(v, 64, allow_blank=True),
        "priority": _priority,
        "max_tokens": lambda v: _int(v, 1, limit),
        "max_completion_tokens": lambda v: _int(v, 1, limit),
        "temperature": lambda v: _float(v, 0.0, 2.0),
        "top_p": lambda v: _float(v, 0.0, 1.0),
        "n": lambda v: _int(v, 1, 1),
        "stream": lambda v: _bool(v, allow_null=False),
        "stream_options": _stream_options,
        "stop": _stop,
        "presence_penalty": lambda v: _float(v, -2.0, 2.0),
        "frequency_penalty": lambda v: _float(v, -2.0, 2.0),
        "seed": lambda v: _int(v, None, None),
        "user": lambda v: _plain_str(v, 256, allow_blank=True),
        "response_format": _response_format,
        "logprobs": lambda v: _bool(v, allow_null=True),
        "top_logprobs": lambda v: _int(v, 0, 20),
    }


def fast_chat_request(data: dict[str, Any]) -> dict[str, Any] | None:
    """``ChatCompletionRequestSerializer(data=data).validated_data`` for the common, plainly valid
    request, without building a serializer. None when anything is unusual or invalid (a field it
    does not know included: tools, unknown fields...): the caller then runs the serializer, which
    decides and words any error. It accepts a subset of what the serializer accepts and returns
    the same values for it (tests/inference/test_chat_fast_validation.py holds the two together),
    and only what can be forwarded as is (``find_unforwardable`` finds nothing in it)."""
    messages = data.get("messages")
    if type(messages) is not list or not messages or len(messages) > settings.MEDAI_MAX_MESSAGES:
        return None
    fields = _fields(settings.MEDAI_MAX_TOKENS_LIMIT)
    req: dict[str, Any] = {}
    for key, value in data.items():
        if key == "messages":
            continue
        check = fields.get(key)
        if check is None:
            return None
        value = check(value)
        if value is _SKIP:
            return None
        req[key] = value
    cleaned = []
    for message in messages:
        message = _message(message)
        if message is _SKIP:
            return None
        cleaned.append(message)
    req["messages"] = cleaned
    req.setdefault("stream", False)
    return req
