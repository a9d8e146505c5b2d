"""A batch input file, line by line: OpenAI's request-input format, checked at upload so that a bad
line is the uploader's 400 naming the line and the field, never a batch that fails later.

Each non-blank line is one JSON object ``{custom_id, method, url, body}``:

- ``custom_id``: a non-empty string of at most ``CUSTOM_ID_MAX`` characters, unique in the file
  (the output file answers each line under it);
- ``method``: ``POST``;
- ``url``: an endpoint the queue runs (``ENDPOINTS``: ``/v1/chat/completions``; a line for
  another endpoint is refused, never dropped);
- ``body``: that endpoint's request, validated by the pipeline's own validation, as an async task
  is (``stream`` refused). ``priority`` and ``deadline_s`` belong to the batch (its
  ``metadata.priority`` and completion window), not to a line.

Lines are split on ``\\n`` only (a JSON string may hold U+2028 or a form feed); a trailing ``\\r``
and blank lines are allowed. Line numbers in errors are the file's own, 1-based.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from apps.inference import validation
from apps.inference.errors import ApiError

CHAT_URL = "/v1/chat/completions"
ENDPOINTS = (CHAT_URL,)  # what the queue runs; /v1/embeddings joins once the pipeline serves it in the queue
CUSTOM_ID_MAX = 512
LINE_FIELDS = ("custom_id", "method", "url", "body")
BATCH_FIELDS = {
    "priority": "set a batch's priority with metadata.priority when creating the batch",
    "deadline_s": "a batch's lines run within its completion_window",
}


@dataclass(frozen=True)
class Line:
    """One request of the file: its place (0-based among requests), its line number in the file,
    and what it asks."""

    index: int
    number: int
    custom_id: str
    url: str
    body: dict[str, Any]


def split_lines(text: str) -> list[str]:
    """The file's physical lines, each with its ``\\n`` (the last one may have none)."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def decode(data: bytes) -> str:
    """The file as text: UTF-8 (a BOM allowed), else a 400 naming ``file``."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "invalid_file", f"file: not UTF-8 text (an invalid byte at offset {exc.start}).", "file"
        ) from None


def _bad(number: int, field: str, message: str, code: str = "invalid_file") -> ApiError:
    where = f"line[{number}]" + (f".{field}" if field else "")
    return ApiError(400, code, f"file, line {number}: {field + ': ' if field else ''}{message}", where)


def parse_line(raw: str, number: int) -> tuple[str, str, dict[str, Any]]:
    """(custom_id, url, body) of one non-blank line, its structure checked; ApiError 400 naming
    the line and field."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _bad(number, "", f"not valid JSON ({exc.msg} at column {exc.colno}).") from None
    except ValueError:  # a number too long to convert, say
        raise _bad(number, "", "not valid JSON.") from None
    except RecursionError:
        raise _bad(number, "", "JSON nested too deeply.") from None
    if not isinstance(data, dict):
        raise _bad(number, "", "must be a JSON object {custom_id, method, url, body}.")
    for name in data:
        if name not in LINE_FIELDS:
            raise _bad(number, str(name)[:64], "unknown field of a batch request line.", "unknown_parameter")
    for name in LINE_FIELDS:
        if name not in data:
            raise _bad(number, name, "this field is required.")
    custom_id, method, url, body = (data[n] for n in LINE_FIELDS)
    if not isinstance(custom_id, str) or not custom_id.strip():
        raise _bad(number, "custom_id", "must be a non-empty string.")
    if len(custom_id) > CUSTOM_ID_MAX:
        raise _bad(number, "custom_id", f"must be at most {CUSTOM_ID_MAX} characters.")
    if _unencodable(custom_id):
        raise _bad(number, "custom_id", "holds a lone surrogate (not valid Unicode).")
    if method != "POST":
        raise _bad(number, "method", "must be POST.")
    if url not in ENDPOINTS:
        served = ", ".join(ENDPOINTS)
        raise _bad(number, "url", f"{str(url)[:100]!r} is not served in batches; use {served}.", "unsupported_value")
    if not isinstance(body, dict):
        raise _bad(number, "body", "must be a JSON object (the request to the endpoint).")
    return custom_id, url, body


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def validate_body(body: dict[str, Any], number: int) -> None:
    """The line's request, as the pipeline validates an async task; ApiError 400 naming the line
    and the body's field."""
    for name, why in BATCH_FIELDS.items():
        if name in body:
            raise _bad(number, f"body.{name}", f"not a field of a batch line: {why}.", "unsupported_parameter")
    if body.get("stream"):
        raise _bad(number, "body.stream", "a batch's answers are written to its output file, never streamed.")
    try:
        validation.validate_task(body)
    except ApiError as exc:
        field = f"body.{exc.param}" if exc.param else "body"
        message = exc.message.removeprefix(f"{exc.param}: ") if exc.param else exc.message
        raise _bad(number, field, message, exc.code) from None


def check_file(text: str, max_lines: int) -> int:
    """Check every line of an upload (structure, unique custom_ids, each body); the number of
    requests. ApiError 400 naming the first bad line and field, or the file."""
    seen: dict[str, int] = {}
    count = 0
    for number, raw in enumerate(split_lines(text), start=1):
        if not raw.strip():
            continue
        count += 1
        if count > max_lines:
            raise ApiError(
                400, "too_many_lines", f"file: more than {max_lines} requests (MEDAI_FILE_MAX_LINES).", "file"
            )
        custom_id, _, body = parse_line(raw, number)
        if custom_id in seen:
            raise _bad(number, "custom_id", f"must be unique in the file; line {seen[custom_id]} has the same one.")
        seen[custom_id] = number
        validate_body(body, number)
    if not count:
        raise ApiError(400, "invalid_file", "file: holds no request (every line is blank).", "file")
    return count


def requests(text: str, start: int = 0, first_number: int = 1, first_index: int = 0) -> Iterator[Line]:
    """The requests of a checked text (a file's part), from request ``start`` on (0-based within
    the whole file: ``first_index`` is the index of this text's first request)."""
    index = first_index
    for number, raw in enumerate(split_lines(text), start=first_number):
        if not raw.strip():
            continue
        if index >= start:
            custom_id, url, body = parse_line(raw, number)
            yield Line(index, number, custom_id, url, body)
        index += 1
