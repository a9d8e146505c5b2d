"""The base of medai's websocket consumers: who may connect, and how a socket ends.

Authentication happened once, in the ASGI middleware (``medai/ws_auth.py``), which put the
``principal`` (None without a valid credential) and the subprotocol to answer in the scope. Here:

- Refusals are sent after the handshake: accept, then close with **4401** (no valid credential;
  a staff session counts only where the consumer ``accepts_session``), **4403** (a credential
  without the consumer's scope, or a session cookie sent from another site's page) or **4429** (over a rate limit: a
  connection and every message take a unit from the same buckets as an HTTP request). A close sent before the accept is an
  HTTP 403 to the client, its code lost: a browser sees only "failed".
- A client that authenticated with ``Sec-WebSocket-Protocol: bearer, <token>`` gets ``bearer``
  back (a browser fails a handshake whose answer names none of the offered protocols).
- Redis (the channel layer) or the database gone: the socket is closed with **1013** (try again
  later), never a 500 at the handshake nor a dropped connection without a close frame. Every
  socket of the process closes at the first failed receive, because after a Redis restart their
  group memberships are gone (medai/channel_layer.py); clients reconnect and rejoin.
- Group memberships are renewed at half the layer's ``group_expiry``, so a socket open for days
  keeps receiving (channels_redis drops members older than that).
- A socket lives no longer than its credential: it is closed with **4401** when the credential
  expires (a timer, set at connect) or is revoked. Every socket joins its user's
  ``auth.user.<id>`` group; a revocation anywhere sends ``auth.changed`` there on commit
  (apps/accounts/revocation.py) and the socket checks its credential again, from the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.db import DatabaseError
from redis.exceptions import RedisError

from apps.accounts import governance, revocation, services, sessionauth
from apps.accounts.models import SCOPE_READ
from apps.accounts.services import AuthError, Forbidden, Principal, audit_marks
from apps.audit import actions
from apps.audit.models import AuditEvent
from apps.audit.services import record_event_later

logger = logging.getLogger("medai.ws")

UNAUTHENTICATED = 4401
FORBIDDEN = 4403
RATE_LIMITED = 4429
TRY_AGAIN_LATER = 1013

UNAVAILABLE = (RedisError, DatabaseError)


class AuthenticatedJsonConsumer(AsyncJsonWebsocketConsumer):
    """Subclasses name ``required_scope`` and return their groups from ``groups_for``; ``opened`` runs
    once the socket is accepted and its groups joined."""

    required_scope = SCOPE_READ
    # A staff member's admin session (apps/accounts/sessionauth.py) may open this socket: for the
    # admin's own pages. Everywhere else only a JWT or an API key does.
    accepts_session = False

    joined: list[str]
    _accepted = False
    _closing = False
    _watchdog: asyncio.Task[None] | None = None
    _expiry: asyncio.TimerHandle | None = None
    _opened_at: float | None = None  # monotonic time of the accept (an audited open)
    socket_id = ""  # this socket's id in its ws.open and ws.close events

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        code = self.refusal(scope)
        if code is None:
            code = await _rate_refusal(scope)
        if code is not None:
            # Before the channel layer is involved: a refused socket costs no Redis round trip, and
            # no receive is left to cancel (redis-py may swallow a cancel during a connect).
            _audit_refusal(scope, code)
            await _refuse(scope, receive, send, code)
            return
        try:
            await super().__call__(scope, receive, send)
        except UNAVAILABLE as exc:
            await self.close_unavailable(exc)
        finally:
            self._audit_close(None)  # (a socket that ended without a disconnect message: code unknown)
            self._stop_watchdog()
            self._stop_expiry()

    async def websocket_receive(self, message: dict[str, Any]) -> None:
        """Every message a client sends takes a unit from its rate-limit buckets, as an HTTP request
        does (governance.check_rate_limit, awaited); over the limit, an error frame answers it instead."""
        try:
            await governance.check_rate_limit_async(self.scope["principal"], ip=_client_ip(self.scope))
        except governance.LimitExceeded as exc:
            await self.send_json(
                {"type": "error", "data": {"code": exc.code, "message": exc.message, "retry_after": exc.retry_after}}
            )
            return
        await super().websocket_receive(message)

    # --- hooks ----------------------------------------------------------------------------------

    def groups_for(self, principal: Any) -> list[str]:
        return []

    async def opened(self, principal: Any) -> None:
        pass

    # --- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def refusal(cls, scope: dict[str, Any]) -> int | None:
        """The close code for a socket this consumer refuses, None if it may connect."""
        principal = scope.get("principal")
        if scope.get("auth_unavailable"):
            return TRY_AGAIN_LATER
        if scope.get("auth_cross_site") and principal is None:
            return FORBIDDEN
        if principal is None or (principal.method == sessionauth.METHOD and not cls.accepts_session):
            return UNAUTHENTICATED
        if cls.required_scope:
            try:
                services.authorize(principal, cls.required_scope)
            except Forbidden:
                return FORBIDDEN
        return None

    async def connect(self) -> None:
        principal = self.scope["principal"]
        self.joined = []
        for group in [revocation.group(principal.user_id), *self.groups_for(principal)]:
            await self.join(group)
        await self.accept(self.scope.get("auth_subprotocol"))
        self._audit_open(principal)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        self._arm_expiry(principal)
        await self.opened(principal)

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol, headers)
        self._accepted = True

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self._closing = True
        await super().close(code=code, reason=reason)

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.joined.append(group)

    # --- the audit: who opened which socket, and how and when it closed ---------------------------

    def _audit_open(self, principal: Principal) -> None:
        """``ws.open`` for an accepted socket (the background writer: no query on the loop), with the
        connection's IP and user agent."""
        self.socket_id = uuid.uuid4().hex
        self._opened_at = time.monotonic()
        record_event_later(
            actions.WS_OPEN,
            actor=principal,
            ip=_client_ip(self.scope) or "",
            user_agent=_user_agent(self.scope),
            object_type="websocket",
            object_id=self.socket_id,
            details={"path": str(self.scope.get("path", ""))[:100], **(audit_marks(principal) or {})},
        )

    def _audit_close(self, code: Any) -> None:
        """``ws.close`` beside its open: the close code (the client's, or the server's 4401, 1013...)
        and how long the socket was open. Once per socket."""
        opened, self._opened_at = self._opened_at, None
        if opened is None:
            return
        principal = self.scope.get("principal")
        record_event_later(
            actions.WS_CLOSE,
            actor=principal,
            ip=_client_ip(self.scope) or "",
            user_agent=_user_agent(self.scope),
            object_type="websocket",
            object_id=self.socket_id,
            details={
                "path": str(self.scope.get("path", ""))[:100],
                "code": code if isinstance(code, int) else None,
                "duration_s": round(time.monotonic() - opened, 3),
                **((audit_marks(principal) or {}) if principal is not None else {}),
            },
        )

    async def disconnect(self, code: int) -> None:
        self._audit_close(code)
        self._stop_watchdog()
        self._stop_expiry()
        for group in getattr(self, "joined", []):
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except UNAVAILABLE:
                break  # Redis is gone: its memberships with it (or they expire)

    async def close_unavailable(self, exc: BaseException | None = None) -> None:
        """Close with 1013 (the handshake completed first if need be); quiet if the client is gone."""
        if self._closing:
            return
        self._closing = True
        logger.warning(
            "websocket %s closed 1013: %s",
            self.scope.get("path", "?"),
            type(exc).__name__ if exc else "the channel layer lost Redis",
        )
        try:
            if not self._accepted:
                await super().accept(self.scope.get("auth_subprotocol"))
                self._accepted = True
            await super().close(code=TRY_AGAIN_LATER)
        except Exception:  # noqa: BLE001 - the client disconnected meanwhile
            pass
        self._audit_close(TRY_AGAIN_LATER)

    # --- the credential's life: expiry and revocation -------------------------------------------

    def _arm_expiry(self, principal: Principal) -> None:
        self._stop_expiry()
        if principal.expires_at is None:
            return
        delay = max(principal.expires_at - time.time(), 0.0)
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_later(delay, lambda: loop.create_task(self.close_unauthenticated("expired")))

    def _stop_expiry(self) -> None:
        handle, self._expiry = self._expiry, None
        if handle is not None:
            handle.cancel()

    async def close_unauthenticated(self, why: str) -> None:
        """Close with 4401: the credential expired or was revoked."""
        if self._closing:
            return
        logger.info("websocket %s closed 4401: credential %s", self.scope.get("path", "?"), why)
        await self.close(code=UNAUTHENTICATED)

    async def auth_changed(self, event: dict[str, Any]) -> None:
        """A credential of this user may have been revoked: check this socket's own again."""
        try:
            if self.scope["principal"].method == sessionauth.METHOD:
                principal = await _recheck_session(self.scope.get("auth_session_key") or "")
            else:
                principal = await _recheck(self.scope.get("auth_token") or "")
        except AuthError:
            await self.close_unauthenticated("revoked")
            return
        except UNAVAILABLE as exc:
            await self.close_unavailable(exc)
            return
        self.scope["principal"] = principal
        self._arm_expiry(principal)  # a rotation, say, may have brought the expiry forward

    # --- the watchdog: outages and group renewal ------------------------------------------------

    def renew_every(self) -> float:
        return max(float(getattr(self.channel_layer, "group_expiry", 86_400)) / 2, 1.0)

    async def _watch(self) -> None:
        outage_of = getattr(self.channel_layer, "outage", None)
        outage = outage_of() if outage_of else asyncio.get_running_loop().create_future()
        try:
            while True:
                done, _ = await asyncio.wait({outage}, timeout=self.renew_every())
                if done:
                    await self.close_unavailable()
                    return
                for group in list(self.joined):
                    await self.channel_layer.group_add(group, self.channel_name)
        except UNAVAILABLE as exc:
            await self.close_unavailable(exc)
        finally:
            outage.cancel()

    def _stop_watchdog(self) -> None:
        task, self._watchdog = self._watchdog, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()


