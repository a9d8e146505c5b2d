"""Websocket authentication, once per connection: the credential (a JWT or an API key) becomes a
``principal`` in the scope (None without a valid one); consumers refuse with 4401/4403
(apps/accounts/websocket.py).

Where the credential comes from, preferred first:

- ``Sec-WebSocket-Protocol: bearer, <token>``: what a browser sends for
  ``new WebSocket(url, ["bearer", token])``. The server's answer names ``bearer`` (never the
  token), so the credential stays out of URLs, and with them out of access logs, proxies' logs
  and browser history.
- ``?token=<token>`` in the query string, for older clients. It still works, and every medai log
  line redacts it (apps/audit/credentials.py), but a proxy in front of medai may log it: prefer
  the header.
- Without either, the Django session cookie of a staff member signed in to the admin, for the
  admin's own pages (the dashboard), and only from a page of this site: the handshake's ``Origin``
  is checked against cross-site websocket hijacking (apps/accounts/sessionauth.py). A session
  offered from another origin sets ``auth_cross_site`` (the consumer closes 4403). The cookie is
  read here rather than by channels' SessionMiddleware, which wraps every frame a socket sends to
  save a session that this read-only check never modifies.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.db import DatabaseError

from apps.accounts import sessionauth
from apps.accounts.models import User
from apps.accounts.services import AuthError, Principal, authenticate_bearer

logger = logging.getLogger("medai.ws")

BEARER_SUBPROTOCOL = "bearer"


class _Unavailable(Exception):
    pass


@database_sync_to_async
def _authenticate(token: str) -> tuple[User, Principal] | tuple[None, None]:
    try:
        return authenticate_bearer(token)
    except AuthError:
        return None, None
    except DatabaseError as exc:  # the database is down: the consumer closes 1013, not a 500
        raise _Unavailable from exc


@database_sync_to_async
def _authenticate_session(key: str) -> tuple[User, Principal] | tuple[None, None]:
    try:
        return sessionauth.authenticate_session(key)
    except DatabaseError as exc:
        raise _Unavailable from exc


def credential_from(scope: dict[str, Any]) -> tuple[str, str | None]:
    """(token, the subprotocol to accept) from the handshake; ("", None) without a credential."""
    offered = [p.strip() for p in scope.get("subprotocols") or []]
    for index, name in enumerate(offered[:-1]):
        if name.lower() == BEARER_SUBPROTOCOL and offered[index + 1]:
            return offered[index + 1], name
    query = parse_qs(scope.get("query_string", b"").decode(errors="replace"))
    for name in ("token", "access_token"):
        if query.get(name):
            return query[name][0], None
    return "", None


class JWTAuthMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        token, subprotocol = credential_from(scope)
        user, principal, unavailable, cross_site = None, None, False, False
        session_key = "" if token else sessionauth.session_key(scope)
        if session_key and not sessionauth.same_origin(scope):
            logger.warning("websocket %s refused: a session cookie from another origin", scope.get("path", "?"))
            session_key, cross_site = "", True
        try:
            if token:
                user, principal = await _authenticate(token)
            elif session_key:
                user, principal = await _authenticate_session(session_key)
        except _Unavailable:
            logger.warning("websocket authentication unavailable: the database did not answer")
            unavailable = True
        if subprotocol is None and BEARER_SUBPROTOCOL in (scope.get("subprotocols") or []):
            subprotocol = BEARER_SUBPROTOCOL  # offered without a token: answer it, then refuse with 4401
        # The token stays in the scope (memory only) so that the consumer can check it again when
        # a revocation event arrives (apps/accounts/websocket.py).
        scope = dict(
            scope,
            user=user,
            principal=principal,
            auth_token=token if principal is not None else "",
            auth_session_key=session_key if principal is not None else "",
            auth_cross_site=cross_site,
            auth_subprotocol=subprotocol,
            auth_unavailable=unavailable,
        )
        return await self.inner(scope, receive, send)
