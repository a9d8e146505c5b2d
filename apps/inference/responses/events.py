"""A chat stream's chunks → the Responses API's server-sent events (``ResponseStreamEvent``).

    response.created, response.in_progress                       at the start
    response.output_item.added, response.content_part.added       the first text of the answer
    response.output_text.delta                                     each text delta
    response.output_item.added (function_call)                     a tool call starts
    response.function_call_arguments.delta                         each piece of its arguments
    …text.done, content_part.done, function_call_arguments.done,
    response.output_item.done                                      each item, in order, as it ends
    response.completed (or response.incomplete)                    the whole Response, with usage
    response.failed / error                                        a backend failure / a record not kept

Each event names its type in the SSE ``event:`` line and carries a ``sequence_number`` counting
from 0. Output items are sequential, as OpenAI's are: a tool call after text closes the message.
"""

from __future__ import annotations

import json
from typing import Any

from apps.inference.responses import output, store


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class StreamEvents:
    """The events of one streamed response, built on its Response ``body`` (``output.skeleton``)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.seq = 0
        self.items: list[dict[str, Any]] = []  # the output items, finished or open
        self._message: dict[str, Any] | None = None  # the open message item
        self._text: list[str] = []
        self._calls: dict[Any, dict[str, Any]] = {}  # open function_call items by the chat call index
        self.finish_reason: str | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, **fields, "sequence_number": self.seq}
        self.seq += 1
        return _sse(kind, data)

    def _snapshot(self) -> dict[str, Any]:
        return {**self.body, "output": [dict(i) for i in self.items]}

    def start(self) -> list[bytes]:
        return [
            self._event("response.created", response=self._snapshot()),
            self._event("response.in_progress", response=self._snapshot()),
        ]

    # --- while it streams ------------------------------------------------------------------------

    def chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        """The events of one (normalised) chat chunk."""
        out: list[bytes] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n is 1: medai asks for one choice
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                out += self._text_delta(text)
            for call in delta.get("tool_calls") or ():
                out += self._call_delta(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _text_delta(self, text: str) -> list[bytes]:
        out = []
        if self._message is None:
            out += self._close_calls()
            self._message = output.message_item(output.new_id("msg"), [], "in_progress")
            self.items.append(self._message)
            index = len(self.items) - 1
            out.append(self._event("response.output_item.added", output_index=index, item=dict(self._message)))
            out.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._message["id"],
                    output_index=index,
                    content_index=0,
                    part=output.text_part(""),
                )
            )
        self._text.append(text)
        out.append(
            self._event(
                "response.output_text.delta",
                item_id=self._message["id"],
                output_index=self.items.index(self._message),
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _call_delta(self, call: dict[str, Any]) -> list[bytes]:
        out = []
        key = call.get("index", 0)
        function = call.get("function") or {}
        item = self._calls.get(key)
        if item is None:
            out += self._close_message()
            item = output.call_item(
                output.new_id("fc"),
                call.get("id") or output.new_id("call"),
                function.get("name") or "",
                "",
                "in_progress",
            )
            self.items.append(item)
            self._calls[key] = item
            out.append(self._event("response.output_item.added", output_index=len(self.items) - 1, item=dict(item)))
        elif function.get("name"):
            item["name"] += function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self.items.index(item),
                    delta=arguments,
                )
            )
        return out

    # --- closing items -----------------------------------------------------------------------------

    def _close_message(self, status: str = "completed") -> list[bytes]:
        message = self._message
        if message is None:
            return []
        self._message = None
        index = self.items.index(message)
        text = "".join(self._text)
        self._text = []
        part = output.text_part(text)
        message["content"] = [part]
        message["status"] = status
        return [
            self._event(
                "response.output_text.done",
                item_id=message["id"],
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._event(
                "response.content_part.done", item_id=message["id"], output_index=index, content_index=0, part=part
            ),
            self._event("response.output_item.done", output_index=index, item=dict(message)),
        ]

    def _close_calls(self, status: str = "completed") -> list[bytes]:
        out = []
        for item in self._calls.values():
            index = self.items.index(item)
            item["status"] = status
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    name=item["name"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
            out.append(self._event("response.output_item.done", output_index=index, item=dict(item)))
        self._calls = {}
        return out

    # --- the end -----------------------------------------------------------------------------------

    def done(self, prompt_tokens: int, completion_tokens: int) -> list[bytes]:
        """The stream ended: every open item done, then ``response.completed`` (``incomplete`` when
        the model stopped at max_output_tokens) with the whole Response."""
        incomplete = self.finish_reason in ("length", "content_filter")
        status = "incomplete" if incomplete else "completed"
        out = self._close_message(status) + self._close_calls(status)
        self.body["output"] = self.items
        output.finish(self.body, self.finish_reason, prompt_tokens, completion_tokens)
        kind = "response.incomplete" if incomplete else "response.completed"
        out.append(self._event(kind, response=self.body))
        return out

    def failed(self, message: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> list[bytes]:
        """The model server failed mid-stream: open items end incomplete, then ``response.failed``."""
        out = self._close_message("incomplete") + self._close_calls("incomplete")
        self.body["output"] = self.items
        self.body["status"] = "failed"
        self.body["error"] = {"code": "server_error", "message": message}
        self.body["usage"] = output.usage(prompt_tokens, completion_tokens)
        out.append(self._event("response.failed", response=self.body))
        return out

    def error(self, code: str, message: str) -> bytes:
        """An ``error`` event (the answer is complete but its record is not confirmed)."""
        return self._event("error", code=code, message=message, param=None)


class ResponseFrames:
    """The frames of ``pipeline.run.relay_stream`` for a Responses stream (its ``ChatFrames``'s
    counterpart): the events above in place of chat chunks and ``[DONE]``. A stored response
    (``conversation`` given) puts its conversation and finished Response on the plan's record
    before the record is written, so the client that saw ``response.completed`` can continue it."""

    def __init__(self, plan: Any, body: dict[str, Any], conversation: list[dict[str, Any]] | None) -> None:
        self.plan = plan
        self.events = StreamEvents(body)
        self.conversation = conversation
        self._seq_at_end = 0

    def start(self) -> list[bytes]:
        return self.events.start()

    def chunk(self, chunk: dict[str, Any], usage: Any) -> list[bytes]:
        return self.events.chunk(chunk)

    def done(self) -> list[bytes]:
        self._seq_at_end = self.events.seq
        out = self.events.done(self.plan.prompt_tokens, self.plan.completion_tokens)
        if self.conversation is not None:
            self.plan.record_extra.update(store.content_fields(self.conversation, self.events.body))
        return out

    def failed(self, code: str, reason: str) -> list[bytes]:
        return self.events.failed(
            f"The model server failed mid-stream: {reason}", self.plan.prompt_tokens, self.plan.completion_tokens
        )

    def unrecorded(self) -> list[bytes]:
        self.events.seq = self._seq_at_end  # the events of ``done`` were never sent
        return [
            self.events.error(
                "recording_unavailable",
                "The answer is complete but its record is not in the database (the database is "
                "unavailable or behind); this response is not confirmed as recorded or stored.",
            )
        ]