def _client_ip(scope: dict[str, Any]) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def _user_agent(scope: dict[str, Any]) -> str:
    for name, value in scope.get("headers") or ():
        if name == b"user-agent":
            return str(value.decode("latin-1"))
    return ""


# A refused socket's audit event: the same actions as an HTTP 401, 403 or 429 (apps/audit/middleware.py).
REFUSAL_ACTIONS = {
    UNAUTHENTICATED: (actions.UNAUTHENTICATED, 401),
    FORBIDDEN: (actions.FORBIDDEN, 403),
    RATE_LIMITED: (actions.LIMIT_REJECTED, 429),
}


def _audit_refusal(scope: dict[str, Any], code: int) -> None:
    """A socket refused with 4401, 4403 or 4429 is audited as the HTTP refusal it stands for (to
    the background writer: anyone may open sockets as fast as they like). A 1013 refuses no one."""
    refusal = REFUSAL_ACTIONS.get(code)
    if refusal is None:
        return
    action, status = refusal
    principal = scope.get("principal")
    details: dict[str, Any] = {"path": str(scope.get("path", ""))[:100], "ws_close_code": code, "http_status": status}
    if scope.get("auth_cross_site"):
        details["cross_site"] = True
    record_event_later(
        action,
        actor=principal,
        outcome=AuditEvent.Outcome.DENIED,
        ip=_client_ip(scope) or "",
        user_agent=_user_agent(scope),
        object_type="websocket",
        details=details,
    )


async def _rate_refusal(scope: dict[str, Any]) -> int | None:
    """A connection takes a unit from the caller's buckets, as an HTTP request does: over the
    limit it is refused with 4429 (the 4000 + HTTP status convention of 4401/4403), and with
    1013 when the counter store is down and the organization fails closed."""
    try:
        await governance.check_rate_limit_async(scope["principal"], ip=_client_ip(scope))
    except governance.Unavailable:
        return TRY_AGAIN_LATER
    except governance.LimitExceeded:
        return RATE_LIMITED
    return None


@database_sync_to_async
def _recheck(token: str) -> Principal:
    return services.authenticate_bearer(token, fresh=True)[1]


@database_sync_to_async
def _recheck_session(key: str) -> Principal:
    principal = sessionauth.authenticate_session(key)[1]
    if principal is None:
        raise AuthError("The session ended.")
    return principal


async def _refuse(scope: dict[str, Any], receive: Any, send: Any, code: int) -> None:
    """Complete the handshake, then close with ``code``: the client sees why."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept", "subprotocol": scope.get("auth_subprotocol")})
    await send({"type": "websocket.close", "code": code})
