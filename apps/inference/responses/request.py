"""CreateResponse (shared/specs/openai-openapi.yaml) → the chat request medai forwards.

``parse`` checks the Responses shapes and refuses what medai cannot do (a 400 naming the field:
``unsupported_parameter`` for an OpenAI field medai cannot honour, ``unknown_parameter`` for one
OpenAI does not define). ``chat_request`` puts the conversation together (instructions, the stored
conversation of ``previous_response_id``, the new input) and runs the chat validator on it, the
rules every chat request passes; an error it finds is reported under the Responses field the
offending message or tool came from.

What maps onto what:

    input: "text"                          a user message
    input: [{role, content}]               messages (user, assistant, system, developer); content a
                                           string or input_text / output_text / refusal /
                                           input_image (URL) parts
    {type: function_call, call_id, ...}    the assistant's tool call (consecutive calls: one turn)
    {type: function_call_output, ...}      a tool message answering call_id
    instructions                           a system message first (never carried over)
    max_output_tokens                      max_tokens
    tools [{type: function, name, ...}]    tools [{type: function, function: {...}}]
    tool_choice {type: function, name}     tool_choice {type: function, function: {name}}
    text.format                            response_format
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from apps.inference import validation
from apps.inference.errors import ApiError
from apps.inference.validation.fields import UNSUPPORTED

# Fields passed to the chat validator as they are.
SAME = ("model", "agent_type", "priority", "temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier")
SHARED_WITH_CHAT = ("moderation", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options")
# OpenAI fields medai takes only at the value that asks for nothing, and why any other is refused.
NOTHING: dict[str, tuple[tuple[Any, ...], str]] = {
    "background": ((None, False), "background responses are not available: use the async API (/v1/async/submit)"),
    "conversation": ((None,), "conversations are not stored: chain responses with previous_response_id"),
    "prompt": ((None,), "stored prompt templates are not available: send instructions and input"),
    "context_management": ((None,), "medai's model servers do no context management"),
    "include": ((None, []), "medai's answers carry no extra output data (logprobs, sources, encrypted reasoning)"),
    "truncation": ((None, "disabled"), "medai does not truncate the input: a too long one is a 400"),
    "reasoning": (
        (None, {}, {"effort": None}, {"effort": None, "summary": None}),
        "medai's models take no reasoning effort",
    ),
    "top_logprobs": ((None, 0), "log probabilities are not returned by the Responses translation"),
    # the same reasons as the chat validator's: one wording for one refusal
    **{name: UNSUPPORTED[name] for name in SHARED_WITH_CHAT},
}
KNOWN = frozenset(
    (
        *SAME,
        *NOTHING,
        "input",
        "instructions",
        "max_output_tokens",
        "tools",
        "tool_choice",
        "store",
        "previous_response_id",
        "metadata",
        "stream",
        "stream_options",
        "text",
        "service_tier",
        "max_tool_calls",
    )
)
MIN_OUTPUT_TOKENS = 16  # OpenAI's own minimum for max_output_tokens


def _bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, code, f"{param}: {message}", param)


def _same(value: Any, accepted: tuple[Any, ...]) -> bool:
    return any(type(value) is type(a) and value == a for a in accepted)


@dataclass
class ResponseRequest:
    """A checked CreateResponse: the chat fields it becomes and what its Response echoes."""

    chat: dict[str, Any]  # the chat request's fields but its messages
    messages: list[dict[str, Any]]  # the chat messages of ``input`` alone
    origins: list[Any]  # per message of ``messages``: the Responses path(s) it came from
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)  # as the Response echoes them
    tool_choice: Any = "auto"
    metadata: dict[str, str] = field(default_factory=dict)
    text: dict[str, Any] = field(default_factory=lambda: {"format": {"type": "text"}})
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    user: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    # The conversation sent, without the instructions (a previous response's, then ``messages``):
    # what a stored response keeps. Set once the previous one is read (pipeline.plan.plan_response).
    conversation: list[dict[str, Any]] = field(default_factory=list)


# --- input ---------------------------------------------------------------------------------------


def _text_part(path: str, part: Any, role: str) -> dict[str, Any]:
    """One content part → its chat part."""
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise _bad(path, "must be an object with a 'type'.")
    kind = part["type"]
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise _bad(f"{path}.text", "must be a string.")
        return {"type": "text", "text": text}
    if kind == "refusal" and role == "assistant":
        refusal = part.get("refusal")
        if not isinstance(refusal, str):
            raise _bad(f"{path}.refusal", "must be a string.")
        return {"type": "refusal", "refusal": refusal}
    if kind == "input_image" and role == "user":
        url = part.get("image_url")
        if part.get("file_id") is not None or not isinstance(url, str) or not url:
            raise _bad(
                f"{path}.image_url",
                "an image is sent by URL (https: or data:); medai has no Files API for file_id.",
                "unsupported_parameter",
            )
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind in ("input_file", "input_audio", "input_image"):
        raise _bad(f"{path}.type", f"'{kind}' content is not available here.", "unsupported_parameter")
    raise _bad(f"{path}.type", f"'{kind}' is not a content part of a {role} message.")


def _content(path: str, content: Any, role: str) -> Any:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(path, "must be a string or a list of content parts.")
    parts = [_text_part(f"{path}[{j}]", p, role) for j, p in enumerate(content)]
    if all(p["type"] == "text" for p in parts):
        if len(parts) == 1:
            return parts[0]["text"]
        if role == "assistant":
            return "".join(p["text"] for p in parts)  # one answer, as OpenAI's output_text concatenates
    return parts


def _message(path: str, item: dict[str, Any]) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise _bad(f"{path}.role", "must be one of user, assistant, system, developer.")
    for key, value in item.items():
        if key in ("role", "content", "type", "id", "status"):
            continue  # an output message sent back keeps its id and status: nothing to forward
        if key == "phase" and value is None:
            continue
        raise _bad(f"{path}.{key}", "unrecognized message field.", "unknown_parameter")
    if "content" not in item:
        raise _bad(f"{path}.content", "this field is required.")
    return {"role": role, "content": _content(f"{path}.content", item["content"], role)}


def _string(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(path, "must be a non-empty string.")
    return value


def _call(path: str, item: dict[str, Any]) -> dict[str, Any]:
    for key in item:
        if key not in ("type", "call_id", "name", "arguments", "id", "status", "namespace", "caller"):
            raise _bad(f"{path}.{key}", "unrecognized function_call field.", "unknown_parameter")
    for key in ("namespace", "caller"):
        if item.get(key) is not None:
            raise _bad(f"{path}.{key}", "tool namespaces and callers are not available.", "unsupported_parameter")
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        raise _bad(f"{path}.arguments", "must be a JSON string of the call's arguments.")
    return {
        "id": _string(f"{path}.call_id", item.get("call_id")),
        "type": "function",
        "function": {"name": _string(f"{path}.name", item.get("name")), "arguments": arguments},
    }


def _call_output(path: str, item: dict[str, Any]) -> dict[str, Any]:
    for key in item:
        if key not in ("type", "call_id", "output", "id", "status", "name", "namespace", "caller"):
            raise _bad(f"{path}.{key}", "unrecognized function_call_output field.", "unknown_parameter")
    output = item.get("output")
    if isinstance(output, list):
        parts = [_text_part(f"{path}.output[{j}]", p, "tool") for j, p in enumerate(output)]
        output = "".join(p["text"] for p in parts)
    if not isinstance(output, str):
        raise _bad(f"{path}.output", "must be a string or a list of input_text parts.")
    return {"role": "tool", "tool_call_id": _string(f"{path}.call_id", item.get("call_id")), "content": output}


def input_messages(value: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """``input`` → (chat messages, where each came from: a message's path; ``("tool", path)`` for a
    function_call_output; for an assistant turn of tool calls ``{"message": path or None, "calls":
    [paths]}``)."""
    if value is None:
        return [], []
    if isinstance(value, str):
        return [{"role": "user", "content": value}], ["input"]
    if not isinstance(value, list):
        raise _bad("input", "must be a string or a list of input items.")
    messages: list[dict[str, Any]] = []
    origins: list[Any] = []
    for i, item in enumerate(value):
        path = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(path, "must be an object (a message, function_call or function_call_output).")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(path, item))
            origins.append(path)
        elif kind == "function_call":
            call = _call(path, item)
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":  # the same turn: text, then calls
                last.setdefault("tool_calls", []).append(call)
                origin = origins[-1]
                if isinstance(origin, str):
                    origins[-1] = {"message": origin, "calls": [path]}
                else:
                    origin["calls"].append(path)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
                origins.append({"message": None, "calls": [path]})
        elif kind == "function_call_output":
            messages.append(_call_output(path, item))
            origins.append(("tool", path))
        elif kind == "item_reference":
            raise _bad(
                f"{path}.type",
                "item references are not available: send the items, or chain with previous_response_id.",
                "unsupported_parameter",
            )
        else:
            raise _bad(
                f"{path}.type",
                f"'{kind}' items are not available: medai takes messages, function_call and function_call_output.",
                "unsupported_parameter" if isinstance(kind, str) else "invalid_value",
            )
    return messages, origins


# --- tools ---------------------------------------------------------------------------------------


def _tools(value: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``tools`` → (chat tools, the tools as the Response echoes them)."""
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise _bad("tools", "must be a list of tools.")
    chat, echo = [], []
    for i, tool in enumerate(value):
        path = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _bad(path, "must be an object.")
        if tool.get("type") != "function":
            raise _bad(
                f"{path}.type",
                f"'{tool.get('type')}' tools are OpenAI's own; medai's models call function tools only.",
                "unsupported_parameter",
            )
        for key, value_ in tool.items():
            if key in ("type", "name", "description", "parameters", "strict"):
                continue
            if key in ("defer_loading", "output_schema", "allowed_callers"):
                if value_ in (None, False):
                    continue
                raise _bad(f"{path}.{key}", "not available for medai's function tools.", "unsupported_parameter")
            raise _bad(f"{path}.{key}", "unrecognized function tool field.", "unknown_parameter")
        function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
        chat.append({"type": "function", "function": function})
        echo.append(
            {
                "type": "function",
                "name": tool.get("name"),
                "description": tool.get("description"),
                "parameters": tool.get("parameters"),
                "strict": tool.get("strict"),
            }
        )
    return chat, echo


