"""Verbs of accounts: log in, refresh, log out, authenticate a bearer credential, manage API keys."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from apps.accounts.models import ApiKey, Location, RevokedAccessToken, User, hash_secret
from apps.audit.models import AuditEvent
from apps.audit.services import record_event


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

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "bearer"


# --- login / refresh / logout -------------------------------------------------------------


def _claims(token: RefreshToken | AccessToken, user: User, location: Location) -> None:
    token["sub"] = str(user.pk)
    token["role"] = user.role
    token["location_id"] = location.code
    token["scope"] = " ".join(user.default_scopes)


def issue_tokens(user: User, location: Location) -> TokenPair:
    refresh = RefreshToken.for_user(user)
    _claims(refresh, user, location)
    access = refresh.access_token
    _claims(access, user, location)
    lifetime = settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]
    return TokenPair(str(access), str(refresh), int(lifetime.total_seconds()))


def login(username: str, password: str, location_code: str, *, ip: str | None = None) -> TokenPair:
    """Check the password and that the user works at ``location_code``; audit either way."""
    user = authenticate(username=username, password=password)
    if user is None:
        record_event(
            "auth.login",
            outcome=AuditEvent.Outcome.FAILURE,
            ip=ip,
            location=location_code,
            details={"username": username, "reason": "bad credentials"},
        )
        raise AuthError("Invalid username or password.")
    location = user.locations.filter(code=location_code, is_active=True).first()
    if location is None:
        record_event(
            "auth.login",
            actor=user,
            outcome=AuditEvent.Outcome.DENIED,
            ip=ip,
            location=location_code,
            details={"reason": "not a member of this location"},
        )
        raise LoginDenied(f"User is not allowed at location '{location_code}'.")
    pair = issue_tokens(user, location)
    User.objects.filter(pk=user.pk).update(last_login=timezone.now())
    record_event("auth.login", actor=user, ip=ip, location=location.code)
    return pair


def refresh_tokens(refresh_token: str, *, ip: str | None = None) -> TokenPair:
    """Rotate a refresh token: the old one is blacklisted, a new pair is issued."""
    try:
        old = RefreshToken(refresh_token)  # type: ignore[arg-type]  # simplejwt annotates the encoded token as a Token
    except TokenError as exc:
        raise AuthError(f"Refresh token is invalid: {exc}", "token_not_valid") from None
    user = User.objects.filter(pk=old.get("user_id", old.get("sub")), is_active=True).first()
    location = Location.objects.filter(code=old.get("location_id"), is_active=True).first()
    if user is None or location is None or not user.locations.filter(pk=location.pk).exists():
        raise AuthError("Refresh token no longer matches an active user and location.", "token_not_valid")
    with transaction.atomic():
        old.blacklist()
        pair = issue_tokens(user, location)
    record_event("auth.refresh", actor=user, ip=ip, location=location.code)
    return pair


def logout(principal: Principal, refresh_token: str | None, *, ip: str | None = None) -> None:
    """Revoke the presented access token and, when given, its refresh token."""
    with transaction.atomic():
        if principal.jti:
            RevokedAccessToken.objects.get_or_create(
                jti=principal.jti,
                defaults={"expires_at": timezone.now() + settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]},
            )
        if refresh_token:
            try:
                token = RefreshToken(refresh_token)  # type: ignore[arg-type]  # simplejwt annotates the encoded token as a Token
                if str(token.get("sub", token.get("user_id"))) != str(principal.user_id):
                    raise AuthError("Refresh token belongs to another user.", "token_not_valid")
                token.blacklist()
            except TokenError:
                pass  # already expired or blacklisted: logging out is still a success
        record_event("auth.logout", actor=_user_ref(principal), ip=ip, location=principal.location_code)
    _revoked_cache.clear()


def purge_expired_tokens() -> int:
    """Drop revocation rows of tokens that have expired anyway."""
    now = timezone.now()
    n, _ = RevokedAccessToken.objects.filter(expires_at__lt=now).delete()
    BlacklistedToken.objects.filter(token__expires_at__lt=now).delete()
    OutstandingToken.objects.filter(expires_at__lt=now).delete()
    return n


# --- authentication of a bearer credential (the hot path) ---------------------------------


class _TTLCache:
    """A tiny per-process cache: users and locations change rarely, requests come often."""

    def __init__(self) -> None:
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        item = self._data.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def set(self, key: Any, value: Any) -> None:
        with self._lock:
            if len(self._data) > 10_000:
                self._data.clear()
            self._data[key] = (time.monotonic() + settings.MEDAI_AUTH_CACHE_SECONDS, value)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_user_cache = _TTLCache()
_revoked_cache = _TTLCache()


def _user_ref(principal: Principal) -> Any:
    return type("Actor", (), {"pk": principal.user_id, "username": principal.username})()


def _active_user(user_id: int, cached_only: bool = False) -> User | None:
    cached = _user_cache.get(("user", user_id))
    if cached is not None:
        return cached
    if cached_only:
        raise NeedsDatabase
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is not None:
        user._location_map = {loc.code: loc for loc in user.locations.filter(is_active=True)}
        _user_cache.set(("user", user_id), user)
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


def authenticate_bearer(token: str, *, cached_only: bool = False) -> tuple[User, Principal]:
    """Resolve ``Authorization: Bearer <token>`` (a JWT or an API key) to a user and Principal.

    Raises AuthError for anything that is not a valid, unexpired, unrevoked credential. With
    ``cached_only`` it makes no query (it may run on the event loop) and raises NeedsDatabase
    where one would be needed: a user, key or revocation not in the per-process caches, or a
    key's last-use time due for its write.
    """
    if not token:
        raise AuthError("Missing bearer token.", "missing_credentials")
    if token.startswith(ApiKey.PREFIX):
        return _authenticate_api_key(token, cached_only)
    return _authenticate_jwt(token, cached_only)


def _authenticate_jwt(token: str, cached_only: bool = False) -> tuple[User, Principal]:
    try:
        access = AccessToken(token)  # type: ignore[arg-type]  # simplejwt annotates the encoded token as a Token
    except TokenError as exc:
        raise AuthError(f"Token is invalid or expired: {exc}", "token_not_valid") from None
    jti = access.get("jti")
    if _revoked_cache.get(jti) is None:
        if cached_only:
            raise NeedsDatabase
        if RevokedAccessToken.objects.filter(jti=jti).exists():
            raise AuthError("Token has been revoked.", "token_revoked")
        _revoked_cache.set(jti, False)
    try:
        user_id = int(access["sub"])
    except (KeyError, TypeError, ValueError):
        raise AuthError("Token has no valid subject.", "token_not_valid") from None
    user = _active_user(user_id, cached_only)
    if user is None:
        raise AuthError("User is inactive or unknown.", "user_inactive")
    location = user._location_map.get(access.get("location_id"))
    if location is None:
        raise AuthError("User is no longer allowed at the token's location.", "location_denied")
    scopes = frozenset(str(access.get("scope", "")).split())
    principal = Principal(
        user.pk, user.username, user.role, location.pk, location.code, location.organization_id, scopes, "jwt", jti=jti
    )
    return user, principal


def _usable_api_key(secret: str, cached_only: bool = False) -> ApiKey | None:
    """The usable key for a secret. A key found is kept in the per-process cache like users are:
    revoking or rotating it here drops the cache at once; other processes see it within
    ``MEDAI_AUTH_CACHE_SECONDS``. Expiry is checked on every use."""
    cache_key = ("api_key", hash_secret(secret))
    key = _user_cache.get(cache_key)
    if key is None:
        if cached_only:
            raise NeedsDatabase
        key = ApiKey.objects.for_secret(secret)
        if key is not None:
            _user_cache.set(cache_key, key)
        return key
    return key if key.is_usable else None


def _authenticate_api_key(secret: str, cached_only: bool = False) -> tuple[User, Principal]:
    key = _usable_api_key(secret, cached_only)
    if key is None:
        raise AuthError("API key is invalid, expired or revoked.", "invalid_api_key")
    now = timezone.now()
    # Write last-use at most once a minute: a write per request would serialize the hot path.
    if key.last_used_at is None or now - key.last_used_at > timedelta(seconds=60):
        if cached_only:
            raise NeedsDatabase
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now  # the cached copy too, or every request would write
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
    )
    return user, principal


# --- API keys ------------------------------------------------------------------------------


def generate_secret() -> tuple[str, str]:
    """Return ``(prefix, secret)``; the secret starts with the prefix so users can tell keys apart."""
    prefix = ApiKey.PREFIX + secrets.token_hex(4)
    return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"


def create_api_key(
    user: User,
    *,
    name: str,
    location: Location,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
    actor: Any = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never retrievable again."""
    if not user.locations.filter(pk=location.pk).exists():
        raise ValueError(f"{user.username} does not work at {location.code}")
    unknown = set(scopes or []) - set(user.default_scopes)
    if unknown:
        raise ValueError(f"scopes not allowed for role {user.role}: {', '.join(sorted(unknown))}")
    if expires_at is None:
        expires_at = timezone.now() + timedelta(days=settings.MEDAI_API_KEY_TTL_DAYS)
    prefix, secret = generate_secret()
    with transaction.atomic():
        key = ApiKey.objects.create(
            user=user,
            location=location,
            name=name,
            prefix=prefix,
            hashed_secret=hash_secret(secret),
            scopes=list(scopes or []),
            expires_at=expires_at,
        )
        record_event(
            "apikey.create",
            actor=actor or user,
            location=location.code,
            obj=key,
            details={"name": name, "prefix": prefix, "scopes": key.scopes},
        )
    return key, secret


def revoke_api_key(key: ApiKey, *, actor: Any = None) -> None:
    with transaction.atomic():
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
        record_event("apikey.revoke", actor=actor, location=key.location.code, obj=key, details={"prefix": key.prefix})
    _user_cache.clear()  # the key may be cached


def rotate_api_key(key: ApiKey, *, actor: Any = None) -> tuple[ApiKey, str]:
    """Issue a replacement with the same name, location, scopes and lifetime; revoke the old one."""
    lifetime = (key.expires_at - key.created_at) if key.expires_at else timedelta(days=settings.MEDAI_API_KEY_TTL_DAYS)
    with transaction.atomic():
        new_key, secret = create_api_key(
            key.user,
            name=key.name,
            location=key.location,
            scopes=key.scopes,
            expires_at=timezone.now() + lifetime,
            actor=actor,
        )
        key.replaced_by = new_key
        key.revoked_at = timezone.now()
        key.save(update_fields=["replaced_by", "revoked_at"])
        record_event(
            "apikey.rotate",
            actor=actor,
            location=key.location.code,
            obj=key,
            details={"old_prefix": key.prefix, "new_prefix": new_key.prefix},
        )
    _user_cache.clear()  # the old key may be cached
    return new_key, secret
