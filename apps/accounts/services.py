"""Verbs of accounts: log in, refresh, log out, authenticate a bearer credential (the hot path).

API keys' verbs live in ``apikeys.py``, break-glass grants' in ``breakglass.py``; the caches this
module keeps, and how every process drops them at once on a revocation, in ``authcache.py``.

A JWT is valid while (all checked on every request, from the caches): its signature and ``exp``
hold; its ``jti`` and its session (claim ``sid``, shared by every token of one login, refreshes
included) are not revoked by a logout; its ``gen`` equals the user's ``token_generation``
(bumped by a password change or a deactivation); the user is active and still a member of the
token's location, which is active, or, for a break-glass token (claim ``bg``), the grant is in
force.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from django.db import DatabaseError, transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from apps.accounts import authcache, breakglass, lockout, revocation

# The verbs of API keys (apikeys.py), under the names their callers import from here.
from apps.accounts.apikeys import create_api_key, generate_secret, revoke_api_key, rotate_api_key
from apps.accounts.models import ApiKey, BreakGlassGrant, Location, RevokedAccessToken, User, hash_secret
from apps.audit import actions
from apps.audit.models import AuditEvent
from apps.audit.services import record_event

logger = logging.getLogger("medai.accounts")


class AuthError(Exception):
    """Credentials missing, wrong, expired or revoked: answers 401."""

    code = "invalid_credentials"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class LoginDenied(AuthError):
    code = "location_denied"


class LockedOut(AuthError):
    """Too many failed logins for this username from this address (django-axes): answers 429."""

    code = "locked_out"

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Forbidden(Exception):
    """The credential lacks the right for this action: answers 403."""

    code = "insufficient_scope"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NeedsDatabase(Exception):
    """Raised with ``cached_only=True`` when the answer is not in this process's caches: the
    caller asks again where a query is allowed (a worker thread)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling, where, and with which rights: the result of authentication."""

    user_id: int
    username: str
    role: str
    location_pk: int
    location_code: str
    organization_id: int | None
    scopes: frozenset[str]
    method: str  # "jwt" or "api_key"
    api_key_id: int | None = None
    jti: str | None = None
    session_id: str | None = None  # the login this JWT belongs to (claim ``sid``)
    expires_at: float | None = None  # when the credential stops working (epoch seconds), if ever
    break_glass_id: int | None = None  # the grant it acts under: every audit event says so

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"


# --- login / refresh / logout -------------------------------------------------------------


def _claims(token: RefreshToken | AccessToken, user: User, location: Location, grant: BreakGlassGrant | None) -> None:
    token["sub"] = str(user.pk)
    token["role"] = user.role
    token["location_id"] = location.code
    token["scope"] = " ".join(user.default_scopes)
    token["gen"] = user.token_generation
    if grant is not None:
        token["bg"] = grant.pk
        # A break-glass token ends with its grant's window, whatever the configured lifetime.
        if token["exp"] > grant.ends_at.timestamp():
            token["exp"] = int(grant.ends_at.timestamp())


def issue_tokens(
    user: User, location: Location, grant: BreakGlassGrant | None = None, session_id: str | None = None
) -> TokenPair:
    """A new access/refresh pair; ``session_id`` is kept across refreshes (the first refresh
    token's jti otherwise), so that a logout can end every token of the session."""
    refresh = RefreshToken.for_user(user)
    refresh["sid"] = session_id or refresh["jti"]
    _claims(refresh, user, location, grant)
    access = refresh.access_token
    _claims(access, user, location, grant)
    return TokenPair(str(access), str(refresh), max(int(access["exp"] - access["iat"]), 0))


def _where(user: User, location_code: str) -> tuple[Location, BreakGlassGrant | None] | None:
    """Where ``user`` may work at ``location_code``: a member, or under a grant in force."""
    location = user.locations.filter(code=location_code, is_active=True).first()
    if location is not None:
        return location, None
    grant = (
        BreakGlassGrant.objects.in_force()
        .select_related("location")
        .filter(user=user, location__code=location_code)
        .order_by("-ends_at")
        .first()
    )
    return (grant.location, grant) if grant is not None else None


def login(
    username: str,
    password: str,
    location_code: str,
    *,
    ip: str | None = None,
    request: HttpRequest | None = None,
) -> TokenPair:
    """Check the password and that the user works at ``location_code`` (or holds a break-glass
    grant there); audit either way. ``request`` is handed to Django's ``authenticate`` and only
    there: django-axes counts failures and refuses locked-out logins from it (LockedOut, 429)."""
    user = authenticate(request, username=username, password=password)
    if user is None:
        locked = bool(getattr(request, "axes_locked_out", False))
        record_event(
            "auth.lockout" if locked else "auth.login",
            outcome=AuditEvent.Outcome.DENIED if locked else AuditEvent.Outcome.FAILURE,
            ip=ip,
            location=location_code,
            details={"username": username, "reason": "locked out" if locked else "bad credentials"},
        )
        if locked:
            raise LockedOut(lockout.MESSAGE, lockout.lockout_seconds())
        raise AuthError("Invalid username or password.")
    where = _where(user, location_code)
    if where is None:
        record_event(
            "auth.login",
            actor=user,
            outcome=AuditEvent.Outcome.DENIED,
            ip=ip,
            location=location_code,
            details={"reason": "not a member of this location"},
        )
        raise LoginDenied(f"User is not allowed at location '{location_code}'.")
    location, grant = where
    pair = issue_tokens(user, location, grant)
    if grant is not None:
        breakglass.note_login(grant)
    if request is not None:
        # What django.contrib.auth.login() would send: the last-login stamp, and django-axes
        # clears this username's and address's failures (AXES_RESET_ON_SUCCESS).
        user_logged_in.send(sender=type(user), request=request, user=user)
    else:
        User.objects.filter(pk=user.pk).update(last_login=timezone.now())
    record_event(
        "auth.login",
        actor=user,
        ip=ip,
        location=location.code,
        details={"break_glass": grant.pk, "reason": grant.reason} if grant else None,
    )
    return pair


def _session_revoked(*ids: str | None) -> bool:
    return RevokedAccessToken.objects.filter(jti__in=[i for i in ids if i]).exists()


def refresh_tokens(refresh_token: str, *, ip: str | None = None) -> TokenPair:
    """Rotate a refresh token: the old one is blacklisted, a new pair of the same session issued."""
    try:
        old = RefreshToken(refresh_token)  # type: ignore[arg-type]  # simplejwt annotates the encoded token as a Token
    except TokenError as exc:
        reused = "blacklisted" in str(exc).lower()  # presented again after it was rotated: stolen?
        record_event(
            actions.REFRESH_REUSED if reused else actions.REFRESH,
            actor=_token_subject(refresh_token),
            outcome=AuditEvent.Outcome.DENIED if reused else AuditEvent.Outcome.FAILURE,
            ip=ip,
            details={"reason": "reused" if reused else "invalid"},
        )
        raise AuthError(f"Refresh token is invalid: {exc}", "token_not_valid") from None
    user = User.objects.filter(pk=old.get("user_id", old.get("sub")), is_active=True).first()

    def refused(message: str, code: str) -> AuthError:
        record_event(
            actions.REFRESH,
            actor=user,
            outcome=AuditEvent.Outcome.DENIED,
            ip=ip,
            location=str(old.get("location_id") or ""),
            details={"reason": code},
        )
        return AuthError(message, code)

    if user is None or old.get("gen", 0) != user.token_generation:
        raise refused("Refresh token was revoked (password change or deactivation).", "token_revoked")
    if _session_revoked(old.get("sid")):
        raise refused("Refresh token was revoked (logged out).", "token_revoked")
    where = _where(user, old.get("location_id", ""))
    if where is None or (old.get("bg") and (where[1] is None or where[1].pk != old["bg"])):
        raise refused("Refresh token no longer matches an active user and location.", "token_not_valid")
    with transaction.atomic():
        old.blacklist()
        pair = issue_tokens(user, where[0], where[1], session_id=old.get("sid"))
        record_event(
            "auth.refresh",
            actor=user,
            ip=ip,
            location=where[0].code,
            details={"break_glass": where[1].pk} if where[1] else None,
        )
    return pair


def _token_subject(refresh_token: str) -> User | None:
    """The user a refresh token names, read without verifying it (for the audit of a refused one)."""
    try:
        sub = RefreshToken(refresh_token, verify=False).get("sub")  # type: ignore[arg-type]
    except TokenError:
        return None
    return User.objects.filter(pk=sub).first() if str(sub or "").isdigit() else None


def logout(principal: Principal, refresh_token: str | None, *, ip: str | None = None) -> None:
    """End the session: the presented access token, every token of its session (the refresh
    token included, whether or not the client sends it), and a refresh token that is sent."""
    expires = timezone.now() + max(
        settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"], settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"]
    )
    with transaction.atomic():
        for revoked in {principal.jti, principal.session_id} - {None}:
            RevokedAccessToken.objects.get_or_create(jti=revoked, defaults={"expires_at": expires})
        if refresh_token:
            try:
                token = RefreshToken(refresh_token)  # type: ignore[arg-type]  # simplejwt annotates the encoded token as a Token
                if str(token.get("sub", token.get("user_id"))) != str(principal.user_id):
                    raise AuthError("Refresh token belongs to another user.", "token_not_valid")
                token.blacklist()
            except TokenError:
                pass  # already expired or blacklisted: logging out is still a success
        record_event(
            "auth.logout",
            actor=_user_ref(principal),
            ip=ip,
            location=principal.location_code,
            details=audit_marks(principal),
        )
        authcache.invalidate()
        revocation.notify(principal.user_id)


