"""Verbs of API keys: create (the secret is returned once), revoke, rotate with a grace period.

The admin (apps/accounts/admin.py) and ``manage.py apikey`` both call these; each verb writes its
audit event in its transaction and, on commit, drops every process's authentication caches and
closes the key's open websockets (authcache.py, revocation.py).

Rotation keeps the old secret working for a grace period (``MEDAI_API_KEY_ROTATION_GRACE_HOURS``,
24 by default) so that an integration can be redeployed with the new one without an outage: the
old key's expiry is brought forward to the end of the grace, which every use checks, so no
scheduled job is needed to end it. A grace of 0 revokes the old key at once.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.accounts import authcache, revocation
from apps.accounts.models import ALL_SCOPES, ApiKey, Location, User, hash_secret
from apps.audit.services import record_event


class ApiKeyError(ValueError):
    """A request to create or change a key that cannot be honoured (the message says why)."""


def generate_secret() -> tuple[str, str]:
    """Return ``(prefix, secret)``; the secret starts with the prefix so users can tell keys apart."""
    prefix = ApiKey.PREFIX + secrets.token_hex(4)
    return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"


def check_scopes(user: User, scopes: list[str]) -> list[str]:
    """The scopes a key of ``user`` may carry: known ones within the role's; ApiKeyError otherwise."""
    unknown = sorted(set(scopes) - set(ALL_SCOPES))
    if unknown:
        raise ApiKeyError(f"unknown scopes: {', '.join(unknown)} (known: {', '.join(ALL_SCOPES)})")
    beyond = sorted(set(scopes) - set(user.default_scopes))
    if beyond:
        raise ApiKeyError(f"scopes not allowed for role {user.role}: {', '.join(beyond)}")
    return [s for s in ALL_SCOPES if s in scopes]  # one order, whatever the input's


def create_api_key(
    user: User,
    *,
    name: str,
    location: Location,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
    actor: Any = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never retrievable again. Empty
    ``scopes``: the role's defaults. No ``expires_at``: ``MEDAI_API_KEY_TTL_DAYS`` (90) from now."""
    if not user.is_active:
        raise ApiKeyError(f"{user.username} is not active")
    if not location.is_active:
        raise ApiKeyError(f"location {location.code} is not active")
    if not user.locations.filter(pk=location.pk).exists():
        raise ApiKeyError(f"{user.username} does not work at {location.code}")
    chosen = check_scopes(user, list(scopes or []))
    now = timezone.now()
    if expires_at is None:
        expires_at = now + timedelta(days=settings.MEDAI_API_KEY_TTL_DAYS)
    elif expires_at <= now:
        raise ApiKeyError("expires_at is in the past")
    prefix, secret = generate_secret()
    with transaction.atomic():
        key = ApiKey.objects.create(
            user=user,
            location=location,
            name=name,
            prefix=prefix,
            hashed_secret=hash_secret(secret),
            scopes=chosen,
            expires_at=expires_at,
        )
        record_event(
            "apikey.create",
            actor=actor or user,
            location=location.code,
            obj=key,
            api_key_id=key.pk,
            details={"name": name, "prefix": prefix, "scopes": key.scopes, "expires_at": expires_at.isoformat()},
        )
    return key, secret


def revoke_api_key(key: ApiKey, *, actor: Any = None) -> None:
    """Revoke a key at once, in every process (its open websockets close with 4401)."""
    with transaction.atomic():
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
        record_event(
            "apikey.revoke",
            actor=actor,
            location=key.location.code,
            obj=key,
            api_key_id=key.pk,
            details={"prefix": key.prefix},
        )
        authcache.invalidate()
        revocation.notify(key.user_id)


def rotate_api_key(key: ApiKey, *, actor: Any = None, grace_hours: float | None = None) -> tuple[ApiKey, str]:
    """Issue a replacement with the same user, name, location, scopes and lifetime; the old
    secret keeps working for ``grace_hours`` (default ``MEDAI_API_KEY_ROTATION_GRACE_HOURS``),
    never past its own expiry, then answers 401."""
    if grace_hours is None:
        grace_hours = settings.MEDAI_API_KEY_ROTATION_GRACE_HOURS
    if grace_hours < 0:
        raise ApiKeyError("grace hours must be 0 or more")
    if key.revoked_at is not None or key.is_expired:
        raise ApiKeyError(f"key {key.prefix} is {key.state}: nothing to rotate")
    if key.replaced_by_id is not None:
        raise ApiKeyError(f"key {key.prefix} was already rotated: rotate its replacement")
    lifetime = (key.expires_at - key.created_at) if key.expires_at else timedelta(days=settings.MEDAI_API_KEY_TTL_DAYS)
    now = timezone.now()
    with transaction.atomic():
        new_key, secret = create_api_key(
            key.user,
            name=key.name,
            location=key.location,
            scopes=key.scopes,
            expires_at=now + lifetime,
            actor=actor,
        )
        key.replaced_by = new_key
        fields = ["replaced_by"]
        if grace_hours == 0:
            key.revoked_at = now
            fields.append("revoked_at")
        else:
            grace_end = now + timedelta(hours=grace_hours)
            if key.expires_at is None or grace_end < key.expires_at:
                key.expires_at = grace_end
                fields.append("expires_at")
        key.save(update_fields=fields)
        record_event(
            "apikey.rotate",
            actor=actor,
            location=key.location.code,
            obj=key,
            api_key_id=key.pk,
            details={
                "old_prefix": key.prefix,
                "new_prefix": new_key.prefix,
                "grace_hours": grace_hours,
                "old_works_until": (key.revoked_at or key.expires_at or now).isoformat(),
            },
        )
        authcache.invalidate()
        revocation.notify(key.user_id)
    return new_key, secret
