"""The fields of the chat-completions request that DRF has no field for (tools, tool choice,
tool calls, stream options, response format, logit bias, service tier, priority, stop), with the
rules they share: what medai refuses (``UNSUPPORTED``), what is blank, how an error names its path.
The request and its messages: ``chat_request``."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail

from apps.inference.models import Priority

ROLES = ("system", "developer", "user", "assistant", "tool")
# Content part types each role may send (OpenAI's ChatCompletionRequest*MessageContentPart).
PART_TYPES = {
    "system": ("text",),
    "developer": ("text",),
    "tool": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
}
NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MAX_TOOLS = 128

# Python's whitespace (what ``str.strip`` removes) and the invisible zero-width characters: text
# made only of these is blank. The web page's check (static/medai/ask.js) uses the same set.
BLANK_CHARS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
    "\u200b\u200c\u200d\u2060\ufeff"
)

_NOTHING = "is accepted only when it asks for nothing"
# OpenAI request fields medai does not forward: the values that ask for nothing (accepted and
# without effect), and why any other value is refused.
UNSUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "audio": ((None,), "audio output is not available: medai's models answer in text"),
    "modalities": ((None, ["text"]), "only text output is available"),
    "prediction": ((None,), "predicted outputs are not supported by medai's model servers"),
    "web_search_options": ((None,), "medai's models have no web search"),
    "metadata": ((None, {}), "metadata tags stored completions, and medai does not store them"),
    "reasoning_effort": ((None,), "medai's model servers take no reasoning effort"),
    "verbosity": ((None,), "medai's model servers take no verbosity; ask for brevity in the prompt"),
    "moderation": ((None,), "medai runs no moderation model"),
    "prompt_cache_key": (
        (None,),
        "llama.cpp reuses cached prompts by itself; OpenAI's cache routing has no counterpart",
    ),
    "prompt_cache_retention": (
        (None,),
        "llama.cpp reuses cached prompts by itself; OpenAI's cache retention has no counterpart",
    ),
    "prompt_cache_options": (
        (None,),
        "llama.cpp reuses cached prompts by itself; OpenAI's cache options have no counterpart",
    ),
    "functions": ((None,), "deprecated by OpenAI: declare them in tools"),
    "function_call": ((None,), "deprecated by OpenAI: use tool_choice"),
}
MESSAGE_UNSUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "refusal": ((None,), "a refusal cannot be sent back to a model: put its text in content"),
    "audio": ((None,), "medai's models take no audio from earlier answers"),
    "function_call": ((None,), "deprecated by OpenAI: use tool_calls"),
}


def is_blank(text: str) -> bool:
    return not text.strip(BLANK_CHARS)


def _error(path: tuple[Any, ...], message: str, code: str = "invalid") -> serializers.ValidationError:
    """A ValidationError whose detail nests ``message`` under ``path`` (so the 400 names
    e.g. ``tools[0].function.name``)."""
    detail: Any = [ErrorDetail(message, code=code)]
    for key in reversed(path):
        detail = {key: detail}
    return serializers.ValidationError(detail)


def _same(value: Any, accepted: tuple[Any, ...]) -> bool:
    return any(type(value) is type(a) and value == a for a in accepted)


def _refuse_undeclared(
    data: Any,
    declared: Any,
    unsupported: Mapping[str, tuple[tuple[Any, ...], str]],
    what: str,
    api: str = "chat completions",
) -> None:
    if not isinstance(data, Mapping):
        return
    for key, value in data.items():
        if key in declared:
            continue
        rule = unsupported.get(key)
        if rule is None:
            raise _error(
                (key,),
                f"unrecognized {what} argument: medai accepts the fields of OpenAI's {api} "
                "API, plus agent_type, priority" + (" and conversation_id." if api == "chat completions" else "."),
                "unknown_parameter",
            )
        if not _same(value, rule[0]):
            raise _error((key,), f"not supported: {rule[1]}.", "unsupported_parameter")


def _schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a JSON Schema that a model server can constrain output with, or None."""
    try:
        canonical = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError):
        return "is not JSON"
    return _schema_problem_cached(canonical)


