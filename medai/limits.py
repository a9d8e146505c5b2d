"""Request limits enforced before Django reads a byte of the body: size (413) and, on the JSON
API, the content type (415).

Django's ASGI handler reads the whole body before any view or middleware runs, into a
``SpooledTemporaryFile`` that moves to disk past ``FILE_UPLOAD_MAX_MEMORY_SIZE``; Django's own
limit (``DATA_UPLOAD_MAX_MEMORY_SIZE``) is checked only later, when ``request.body`` is read. So a
300 MB upload was read to the end and spooled before anyone said 413. This ASGI layer, wrapped
around Django's handler (medai/asgi.py), decides from the headers when it can:

- ``Content-Length`` above ``MEDAI_MAX_BODY_BYTES``: 413 at once, nothing read;
- a body of unknown length (``Transfer-Encoding: chunked``): its bytes are counted as Django reads
  them, and at the limit Django is told the client left (``http.disconnect``, so it stops reading
  and answers nothing) and this layer answers 413; the rest is never read (the server closes the
  connection). What was read stays in memory: the limit is below Django's spooling threshold;
- an upload (``UPLOAD_PATHS``: ``POST /v1/files``) may be as large as ``MEDAI_FILE_MAX_BYTES``
  plus its multipart envelope instead;
- a JSON endpoint (``/v1/``, except what ``NON_JSON_PATHS`` lists) sent a body whose
  ``Content-Type`` is not JSON: 415 naming the header, nothing read.

Errors are OpenAI-shaped on every path (``{"error": {...}}``). A request with a declared length
within the limit passes straight through, with no wrapper around ``receive``: the chat's hot path
pays two header lookups.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

from apps.inference.errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

JSON_PREFIX = "/v1/"
# Paths under /v1/ whose bodies are not JSON: the Files API's multipart upload.
NON_JSON_PATHS: tuple[str, ...] = ("/v1/files",)
# Paths whose bodies may be larger than MEDAI_MAX_BODY_BYTES: an upload, up to its own limit plus
# room for the multipart envelope (boundaries, headers, the other fields).
UPLOAD_PATHS = ("/v1/files",)
MULTIPART_ENVELOPE = 64 * 1024  # FILE_UPLOAD_MAX_MEMORY_SIZE has the same room: nothing is spooled
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


async def _answer(send: Send, status: int, code: str, message: str, param: str | None = None) -> None:
    body = json.dumps(error_body(status, code, message, param)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """The ASGI wrapper (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.MEDAI_MAX_BODY_BYTES
        if scope.get("path", "") in UPLOAD_PATHS:
            limit = max(limit, settings.MEDAI_FILE_MAX_BYTES + MULTIPART_ENVELOPE)
        length: int | None = None
        content_type = b""
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if length is not None and length > limit:
            return await _answer(
                send, 413, "request_too_large", f"Request body is {length} bytes; the limit is {limit} bytes."
            )
        has_body = chunked or bool(length)
        path = scope.get("path", "")
        if (
            has_body
            and scope.get("method") in _BODY_METHODS
            and path.startswith(JSON_PREFIX)
            and not path.startswith(NON_JSON_PATHS or ("\0",))
            and not _is_json(content_type)
        ):
            given = content_type.decode("latin-1") or "none"
            return await _answer(
                send,
                415,
                "unsupported_media_type",
                f"Content-Type must be application/json (the header was {given}).",
                param="Content-Type",
            )
        if length is not None and not chunked:
            return await self.app(scope, receive, send)  # the server delivers no more than declared
        await self._counted(scope, receive, send, limit)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        seen = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    return {"type": "http.disconnect"}  # Django stops reading and answers nothing
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # whatever Django says after the cut, the answer is the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, watching_send)
        if over and not started:
            await _answer(send, 413, "request_too_large", f"Request body exceeds the limit of {limit} bytes.")