def _function_name(path: str, value: Any) -> str:
    if not isinstance(value, dict) or value.get("type") != "function":
        raise _bad(path, "must name a function tool: {'type': 'function', 'name': ...}.", "unsupported_parameter")
    return _string(f"{path}.name", value.get("name"))


def _tool_choice(value: Any) -> Any:
    """``tool_choice`` → the chat tool choice (None: not sent)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value in ("none", "auto", "required"):
            return value
        raise _bad("tool_choice", "must be 'none', 'auto', 'required' or an object naming a function.")
    if not isinstance(value, dict):
        raise _bad("tool_choice", "must be 'none', 'auto', 'required' or an object naming a function.")
    kind = value.get("type")
    if kind == "function":
        extra = set(value) - {"type", "name"}
        if extra:
            raise _bad(f"tool_choice.{sorted(extra)[0]}", "unrecognized field.", "unknown_parameter")
        return {"type": "function", "function": {"name": _function_name("tool_choice", value)}}
    if kind == "allowed_tools":
        extra = set(value) - {"type", "mode", "tools"}
        if extra:
            raise _bad(f"tool_choice.{sorted(extra)[0]}", "unrecognized field.", "unknown_parameter")
        tools = value.get("tools")
        if not isinstance(tools, list) or not tools:
            raise _bad("tool_choice.tools", "must be a non-empty list of function tools.")
        names = [_function_name(f"tool_choice.tools[{i}]", t) for i, t in enumerate(tools)]
        return {
            "type": "allowed_tools",
            "allowed_tools": {
                "mode": value.get("mode"),
                "tools": [{"type": "function", "function": {"name": n}} for n in names],
            },
        }
    raise _bad(
        "tool_choice.type",
        f"'{kind}' names one of OpenAI's own tools; medai's models call function tools only.",
        "unsupported_parameter",
    )


# --- text format, metadata -------------------------------------------------------------------------


def _text(value: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """``text`` → (the chat response_format or None, the ``text`` the Response echoes)."""
    if value is None:
        return None, {"format": {"type": "text"}}
    if not isinstance(value, dict):
        raise _bad("text", "must be an object with a 'format'.")
    for key in value:
        if key == "verbosity":
            if value[key] is not None:
                raise _bad("text.verbosity", "medai's model servers take no verbosity.", "unsupported_parameter")
        elif key != "format":
            raise _bad(f"text.{key}", "unrecognized field.", "unknown_parameter")
    fmt = value.get("format") or {"type": "text"}
    if not isinstance(fmt, dict):
        raise _bad("text.format", "must be an object with a 'type'.")
    kind = fmt.get("type")
    if kind == "text":
        return None, {"format": {"type": "text"}}
    if kind == "json_object":
        return {"type": "json_object"}, {"format": {"type": "json_object"}}
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "description", "strict") if fmt.get(k) is not None}
        return {"type": "json_schema", "json_schema": schema}, {"format": dict(fmt)}
    raise _bad("text.format.type", "must be 'text', 'json_object' or 'json_schema'.")


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > 16:
        raise _bad("metadata", "must be an object of at most 16 string values.")
    # Metadata is only echoed (never sent to the model), so the chat validator never sees it: what
    # cannot be sent back as JSON text (a lone surrogate) is refused here.
    unforwardable = validation.find_unforwardable(value)
    if unforwardable is not None:
        param, why = unforwardable
        raise _bad(f"metadata.{param}" if param else "metadata", why + ".")
    for key, text in value.items():
        if len(key) > 64:
            raise _bad("metadata", f"key '{key[:64]}…' is longer than 64 characters.")
        if not isinstance(text, str) or len(text) > 512:
            raise _bad(f"metadata.{key}", "must be a string of at most 512 characters.")
    return dict(value)


def _optional_bool(name: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if type(value) is not bool:
        raise _bad(name, "must be true or false.")
    return value


# --- the request ---------------------------------------------------------------------------------


def parse(data: dict[str, Any]) -> ResponseRequest:
    """A CreateResponse body (a parsed JSON object) checked: ApiError 400 naming the first bad field."""
    for key, value in data.items():
        if key not in KNOWN:
            raise _bad(
                key,
                "unrecognized request argument: medai accepts the fields of OpenAI's Responses API, "
                "plus agent_type and priority.",
                "unknown_parameter",
            )
        rule = NOTHING.get(key)
        if rule is not None and not _same(value, rule[0]):
            raise _bad(key, f"not supported: {rule[1]}.", "unsupported_parameter")
    chat: dict[str, Any] = {k: data[k] for k in SAME if data.get(k) is not None}
    messages, origins = input_messages(data.get("input"))
    instructions = data.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("instructions", "must be a string.")
    previous = data.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise _bad("previous_response_id", "must be the id of a stored response.")
    max_output = data.get("max_output_tokens")
    if max_output is not None:
        limit = settings.MEDAI_MAX_TOKENS_LIMIT
        if type(max_output) is not int or not MIN_OUTPUT_TOKENS <= max_output <= limit:
            raise _bad("max_output_tokens", f"must be an integer from {MIN_OUTPUT_TOKENS} to {limit}.")
        chat["max_tokens"] = max_output
    max_tool_calls = data.get("max_tool_calls")
    if max_tool_calls is not None and (type(max_tool_calls) is not int or max_tool_calls < 0):
        raise _bad("max_tool_calls", "must be a non-negative integer.")  # caps built-in tools: medai has none
    chat_tools, echo_tools = _tools(data.get("tools"))
    if chat_tools:
        chat["tools"] = chat_tools
    choice = _tool_choice(data.get("tool_choice"))
    if choice is not None:
        chat["tool_choice"] = choice
    response_format, text = _text(data.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    stream = _optional_bool("stream", data.get("stream"), False)
    options = data.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_obfuscation"}:
            raise _bad("stream_options", "must be an object with only include_obfuscation.")
        if options.get("include_obfuscation"):
            raise _bad(
                "stream_options.include_obfuscation",
                "medai's events carry no obfuscation padding (set it to false).",
                "unsupported_parameter",
            )
        if not stream:
            raise _bad("stream_options", "is only allowed with stream: true.")
    tier = data.get("service_tier")
    if tier is not None:
        if tier not in ("auto", "default"):
            raise _bad("service_tier", "medai serves one tier: 'auto' or 'default'.", "unsupported_parameter")
        chat["service_tier"] = tier
    if stream:
        chat["stream"] = True
    return ResponseRequest(
        chat=chat,
        messages=messages,
        origins=origins,
        instructions=instructions,
        previous_response_id=previous,
        store=_optional_bool("store", data.get("store"), True),
        stream=stream,
        tools=echo_tools,
        tool_choice=data.get("tool_choice") if data.get("tool_choice") is not None else "auto",
        metadata=_metadata(data.get("metadata")),
        text=text,
        max_output_tokens=max_output,
        max_tool_calls=max_tool_calls,
        parallel_tool_calls=_optional_bool("parallel_tool_calls", data.get("parallel_tool_calls"), True),
        temperature=data.get("temperature"),
        top_p=data.get("top_p"),
        user=data.get("user"),
        safety_identifier=data.get("safety_identifier"),
        service_tier=tier,
    )


def chat_request(rr: ResponseRequest, history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The validated chat request of a checked CreateResponse: the instructions as a system message,
    then ``history`` (a previous response's conversation), then the input. ApiError 400 naming the
    Responses field a chat rule found wrong."""
    messages: list[dict[str, Any]] = []
    origins: list[Any] = []
    if rr.instructions is not None:
        messages.append({"role": "system", "content": rr.instructions})
        origins.append("instructions")
    for message in history or ():
        messages.append(message)
        origins.append("previous_response_id")
    messages.extend(rr.messages)
    origins.extend(rr.origins)
    if not rr.messages:
        raise _bad("input", "is required: the text or the items the model should answer.")
    try:
        return validation.validate_chat({**rr.chat, "messages": messages})
    except ApiError as exc:
        if exc.status_code == 400:
            _rename(exc, origins)
        raise