@functools.lru_cache(maxsize=256)
def _schema_problem_cached(canonical: str) -> str | None:
    # Agent frameworks send the same tool schemas on every turn: checked once per process.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(json.loads(canonical))
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"is not a valid JSON Schema ({exc.message}{f' at {where}' if where else ''})"
    except RecursionError:
        return "is nested too deeply"
    return None


def _object_schema(path: tuple[Any, ...], schema: Any, what: str) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise _error(path, f"must be a JSON Schema object describing {what}.")
    if "type" in schema and schema["type"] != "object":
        raise _error(path, f"must describe a JSON object (type 'object'): {what} are an object.")
    problem = _schema_problem(schema)
    if problem:
        raise _error(path, problem + ".")
    return schema


def _name(path: tuple[Any, ...], value: Any) -> str:
    if value is None:
        raise _error(path, "this field is required.")
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise _error(path, "must match ^[a-zA-Z0-9_-]{1,64}$ (letters, digits, underscores and dashes, 1 to 64).")
    return value


def _only(path: tuple[Any, ...], value: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    for key in value:
        if key not in allowed:
            raise _error(
                (*path, key), f"unrecognized {what} field (allowed: {', '.join(allowed)}).", "unknown_parameter"
            )


# --- tools ---------------------------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "array",
        "maxItems": MAX_TOOLS,
        "items": {
            "type": "object",
            "required": ["type", "function"],
            "properties": {
                "type": {"type": "string", "enum": ["function"]},
                "function": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
                        "description": {"type": "string"},
                        "parameters": {"type": "object", "description": "A JSON Schema of the arguments (an object)."},
                        "strict": {"type": "boolean", "nullable": True},
                    },
                },
            },
        },
    }
)
class ToolsField(serializers.Field):
    """OpenAI function tools; the same, normalised (``parameters`` defaults to an empty object)."""

    def to_internal_value(self, data: Any) -> list[dict[str, Any]]:
        if not isinstance(data, list):
            raise _error((), "must be a list of tools.")
        if len(data) > MAX_TOOLS:
            raise _error((), f"at most {MAX_TOOLS} tools are allowed.")
        names: set[str] = set()
        return [self._tool(i, tool, names) for i, tool in enumerate(data)]

    def _tool(self, i: int, tool: Any, names: set[str]) -> dict[str, Any]:
        if not isinstance(tool, dict):
            raise _error((i,), "must be an object with 'type' and 'function'.")
        kind = tool.get("type")
        if kind == "custom":
            raise _error(
                (i, "type"),
                "custom tools are not supported by medai's model servers: declare a function tool.",
                "unsupported_parameter",
            )
        if kind != "function":
            raise _error((i, "type"), "must be 'function'.")
        _only((i,), tool, ("type", "function"), "tool")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _error((i, "function"), "must be an object with a 'name'.")
        _only((i, "function"), function, ("name", "description", "parameters", "strict"), "function")
        name = _name((i, "function", "name"), function.get("name"))
        if name in names:
            raise _error((i, "function", "name"), f"'{name}' is declared twice; tool names must be unique.")
        names.add(name)
        out: dict[str, Any] = {"name": name}
        description = function.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise _error((i, "function", "description"), "must be a string.")
            out["description"] = description
        parameters = function.get("parameters")
        out["parameters"] = (
            {"type": "object", "properties": {}}
            if parameters is None
            else _object_schema((i, "function", "parameters"), parameters, "the function's arguments")
        )
        strict = function.get("strict")
        if strict is not None:
            if not isinstance(strict, bool):
                raise _error((i, "function", "strict"), "must be a boolean.")
            out["strict"] = strict
        return {"type": "function", "function": out}


