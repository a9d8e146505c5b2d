"""The audit trail's HMAC keys: ``settings.MEDAI_AUDIT_KEYS``, newest first (medai/secrets.py loads
them from the environment, a ``_FILE``, or in development the var dir; production refuses to start
without one).

Why a key at all: a plain SHA-256 chain proves order to someone who cannot write the database, but
whoever can write it can also recompute every hash after an edit. With HMAC-SHA256 under a key that
is not in the database, an edited, inserted or rewritten event cannot be given a valid hash.

Each event stores the ``key_id`` of the key that chained it (a public fingerprint, not the key), so
the key can be rotated: put a new key in front and keep the old ones for verification.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

KEY_ID_LENGTH = 16


def key_id(key: str) -> str:
    """A key's public fingerprint (what an event names; it reveals nothing of the key)."""
    return hmac.new(key.encode(), b"medai-audit-key-id", hashlib.sha256).hexdigest()[:KEY_ID_LENGTH]


@lru_cache(maxsize=1)
def _keys() -> tuple[tuple[str, bytes], ...]:
    keys = [k for k in getattr(settings, "MEDAI_AUDIT_KEYS", []) if k]
    return tuple((key_id(k), k.encode()) for k in keys)


@receiver(setting_changed)
def _keys_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "MEDAI_AUDIT_KEYS":
        _keys.cache_clear()


def current() -> tuple[str, bytes]:
    """(key_id, key) that new events are chained with: the first of MEDAI_AUDIT_KEYS."""
    keys = _keys()
    if not keys:
        raise ImproperlyConfigured("MEDAI_AUDIT_KEYS is empty: the audit chain cannot be keyed")
    return keys[0]


def by_id(kid: str) -> bytes | None:
    """The key with this fingerprint, or None when it is not (or no longer) configured."""
    for candidate, key in _keys():
        if candidate == kid:
            return key
    return None


def mac(key: bytes, domain: bytes, body: bytes) -> str:
    """HMAC-SHA256 of ``body`` under ``key``, separated by ``domain`` (events and checkpoints never
    share a MAC input)."""
    return hmac.new(key, domain + b"\n" + body, hashlib.sha256).hexdigest()
