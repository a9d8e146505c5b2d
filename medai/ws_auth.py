"""Websocket authentication: a JWT or API key in the ``?token=`` query string or in the
``Sec-WebSocket-Protocol`` header as ``bearer, <token>``. Consumers close with 4401 without one."""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async

from apps.accounts.services import AuthError, authenticate_bearer


@database_sync_to_async
def _authenticate(token: str):  # type: ignore[no-untyped-def]
    try:
        return authenticate_bearer(token)
    except AuthError:
        return None, None


class JWTAuthMiddleware:
    def __init__(self, inner):  # type: ignore[no-untyped-def]
        self.inner = inner

    async def __call__(self, scope, receive, send):  # type: ignore[no-untyped-def]
        token = ""
        query = parse_qs(scope.get("query_string", b"").decode())
        if query.get("token"):
            token = query["token"][0]
        else:
            for name, value in scope.get("headers", []):
                if name == b"sec-websocket-protocol":
                    parts = [p.strip() for p in value.decode().split(",")]
                    if len(parts) >= 2 and parts[0].lower() == "bearer":
                        token = parts[1]
        user, principal = (None, None)
        if token:
            user, principal = await _authenticate(token)
        scope = dict(scope, user=user, principal=principal)
        return await self.inner(scope, receive, send)