def _function_ref(path: tuple[Any, ...], value: Any) -> str:
    """``{"type": "function", "function": {"name": ...}}`` → the name."""
    if not isinstance(value, dict) or value.get("type") != "function":
        raise _error(path, 'must be {"type": "function", "function": {"name": ...}}.')
    _only(path, value, ("type", "function"), "tool choice")
    function = value.get("function")
    if not isinstance(function, dict):
        raise _error((*path, "function"), "must be an object with a 'name'.")
    _only((*path, "function"), function, ("name",), "tool choice")
    return _name((*path, "function", "name"), function.get("name"))


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": ["none", "auto", "required"]},
            {
                "type": "object",
                "description": '{"type": "function", "function": {"name": ...}} or '
                '{"type": "allowed_tools", "allowed_tools": {"mode", "tools"}}',
            },
        ]
    }
)
class ToolChoiceField(serializers.Field):
    """``none`` | ``auto`` | ``required`` | a named function | OpenAI's ``allowed_tools``."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            if data in ("none", "auto", "required"):
                return data
            raise _error((), "must be 'none', 'auto', 'required' or an object naming a function.")
        if not isinstance(data, dict):
            raise _error((), "must be 'none', 'auto', 'required' or an object naming a function.")
        kind = data.get("type")
        if kind == "function":
            return {"type": "function", "function": {"name": _function_ref((), data)}}
        if kind == "allowed_tools":
            _only((), data, ("type", "allowed_tools"), "tool choice")
            allowed = data.get("allowed_tools")
            if not isinstance(allowed, dict):
                raise _error(("allowed_tools",), "must be an object with 'mode' and 'tools'.")
            _only(("allowed_tools",), allowed, ("mode", "tools"), "allowed_tools")
            mode = allowed.get("mode")
            if mode not in ("auto", "required"):
                raise _error(("allowed_tools", "mode"), "must be 'auto' or 'required'.")
            tools = allowed.get("tools")
            if not isinstance(tools, list) or not tools:
                raise _error(("allowed_tools", "tools"), "must be a non-empty list of function references.")
            names = [_function_ref(("allowed_tools", "tools", i), t) for i, t in enumerate(tools)]
            return {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": mode,
                    "tools": [{"type": "function", "function": {"name": n}} for n in names],
                },
            }
        if kind == "custom":
            raise _error(("type",), "custom tools are not supported by medai's model servers.", "unsupported_parameter")
        raise _error(("type",), "must be 'function' or 'allowed_tools'.")


def tool_choice_names(choice: Any) -> list[str]:
    """The function names a validated ``tool_choice`` object refers to (none for a string)."""
    if not isinstance(choice, dict):
        return []
    if choice["type"] == "function":
        return [choice["function"]["name"]]
    return [t["function"]["name"] for t in choice["allowed_tools"]["tools"]]


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["id", "type", "function"],
            "properties": {
                "id": {"type": "string"},
                "type": {"type": "string", "enum": ["function"]},
                "function": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
                },
            },
        },
    }
)
class ToolCallsField(serializers.Field):
    """An assistant message's earlier tool calls, as the model returned them."""

    def to_internal_value(self, data: Any) -> list[dict[str, Any]]:
        if not isinstance(data, list):
            raise _error((), "must be a list of tool calls.")
        calls = []
        for i, call in enumerate(data):
            if not isinstance(call, dict):
                raise _error((i,), "must be an object with 'id', 'type' and 'function'.")
            _only((i,), call, ("id", "type", "function"), "tool call")
            if call.get("type", "function") != "function":
                raise _error((i, "type"), "must be 'function'.")
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id or len(call_id) > 128:
                raise _error((i, "id"), "must be the tool call's id (a string of 1 to 128 characters).")
            function = call.get("function")
            if not isinstance(function, dict):
                raise _error((i, "function"), "must be an object with 'name' and 'arguments'.")
            _only((i, "function"), function, ("name", "arguments"), "function")
            name = function.get("name")
            if not isinstance(name, str) or not name:
                raise _error((i, "function", "name"), "must be the called function's name.")
            arguments = function.get("arguments")
            if not isinstance(arguments, str):
                raise _error(
                    (i, "function", "arguments"), "must be a string (the JSON arguments as the model returned them)."
                )
            calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        return calls