def revoke_sessions(user: User, *, reason: str, actor: Any = None) -> None:
    """End every JWT of ``user`` (all sessions, everywhere): its token generation moves on.
    Called on a password change and a deactivation (signals.py); API keys are left alone here
    (see ``signals.py`` for which changes end them)."""
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(token_generation=F("token_generation") + 1)
        user.refresh_from_db(fields=["token_generation"])
        record_event(
            "auth.sessions_revoked",
            actor=actor or user,
            obj=user,
            details={"reason": reason, "token_generation": user.token_generation},
        )
        authcache.invalidate()
        revocation.notify(user.pk)


def purge_expired_tokens() -> int:
    """Drop revocation rows of tokens that have expired anyway."""
    now = timezone.now()
    n, _ = RevokedAccessToken.objects.filter(expires_at__lt=now).delete()
    BlacklistedToken.objects.filter(token__expires_at__lt=now).delete()
    OutstandingToken.objects.filter(expires_at__lt=now).delete()
    return n


def audit_marks(principal: Principal) -> dict[str, Any] | None:
    """What every audit event of an action by ``principal`` adds to its details: the break-glass
    grant it acted under, if any."""
    return {"break_glass": principal.break_glass_id} if principal.break_glass_id else None


# --- authentication of a bearer credential (the hot path) ---------------------------------

