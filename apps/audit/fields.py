"""Encryption at rest for PHI and secrets (Fernet: AES-128-CBC + HMAC-SHA256).

Keys come from ``MEDAI_ENCRYPTION_KEYS`` (comma-separated Fernet keys, newest first, so keys can
be rotated: old rows still decrypt) or are derived from SECRET_KEY for the embedded default.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

from medai.env import envlist


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    keys = envlist("MEDAI_ENCRYPTION_KEYS", [])
    if not keys:
        derived = base64.urlsafe_b64encode(hashlib.sha256(b"medai-at-rest:" + settings.SECRET_KEY.encode()).digest())
        keys = [derived.decode()]
    return MultiFernet([Fernet(k.encode() if isinstance(k, str) else k) for k in keys])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ValueError("encrypted value cannot be decrypted with the configured keys") from None


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; empty strings stay empty (nothing to hide)."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value in (None, ""):
            return value
        return decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        return encrypt(value)


class EncryptedJSONField(models.TextField):
    """JSON stored encrypted. ``None`` is stored as NULL."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return None
        return json.loads(decrypt(value))

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        return encrypt(json.dumps(value, separators=(",", ":")))