# --- other structured fields -----------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "properties": {"include_usage": {"type": "boolean"}, "include_obfuscation": {"type": "boolean"}},
    }
)
class StreamOptionsField(serializers.Field):
    KEYS = ("include_usage", "include_obfuscation")

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise _error((), "must be an object.")
        _only((), data, self.KEYS, "stream option")
        for key, value in data.items():
            if value is not None and not isinstance(value, bool):
                raise _error((key,), "must be a boolean.")
        return dict(data)


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
            "json_schema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "description": {"type": "string"},
                    "schema": {"type": "object"},
                    "strict": {"type": "boolean"},
                },
            },
        },
    }
)
class ResponseFormatField(serializers.Field):
    TYPES = ("text", "json_object", "json_schema")

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise _error((), "must be an object with a 'type'.")
        kind = data.get("type")
        if kind not in self.TYPES:
            raise _error(("type",), f"must be one of {', '.join(self.TYPES)}.")
        if kind == "json_schema":
            spec = data.get("json_schema")
            if not isinstance(spec, dict):
                raise _error(("json_schema",), "must be an object with a 'name' and a 'schema'.")
            _only(("json_schema",), spec, ("name", "description", "schema", "strict"), "json_schema")
            _name(("json_schema", "name"), spec.get("name"))
            if spec.get("schema") is not None:
                if not isinstance(spec["schema"], dict):
                    raise _error(("json_schema", "schema"), "must be a JSON Schema object.")
                problem = _schema_problem(spec["schema"])
                if problem:
                    raise _error(("json_schema", "schema"), problem + ".")
            if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
                raise _error(("json_schema", "strict"), "must be a boolean.")
        return dict(data)


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "additionalProperties": {"type": "number"},
        "description": "Token id → bias between -100 and 100.",
    }
)
class LogitBiasField(serializers.Field):
    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise _error((), "must be an object mapping token ids to a bias.")
        if len(data) > 1024:
            raise _error((), "at most 1024 token biases are allowed.")
        for key, value in data.items():
            if not key.isascii() or not key.isdigit():
                raise _error((key,), "must be a token id (digits).")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
                raise _error((key,), "must be a number between -100 and 100.")
        return dict(data)


@extend_schema_field({"type": "string", "enum": ["auto", "default"], "nullable": True})
class ServiceTierField(serializers.Field):
    def to_internal_value(self, data: Any) -> str:
        if data in ("auto", "default"):
            return str(data)
        raise _error(
            (),
            "only 'auto' and 'default' are available: medai has one service tier (order requests with "
            "its own priority field).",
            "unsupported_parameter",
        )


@extend_schema_field({"type": "string", "enum": ["low", "normal", "high", "critical"], "default": "normal"})
class PriorityField(serializers.Field):
    """Accepts ``"high"``/``"HIGH"`` or 0–3; stores the integer level."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and data.upper() in Priority.names:
            return int(Priority[data.upper()])
        if isinstance(data, int) and not isinstance(data, bool) and data in Priority.values:
            return data
        raise serializers.ValidationError(f"must be one of {', '.join(n.lower() for n in Priority.names)}.")

    def to_representation(self, value: int) -> str:
        return Priority(value).name.lower()


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]})
class StopField(serializers.Field):
    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            return data
        if isinstance(data, list) and len(data) <= 4 and all(isinstance(s, str) for s in data):
            return data
        raise serializers.ValidationError("must be a string or a list of up to 4 strings.")

    def to_representation(self, value: Any) -> Any:
        return value
