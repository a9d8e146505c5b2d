"""The pipeline's validate step: a plain value (a request body, a parsed dict) → a validated
request, or an ``ApiError`` 400 naming the first bad field. Below the API layer, so the pipeline,
the services and the queue validate without importing ``api/``.

    chat_request.py  OpenAI's CreateChatCompletionRequest as a DRF serializer (the reference rules)
    fields.py        its fields DRF has none for (tools, tool choice, ...) and what medai refuses
    fast.py          the common plain request validated without a serializer (the hot path)
    completion_request.py  OpenAI's (legacy) CreateCompletionRequest: a prompt, not messages
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

from apps.inference.errors import ApiError, validation_api_error
from apps.inference.validation.chat_request import ChatCompletionRequestSerializer, find_unforwardable
from apps.inference.validation.completion_request import validate_completion
from apps.inference.validation.fast import fast_chat_request

MAX_DEADLINE_S = 7 * 86400
__all__ = ["parse_json_object", "validate_batch", "validate_chat", "validate_completion", "validate_task"]


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object; ApiError 400 ``invalid_json`` otherwise."""
    if not body:
        raise ApiError(400, "invalid_json", "Request body is empty; expected a JSON object.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"Request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "Request body is JSON nested too deeply.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "Request body must be a JSON object.")
    return data


def validate_chat(data: dict[str, Any]) -> dict[str, Any]:
    """The validated chat request; ApiError 400 naming the first bad field, also for what the
    JSON parser accepts but cannot be forwarded (a lone surrogate, NaN)."""
    req = fast_chat_request(data)  # takes only what can be forwarded as is
    if req is None:
        unforwardable = find_unforwardable(data)
        if unforwardable is not None:
            param, why = unforwardable
            raise ApiError(400, "invalid_value", f"{param}: {why}." if param else f"The request {why}.", param)
        serializer = ChatCompletionRequestSerializer(data=data)
        if not serializer.is_valid():
            raise validation_api_error(serializer.errors)
        req = serializer.validated_data
    return req


def validate_task(item: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """One async task request (a chat request without ``stream``, plus the queue's ``deadline_s``)
    → (the validated chat request, deadline_s). ApiError 400 naming the field."""
    if item.get("stream"):
        raise ApiError(
            400, "invalid_value", "stream is not available for async tasks; poll the result instead.", "stream"
        )
    if item.get("conversation_id") is not None:
        raise ApiError(
            400,
            "invalid_value",
            "conversation_id is for chat completions; an async task is kept (until the end of "
            "retention) in your history on its own.",
            "conversation_id",
        )
    deadline_s = item.get("deadline_s")
    if deadline_s is not None and (
        isinstance(deadline_s, bool)
        or not isinstance(deadline_s, (int, float))
        or not 1 <= deadline_s <= MAX_DEADLINE_S
    ):
        raise ApiError(
            400, "invalid_value", "deadline_s must be a number of seconds between 1 and 604800.", "deadline_s"
        )
    # deadline_s is the queue's own field, checked above: the chat validation refuses unknown fields
    chat = {k: v for k, v in item.items() if k != "deadline_s"} if "deadline_s" in item else item
    return validate_chat(chat), deadline_s


def validate_batch(items: Any) -> list[tuple[dict[str, Any], float | None]]:
    """The ``requests`` of an async batch: a non-empty list of at most MEDAI_BATCH_MAX task requests
    (413 beyond), each validated once (``validate_task``); a 400 names the item, ``requests[i]``."""
    if not isinstance(items, list) or not items:
        raise ApiError(400, "invalid_value", "requests must be a non-empty list.", "requests")
    limit = settings.MEDAI_BATCH_MAX
    if len(items) > limit:
        raise ApiError(413, "batch_too_large", f"A batch holds at most {limit} requests, got {len(items)}.", "requests")
    validated = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ApiError(400, "invalid_value", f"requests[{i}] must be an object.", f"requests[{i}]")
        try:
            validated.append(validate_task(item))
        except ApiError as exc:
            exc.message = f"requests[{i}]: {exc.message}"
            exc.param = f"requests[{i}].{exc.param}" if exc.param else f"requests[{i}]"
            raise
    return validated
