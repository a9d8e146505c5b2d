"""Encryption at rest for PHI and secrets (Fernet: AES-128-CBC + HMAC-SHA256).

The keys are ``settings.MEDAI_ENCRYPTION_KEYS`` (newest first: new values are encrypted with the
first, older ones still decrypt, so a key is rotated by putting a new one in front). They are never
derived from another key; where they come from is medai/secrets.py.

A stored value the configured keys cannot decrypt (a key dropped from the list, or a development
database written under the key medai used to derive from its former development key) must not
turn every page that shows its row into a 500, and must not be destroyed by the next save of that
row. It reads as an empty value, as if purged, that remembers its ciphertext: saving the row writes
the ciphertext back unchanged, so putting the right key back recovers it. Each field logs this once
per process (which column, never the value).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import connections, models, router, transaction
from django.dispatch import receiver

logger = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    keys = list(settings.MEDAI_ENCRYPTION_KEYS)
    if not keys:
        raise ImproperlyConfigured("MEDAI_ENCRYPTION_KEYS is empty: nothing can be encrypted at rest")
    return MultiFernet([Fernet(_key_bytes(k)) for k in keys])


@receiver(setting_changed)
def _keys_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "MEDAI_ENCRYPTION_KEYS":
        _fernet.cache_clear()


class DecryptionError(ValueError):
    """The value was not encrypted with any of the configured keys (or it was altered)."""


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise DecryptionError("encrypted value cannot be decrypted with MEDAI_ENCRYPTION_KEYS") from None


class UndecryptableText(str):
    """An encrypted text value no configured key opens: reads as "", saves back its ciphertext."""

    ciphertext: str

    def __new__(cls, ciphertext: str) -> UndecryptableText:
        value = super().__new__(cls, "")
        value.ciphertext = ciphertext
        return value


class UndecryptableJSON(dict[str, Any]):
    """An encrypted JSON value no configured key opens: reads as {} (empty), saves back its ciphertext."""

    def __init__(self, ciphertext: str) -> None:
        super().__init__()
        self.ciphertext = ciphertext


_warned: set[str] = set()


def _undecryptable(field: models.Field[Any, Any]) -> None:
    label = f"{field.model._meta.label}.{field.name}" if hasattr(field, "model") else field.name
    if label not in _warned:
        _warned.add(label)
        logger.warning(
            "%s holds values that MEDAI_ENCRYPTION_KEYS cannot decrypt (written under another key); "
            "they read as empty and are kept unchanged",
            label,
        )


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; empty strings stay empty (nothing to hide)."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value in (None, ""):
            return value
        try:
            return decrypt(value)
        except DecryptionError:
            _undecryptable(self)
            return UndecryptableText(value)

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, UndecryptableText):
            return value.ciphertext
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        return encrypt(value)


class EncryptedJSONField(models.TextField):
    """JSON stored encrypted. ``None`` is stored as NULL."""

    # What the django-stubs plugin takes a model attribute of this field to be: any JSON value
    # (a TextField's would be str).
    _pyi_private_set_type: Any
    _pyi_private_get_type: Any

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return None
        try:
            return json.loads(decrypt(value))
        except DecryptionError:
            _undecryptable(self)
            return UndecryptableJSON(value)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, UndecryptableJSON):
            return value.ciphertext
        if value is None:
            return None
        return encrypt(json.dumps(value, separators=(",", ":")))


# --- key rotation ---------------------------------------------------------------------------------


@dataclass
class RotationReport:
    """Per column (``app_label.Model.field``): values re-encrypted under the newest key, values
    already under it, and values no configured key opens (left as they are)."""

    columns: dict[str, dict[str, int]] = field(default_factory=dict)

    def total(self, what: str) -> int:
        return sum(c[what] for c in self.columns.values())


def encrypted_columns() -> list[tuple[type[models.Model], models.Field[Any, Any]]]:
    """Every encrypted column of every installed model."""
    from django.apps import apps

    return [
        (model, f)
        for model in apps.get_models()
        for f in model._meta.concrete_fields
        if isinstance(f, (EncryptedTextField, EncryptedJSONField))
    ]


def rotate_keys(*, batch_size: int = 500, dry_run: bool = False) -> RotationReport:
    """Re-encrypt every encrypted value under the newest key (the first of MEDAI_ENCRYPTION_KEYS).

    Column by column, in batches of primary keys, each batch in its own transaction, so it runs
    beside live traffic and can be stopped and run again: a value already under the newest key is
    left alone, so a second run finds nothing to do and an old key can then be dropped. Each value
    is written back only if it is still the ciphertext that was read (compare-and-set), so a row
    written meanwhile by the application (already under the newest key) is never overwritten.
    Raw SQL on purpose: the fields' own decryption would hide values no key opens behind "".
    """
    primary = Fernet(_key_bytes(settings.MEDAI_ENCRYPTION_KEYS[0]))
    every = _fernet()
    report = RotationReport()
    for model, f in encrypted_columns():
        label = f"{model._meta.label}.{f.name}"
        counts = report.columns.setdefault(label, {"rotated": 0, "current": 0, "undecryptable": 0})
        connection = connections[router.db_for_write(model)]
        qn = connection.ops.quote_name
        table, column, pk_col = qn(model._meta.db_table), qn(f.column), qn(model._meta.pk.column)
        last: Any = None
        while True:
            where = f"{column} IS NOT NULL AND {column} <> ''" + (f" AND {pk_col} > %s" if last is not None else "")
            with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {pk_col}, {column} FROM {table} WHERE {where} ORDER BY {pk_col} LIMIT %s",
                    ([last] if last is not None else []) + [batch_size],
                )
                rows = cursor.fetchall()
                if not rows:
                    break
                updates = []
                for pk, token in rows:
                    raw = token.encode()
                    try:
                        primary.decrypt(raw)
                        counts["current"] += 1
                        continue
                    except InvalidToken:
                        pass
                    try:
                        updates.append((every.rotate(raw).decode(), pk, token))
                    except InvalidToken:
                        counts["undecryptable"] += 1
                if updates and not dry_run:
                    cursor.executemany(
                        f"UPDATE {table} SET {column} = %s WHERE {pk_col} = %s AND {column} = %s", updates
                    )
                counts["rotated"] += len(updates)
                last = rows[-1][0]
    return report


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key
