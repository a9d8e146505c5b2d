"""A Django session (the admin's login cookie) as a websocket credential, for staff admin pages.

API clients and the clinician pages authenticate a websocket with a JWT or an API key in the
subprotocol (``medai/ws_auth.py``); the admin's pages have no token, only the session cookie the
admin login set, which a browser sends with every websocket handshake to this host. Cookies are
ambient: any site the staff member visits could open a socket here and the cookie would go with it
(cross-site websocket hijacking). So a session counts only when the handshake's ``Origin`` is this
site itself (``http(s)://<Host>``, the Host one of ``ALLOWED_HOSTS``) or one of
``CSRF_TRUSTED_ORIGINS``: the rule Django's CSRF check applies to the admin's forms. A session
offered from another origin is refused (4403), never silently ignored.

What a session grants: read-only monitoring (``read``, ``gpu:read``), whatever the user's role,
and only to an active staff member (the admin itself requires staff); the consumers that accept
it say so (``AuthenticatedJsonConsumer.accepts_session``). The socket lives no longer than the
session: its expiry is the principal's, and a revocation (password change, deactivation) is
checked again from a fresh read of the session (``apps/accounts/websocket.py``).
"""

from __future__ import annotations

from importlib import import_module
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import auth
from django.http import parse_cookie
from django.http.request import split_domain_port, validate_host

from apps.accounts.models import SCOPE_GPU_READ, SCOPE_READ, User
from apps.accounts.services import Principal

SESSION_SCOPES = frozenset({SCOPE_READ, SCOPE_GPU_READ})
METHOD = "session"


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def session_key(scope: dict[str, Any]) -> str:
    """The session cookie's value from the handshake ("" without one)."""
    cookies = _header(scope, b"cookie")
    return parse_cookie(cookies).get(settings.SESSION_COOKIE_NAME, "") if cookies else ""


def origin_of(scope: dict[str, Any]) -> str:
    return _header(scope, b"origin")


def same_origin(scope: dict[str, Any]) -> bool:
    """Whether the handshake comes from a page of this site: its ``Origin`` is ``http(s)://<Host>``
    with the scheme of the connection (``wss`` ↔ ``https``) and a Host of ``ALLOWED_HOSTS``, or one
    of ``CSRF_TRUSTED_ORIGINS``. No Origin (not a browser) is not a page of this site."""
    origin = origin_of(scope).strip().lower()
    if not origin or origin == "null":
        return False
    if origin in {o.lower().rstrip("/") for o in settings.CSRF_TRUSTED_ORIGINS}:
        return True
    host = _header(scope, b"host").strip().lower()
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    parts = urlsplit(origin)
    return parts.scheme == scheme and parts.netloc == host


def authenticate_session(key: str) -> tuple[User, Principal] | tuple[None, None]:
    """The staff member a session key belongs to, and their read-only principal; (None, None) for
    an unknown, expired or logged-out session, a changed password (Django's session hash), an
    inactive user or one who is not staff. Queries: call where the ORM is allowed."""
    if not key:
        return None, None
    store = import_module(settings.SESSION_ENGINE).SessionStore(key)
    # auth.get_user reads only request.session: the stored user, checked against the session's
    # auth hash (a password change ends the session) and the backend (inactive users are refused).
    user = auth.get_user(SimpleNamespace(session=store))  # type: ignore[arg-type]
    if not isinstance(user, User) or not user.is_active or not user.is_staff:
        return None, None
    location = user.locations.filter(is_active=True).order_by("code").first()
    principal = Principal(
        user.pk,
        user.username,
        user.role,
        location.pk if location else 0,
        location.code if location else "",
        user.organization_id,
        SESSION_SCOPES,
        METHOD,
        expires_at=store.get_expiry_date().timestamp(),
    )
    return user, principal
