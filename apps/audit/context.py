"""The correlation id and origin (IP, user agent, purpose of use) of the work in progress (a
request, a task), carried in contextvars."""

from __future__ import annotations

import contextvars
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

_correlation_id: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="")
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_correlation_id(candidate: str | None = None) -> str:
    """Use the caller's id when it is well formed (so traces join up), else mint one."""
    if candidate and _VALID.match(candidate):
        return candidate
    return uuid.uuid4().hex


def get_correlation_id() -> str:
    return _correlation_id.get()


def set_correlation_id(value: str) -> contextvars.Token[str]:
    return _correlation_id.set(value)


def reset_correlation_id(token: contextvars.Token[str]) -> None:
    _correlation_id.reset(token)


@dataclass(frozen=True)
class Origin:
    """Where the work in progress came from (the HTTP request): what every audit event of it names
    unless told otherwise. Set once per request by the middleware, read from a contextvar (so it
    follows the request into ``sync_to_async`` threads) at no cost per event."""

    ip: str | None = None
    user_agent: str = ""
    purpose_of_use: str = ""
    # What this request's events already said ("refusal": a failure or denial was recorded):
    # mutable, so a view running in a thread can tell the middleware on the event loop.
    flags: set[str] = field(default_factory=set, compare=False)


_origin: contextvars.ContextVar[Origin] = contextvars.ContextVar("audit_origin")
# HL7 v3 PurposeOfUse codes (TREAT, ETREAT, HPAYMT, HOPERAT, ...) and local codes alike: a short token.
PURPOSE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/ -]{0,63}$")


def get_origin() -> Origin:
    """The current request's origin; outside a request (a worker, a command), an empty one."""
    try:
        return _origin.get()
    except LookupError:
        return Origin()


def set_origin(value: Origin) -> contextvars.Token[Origin]:
    return _origin.set(value)


def reset_origin(token: contextvars.Token[Origin]) -> None:
    _origin.reset(token)


class CorrelationScope:
    """ASGI middleware: the correlation id of an HTTP request (the caller's ``X-Request-ID``, or a
    new one) or of a websocket connection, set for everything that runs inside it. Django's
    middleware (apps/audit/middleware.py) adopts it, and so do the lines logged outside Django's
    middleware: the server's access log, a streamed response's body, a consumer's messages."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope.get("headers") or ():
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        token = set_correlation_id(new_correlation_id(given))
        try:
            await self.app(scope, receive, send)
        finally:
            reset_correlation_id(token)
