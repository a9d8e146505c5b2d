"""The response cache: an exact-match cache of deterministic answers, per location, off by default.

A sync, non-streamed chat or (legacy) completions request whose answer is deterministic
(``temperature`` 0, or a ``seed``) is answered from the cache when the same location asked the
same thing of the same model or agent type within ``MEDAI_RESPONSE_CACHE_SECONDS`` (0: off, the
default). "The same thing": the request as medai sends it to a model server, minus who asks
(``user``, ``safety_identifier``, ``metadata``, ``store``). Entries never cross locations.

* **At rest**: the key is an HMAC of the location and the request (no prompt, nor a hash anyone
  could confirm a guessed prompt against, reaches Redis); the value is the answer encrypted with
  ``MEDAI_ENCRYPTION_KEYS`` (apps/audit/fields.py). Answers over ``MEDAI_RESPONSE_CACHE_MAX_BYTES``
  are not kept. After a key rotation the old entries simply miss.
* **A hit** passes every step a request passes before the backend (authentication, validation,
  rate limits, the quota's request count) and is recorded and audited like any answer, marked
  ``cached`` (no model ran: it uses no tokens of the quota); the answer carries a new id and
  ``created`` and the header ``X-Medai-Cache: hit``.
* **Bypass**: a client's ``Cache-Control: no-cache`` (or ``no-store``) skips the lookup; the fresh
  answer then replaces the entry (``no-store``: nothing is kept).
* Async tasks are not cached (their dedup already answers an identical live task), nor streams.
* Redis down: a miss (the request goes to the model), never an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import Any

import redis.asyncio
from django.conf import settings
from redis.exceptions import RedisError

from apps.accounts.governance import store
from apps.audit.fields import DecryptionError, decrypt, encrypt

logger = logging.getLogger("medai.cache")

HEADER = "X-Medai-Cache"
# What says who asks, not what is asked: left out of the key.
IDENTITY_FIELDS = ("user", "safety_identifier", "metadata", "store")
ID_PREFIXES = {"chat": "chatcmpl-", "completions": "cmpl-"}


def enabled() -> bool:
    return settings.MEDAI_RESPONSE_CACHE_SECONDS > 0


def deterministic(payload: dict[str, Any]) -> bool:
    """Temperature 0 or a seed: the same request gets the same answer from the same model."""
    return payload.get("temperature") == 0 or payload.get("seed") is not None


def bypass_of(cache_control: str) -> str:
    """What a client's ``Cache-Control`` asks of the cache: ``""``, ``no-cache`` or ``no-store``."""
    words = {w.strip().lower() for w in cache_control.split(",")}
    if "no-store" in words:
        return "no-store"
    return "no-cache" if "no-cache" in words else ""


def _hmac_key() -> bytes:
    newest = str(settings.MEDAI_ENCRYPTION_KEYS[0]).encode()
    return hashlib.sha256(b"medai response cache\0" + newest).digest()


def key_for(location_pk: int, kind: str, requested_model: str, agent_type: str, payload: dict[str, Any]) -> str:
    """The entry's Redis key: an HMAC of the location and the request."""
    asked = {k: v for k, v in payload.items() if k not in IDENTITY_FIELDS}
    canon = json.dumps([location_pk, kind, requested_model, agent_type, asked], sort_keys=True, separators=(",", ":"))
    digest = hmac.new(_hmac_key(), canon.encode(), hashlib.sha256).hexdigest()
    return f"{settings.CACHES['default'].get('KEY_PREFIX') or 'medai'}:rc:{digest}"


def _client() -> redis.asyncio.Redis:
    return store.async_client()


async def get(key: str) -> dict[str, Any] | None:
    """The cached entry (``answer``, ``model``, ``endpoint_id``), or None (a miss; Redis down too)."""
    try:
        raw = await _client().get(key)
    except RedisError as exc:
        logger.warning("response cache unavailable: %s", type(exc).__name__)
        return None
    if raw is None:
        return None
    try:
        entry = json.loads(decrypt(raw.decode() if isinstance(raw, bytes) else raw))
    except (DecryptionError, ValueError):
        return None  # written under a retired key, or damaged: a miss
    return entry if isinstance(entry, dict) and isinstance(entry.get("answer"), dict) else None


async def put(key: str, answer: dict[str, Any], model: str, endpoint_id: int | None) -> None:
    """Keep an answer (encrypted) for ``MEDAI_RESPONSE_CACHE_SECONDS``; too large or Redis down: not kept."""
    value = json.dumps({"answer": answer, "model": model, "endpoint_id": endpoint_id}, separators=(",", ":"))
    if len(value) > settings.MEDAI_RESPONSE_CACHE_MAX_BYTES:
        return
    try:
        await _client().set(key, encrypt(value), ex=settings.MEDAI_RESPONSE_CACHE_SECONDS)
    except RedisError as exc:
        logger.warning("response cache not written: %s", type(exc).__name__)


def fresh_copy(answer: dict[str, Any], kind: str) -> dict[str, Any]:
    """The cached answer as a new answer: its own id and creation time."""
    copy = dict(answer)
    copy["id"] = ID_PREFIXES.get(kind, "chatcmpl-") + secrets.token_urlsafe(18)
    copy["created"] = int(time.time())
    return copy