# Kept under these names for the callers and tests that clear them.
_user_cache = authcache.user_cache
_revoked_cache = authcache.revoked_cache


def _user_ref(principal: Principal) -> Any:
    return type("Actor", (), {"pk": principal.user_id, "username": principal.username})()


def _active_user(user_id: int, cached_only: bool = False, fresh: bool = False) -> User | None:
    cached = None if fresh else _user_cache.get(("user", user_id))
    if cached is not None:
        return cached
    if cached_only:
        raise NeedsDatabase
    authcache.listener.ensure(wait=1.0)
    epoch = _user_cache.epoch
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is not None:
        user._location_map = {loc.code: loc for loc in user.locations.filter(is_active=True)}
        user._break_glass_map = {
            g.location.code: g for g in BreakGlassGrant.objects.in_force().filter(user=user).select_related("location")
        }
        _user_cache.set(("user", user_id), user, epoch)
    return user


def bearer_token(header: bytes | str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, None if there is no header."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return token.strip()


def authenticate_header(header: bytes | str | None, *, cached_only: bool = False) -> Principal:
    """The pipeline's authenticate step: an ``Authorization`` header value → the caller's Principal.

    Raises AuthError (401; ``missing_credentials`` without a header) and, with ``cached_only``,
    NeedsDatabase (see ``authenticate_bearer``, which DRF's ``BearerAuthentication`` and the
    websocket middleware call with the token)."""
    token = bearer_token(header or "")
    if token is None:
        raise AuthError("Authentication required: send 'Authorization: Bearer <token>'.", "missing_credentials")
    return authenticate_bearer(token, cached_only=cached_only)[1]


def authorize(principal: Principal, scope: str, *alternatives: str) -> None:
    """The one scope check, for the pipeline's authorize step, DRF's permission classes and the
    websocket consumers alike: the caller's credential carries ``scope`` (or one of
    ``alternatives``; its location is fixed by the credential itself), else Forbidden (403)."""
    wanted = (scope, *alternatives)
    if not any(principal.has_scope(s) for s in wanted):
        names = " or ".join(f"'{s}'" for s in wanted)
        raise Forbidden(f"This credential lacks the {names} scope (role '{principal.role}').")


def authenticate_bearer(token: str, *, cached_only: bool = False, fresh: bool = False) -> tuple[User, Principal]:
    """Resolve ``Authorization: Bearer <token>`` (a JWT or an API key) to a user and Principal.

    Raises AuthError for anything that is not a valid, unexpired, unrevoked credential. With
    ``cached_only`` it makes no query (it may run on the event loop) and raises NeedsDatabase
    where one would be needed: a user, key or revocation not in the per-process caches, or a
    key's last-use time due for its write. ``fresh`` ignores the caches (an open websocket
    checking its credential again after a revocation event).
    """
    if not token:
        raise AuthError("Missing bearer token.", "missing_credentials")
    if token.startswith(ApiKey.PREFIX):
        return _authenticate_api_key(token, cached_only, fresh)
    return _authenticate_jwt(token, cached_only, fresh)


def _check_not_revoked(jti: str, sid: str | None, cached_only: bool, fresh: bool) -> None:
    if not fresh and _revoked_cache.get(jti) is not None:
        return
    if cached_only:
        raise NeedsDatabase
    authcache.listener.ensure(wait=1.0)
    epoch = _revoked_cache.epoch
    if _session_revoked(jti, sid):
        raise AuthError("Token has been revoked (logged out).", "token_revoked")
    _revoked_cache.set(jti, False, epoch)


def _authenticate_jwt(token: str, cached_only: bool = False, fresh: bool = False) -> tuple[User, Principal]:
    try:
        access = AccessToken(token)  # type: ignore[arg-type]  # simplejwt annotates the encoded token as a Token
    except TokenError as exc:
        raise AuthError(f"Token is invalid or expired: {exc}", "token_not_valid") from None
    jti, sid = access.get("jti"), access.get("sid")
    _check_not_revoked(jti, sid, cached_only, fresh)
    try:
        user_id = int(access["sub"])
    except (KeyError, TypeError, ValueError):
        raise AuthError("Token has no valid subject.", "token_not_valid") from None
    user = _active_user(user_id, cached_only, fresh)
    if user is None:
        raise AuthError("User is inactive or unknown.", "user_inactive")
    if access.get("gen", 0) != user.token_generation:
        raise AuthError("Token was revoked (password change or deactivation).", "token_revoked")
    expires_at = float(access["exp"])
    grant_id = access.get("bg")
    if grant_id:
        grant = user._break_glass_map.get(access.get("location_id"))
        if grant is None or grant.pk != grant_id or not grant.in_force():
            raise AuthError("The break-glass grant of this token has ended.", "break_glass_ended")
        location = grant.location
        expires_at = min(expires_at, grant.ends_at.timestamp())
    else:
        member_of = user._location_map.get(access.get("location_id"))
        if member_of is None:
            raise AuthError("User is no longer allowed at the token's location.", "location_denied")
        location = member_of
    scopes = frozenset(str(access.get("scope", "")).split())
    principal = Principal(
        user.pk,
        user.username,
        user.role,
        location.pk,
        location.code,
        location.organization_id,
        scopes,
        "jwt",
        jti=jti,
        session_id=sid,
        expires_at=expires_at,
        break_glass_id=grant_id or None,
    )
    return user, principal


def _usable_api_key(secret: str, cached_only: bool = False, fresh: bool = False) -> ApiKey | None:
    """The usable key for a secret. A key found is kept in the per-process cache like users are;
    a revocation anywhere clears every process's cache (authcache.py). Expiry, and its user's
    and location's being active, are checked on every use."""
    cache_key = ("api_key", hash_secret(secret))
    key = None if fresh else _user_cache.get(cache_key)
    if key is None:
        if cached_only:
            raise NeedsDatabase
        authcache.listener.ensure(wait=1.0)
        epoch = _user_cache.epoch
        key = ApiKey.objects.for_secret(secret)
        if key is not None:
            _user_cache.set(cache_key, key, epoch)
        return key
    return key if key.is_usable else None


def _authenticate_api_key(secret: str, cached_only: bool = False, fresh: bool = False) -> tuple[User, Principal]:
    key = _usable_api_key(secret, cached_only, fresh)
    if key is None:
        raise AuthError("API key is invalid, expired or revoked.", "invalid_api_key")
    now = timezone.now()
    # Write last-use at most once a minute per key and process: a write per request would
    # serialize the hot path on one row.
    if key.last_used_at is None or now - key.last_used_at > timedelta(seconds=60):
        if cached_only:
            raise NeedsDatabase
        used = True
    else:
        used = False
    user = key.user
    allowed = set(user.default_scopes)
    scopes = frozenset(s for s in (key.scopes or user.default_scopes) if s in allowed)
    principal = Principal(
        user.pk,
        user.username,
        user.role,
        key.location_id,
        key.location.code,
        key.location.organization_id,
        scopes,
        "api_key",
        api_key_id=key.pk,
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
    )
    if used:  # the key's last use and its audit event (each request's own event names the key too), together
        try:
            with transaction.atomic():
                ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
                record_event(actions.APIKEY_USE, actor=principal, obj=key, details={"prefix": key.prefix})
        except DatabaseError:  # neither written: the key's next request tries again; this one goes on
            logger.warning("the use of API key %s was not recorded yet", key.prefix, exc_info=True)
        else:
            key.last_used_at = now  # the cached copy too, or every request would write
    return user, principal


__all__ = [
    "AuthError",
    "Forbidden",
    "LockedOut",
    "LoginDenied",
    "NeedsDatabase",
    "Principal",
    "TokenPair",
    "authenticate_bearer",
    "authenticate_header",
    "authorize",
    "create_api_key",
    "generate_secret",
    "issue_tokens",
    "login",
    "logout",
    "refresh_tokens",
    "revoke_api_key",
    "revoke_sessions",
    "rotate_api_key",
]