# --- a chat error, named in Responses terms ------------------------------------------------------

_FIELDS = {"max_tokens": "max_output_tokens"}


def _message_path(rest: str, origin: Any) -> str:
    """The Responses path of ``messages[i]<rest>`` whose message came from ``origin``."""
    if isinstance(origin, dict):  # an assistant turn with tool calls
        if rest.startswith(".tool_calls["):
            index = int(rest[len(".tool_calls[") : rest.index("]")])
            after = rest[rest.index("]") + 1 :]
            leaf = after.rsplit(".", 1)[-1] if after else ""
            calls = origin["calls"]
            path = calls[min(index, len(calls) - 1)]
            return f"{path}.{'call_id' if leaf == 'id' else leaf}" if leaf in ("id", "name", "arguments") else path
        return origin["message"] or origin["calls"][0]
    if isinstance(origin, tuple):  # a function_call_output
        return origin[1] + rest.replace(".tool_call_id", ".call_id").replace(".content", ".output")
    if origin in ("instructions", "previous_response_id", "input"):
        return origin
    return origin + rest


def _rename(exc: ApiError, origins: list[Any]) -> None:
    param = exc.param or ""
    new = param
    if param.startswith("messages[") and "]" in param:
        index = int(param[len("messages[") : param.index("]")])
        rest = param[param.index("]") + 1 :]
        if index < len(origins):
            new = _message_path(rest, origins[index])
    elif param == "messages":
        new = "input"
    elif param.startswith("tools[") and ".function" in param:
        new = param.replace(".function", "", 1)
    elif param.startswith("tool_choice"):
        new = param.replace(".function", "").replace(".allowed_tools", "")
    elif param.startswith("response_format"):  # the Responses format is flat: text.format.name
        new = "text.format" + param[len("response_format") :].replace(".json_schema", "", 1)
    else:
        head = param.split(".", 1)[0].split("[", 1)[0]
        if head in _FIELDS:
            new = _FIELDS[head] + param[len(head) :]
    if new != param:
        exc.param = new or None
        if param and exc.message.startswith(param):
            exc.message = (new or "The request") + exc.message[len(param) :]
