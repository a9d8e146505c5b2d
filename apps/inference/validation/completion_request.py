"""The legacy completions request: OpenAI's ``CreateCompletionRequest`` (a prompt, not messages)
plus medai's ``agent_type`` and ``priority``, validated into what medai forwards to a model
server's ``/v1/completions``.

As for chat (``chat_request.py``), nothing a client sends vanishes:

- forwarded, validated: ``prompt`` (a string, or a list of up to ``MAX_PROMPTS`` strings: each
  its own choice, ``index`` its place in the list), ``max_tokens`` (OpenAI's default 16 when
  absent, so that every request's tokens are bounded and held against the quota), ``temperature``,
  ``top_p``, ``stop``, ``presence_penalty``, ``frequency_penalty``, ``seed``, ``logit_bias``,
  ``stream`` with ``stream_options``;
- kept for medai's own record: ``user``;
- accepted only at the value that asks for nothing, a 400 ``unsupported_parameter`` otherwise:
  ``n`` (1), ``best_of`` (1), ``echo`` (false: llama.cpp does not echo), ``logprobs`` (null:
  llama.cpp answers them in the chat shape, not the legacy one), ``suffix`` (null: no insertion).

Token-id prompts (a list of integers) are refused: medai's quotas and records count text. A
list of several prompts cannot be streamed (the chunks of several answers interleave, and
llama.cpp's usage of such a stream is wrong): send one request per prompt.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from apps.inference.errors import ApiError, validation_api_error
from apps.inference.validation.chat_request import find_unforwardable
from apps.inference.validation.fields import (
    LogitBiasField,
    PriorityField,
    StopField,
    StreamOptionsField,
    _error,
    _refuse_undeclared,
)

MAX_PROMPTS = 16
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint

UNSUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "n": ((None, 1), "one completion per prompt; send the request again for another"),
    "best_of": ((None, 1), "medai's model servers generate one candidate per prompt"),
    "echo": ((None, False), "the model servers do not echo the prompt: prepend it yourself"),
    "logprobs": (
        (None,),
        "the legacy completions log probabilities are not available; use /v1/chat/completions with logprobs",
    ),
    "suffix": ((None,), "insertion after a suffix is not available on medai's model servers"),
}


class PromptField(serializers.Field):
    """A string or a list of strings; stored as a list (one choice per prompt)."""

    def to_internal_value(self, data: Any) -> list[str]:
        if isinstance(data, str):
            if not data:
                raise serializers.ValidationError("must not be empty.")
            return [data]
        if not isinstance(data, list) or not data:
            raise serializers.ValidationError("must be a string or a non-empty list of strings.")
        if len(data) > MAX_PROMPTS:
            raise serializers.ValidationError(f"at most {MAX_PROMPTS} prompts are allowed in one request.")
        for i, item in enumerate(data):
            if isinstance(item, int | list) and not isinstance(item, bool):
                raise _error((i,), "token ids are not accepted: send the prompt as text.", "unsupported_parameter")
            if not isinstance(item, str):
                raise _error((i,), "must be a string.")
            if not item:
                raise _error((i,), "must not be empty.")
        return list(data)

    def to_representation(self, value: Any) -> Any:
        return value


class CompletionRequestSerializer(serializers.Serializer):
    """The OpenAI (legacy) completions request, plus medai's ``agent_type`` and ``priority``."""

    model = serializers.CharField(required=False, allow_blank=True, max_length=100)
    agent_type = serializers.CharField(required=False, allow_blank=True, max_length=64)
    priority = PriorityField(required=False)
    prompt = PromptField(help_text="A string, or a list of strings (one choice each, in order).")
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=2.0)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=1.0)
    stream = serializers.BooleanField(required=False, allow_null=True, default=False)
    stream_options = StreamOptionsField(required=False, allow_null=True)
    stop = StopField(required=False, allow_null=True)
    presence_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2.0, max_value=2.0)
    frequency_penalty = serializers.FloatField(required=False, allow_null=True, min_value=-2.0, max_value=2.0)
    seed = serializers.IntegerField(required=False, allow_null=True)
    logit_bias = LogitBiasField(required=False, allow_null=True)
    user = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=256,
        help_text="Your end user's id: kept on medai's record of the request.",
    )

    def to_internal_value(self, data: Any) -> Any:
        _refuse_undeclared(data, self.fields, UNSUPPORTED, "request", api="completions")
        return super().to_internal_value(data)

    def validate_max_tokens(self, value: int | None) -> int | None:
        if value is not None and value > settings.MEDAI_MAX_TOKENS_LIMIT:
            raise serializers.ValidationError(f"must be at most {settings.MEDAI_MAX_TOKENS_LIMIT}.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("stream") and len(attrs["prompt"]) > 1:
            raise _error(
                ("prompt",),
                "a list of several prompts cannot be streamed: send one streamed request per prompt.",
                "unsupported_parameter",
            )
        if attrs.get("stream_options") and not attrs.get("stream"):
            raise _error(("stream_options",), "is only allowed when stream is true.")
        if attrs.get("max_tokens") is None:
            attrs["max_tokens"] = DEFAULT_MAX_TOKENS
        attrs["stream"] = bool(attrs.get("stream"))
        return attrs


def validate_completion(data: dict[str, Any]) -> dict[str, Any]:
    """The validated completions request (``prompt`` always a list); ApiError 400 naming the
    first bad field."""
    unforwardable = find_unforwardable(data)
    if unforwardable is not None:
        param, why = unforwardable
        raise ApiError(400, "invalid_value", f"{param}: {why}." if param else f"The request {why}.", param)
    serializer = CompletionRequestSerializer(data=data)
    if not serializer.is_valid():
        raise validation_api_error(serializer.errors)
    return dict(serializer.validated_data)
