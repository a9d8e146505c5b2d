"""The per-process caches of authentication, and how every process drops them at once.

Authenticating a request must cost no query (it may run on the event loop), so each process keeps
the users, keys and "not revoked" answers it has looked up for ``MEDAI_AUTH_CACHE_SECONDS``. A
revocation (a key revoked or rotated out, a user removed from a location, deactivated or given a
new password, a logout, a break-glass grant ended) must not wait for that TTL in the *other*
processes: ``invalidate()`` clears this process's caches and, when the transaction commits,
publishes on a Redis channel that every process listens to with a daemon thread, which clears
its caches on each message.

Trade-offs, chosen on purpose:

- Each message clears everything (not the one entry): revocations are rare admin acts, and a
  refill is one query per active user. It keeps the protocol impossible to get subtly wrong.
- Pub/sub is not durable: a process that is not subscribed (Redis down, reconnecting, just
  started) misses messages. So the caches are only trusted while the subscription is up; in
  between every lookup goes to the database (slower, still correct), and the cache is cleared
  again once the subscription is back.
- A lookup that raced a clear (read the database before the revocation committed, stored after
  the message arrived) would cache a stale answer: each clear moves an epoch, and an answer
  loaded under an older epoch is not stored.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis
from django.conf import settings
from django.db import transaction

logger = logging.getLogger("medai.auth")

_STALE = object()


class TTLCache:
    """A small per-process cache whose clears are broadcast (see the module docstring)."""

    def __init__(self) -> None:
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self.epoch = 0

    def get(self, key: Any) -> Any:
        if not listener.trusted():
            return None
        item = self._data.get(key)
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def set(self, key: Any, value: Any, epoch: int | None = None) -> None:
        """Store ``value`` unless the cache was cleared since ``epoch`` (when the caller read it)."""
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return
            if len(self._data) > 10_000:
                self._data.clear()
            self._data[key] = (time.monotonic() + settings.MEDAI_AUTH_CACHE_SECONDS, value)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.epoch += 1


user_cache = TTLCache()
revoked_cache = TTLCache()


def clear_local() -> None:
    user_cache.clear()
    revoked_cache.clear()


def channel() -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX') or 'medai'}:auth:invalidate"


def _publish() -> None:
    clear_local()  # again after commit: a request of this process may have cached the old rows meanwhile
    try:
        listener.client().publish(channel(), b"*")
    except redis.RedisError as exc:
        # Every other process's subscription is down too (they then trust no cache), or will
        # see its TTL end: logged, not raised, because the revocation itself has committed.
        logger.warning("auth cache invalidation not published: %s", type(exc).__name__)


def invalidate() -> None:
    """Drop every process's authentication caches: this one's now, all of them on commit."""
    clear_local()
    transaction.on_commit(_publish)


class _Listener:
    """One daemon thread per process subscribed to ``channel()``; restarted after a fork."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._subscribed = threading.Event()
        self._client: redis.Redis | None = None

    def client(self) -> redis.Redis:
        if self._client is None or self._pid != os.getpid():
            self._client = redis.Redis.from_url(settings.REDIS_URL, **settings.REDIS_OPTIONS)
        return self._client

    def trusted(self) -> bool:
        """Whether cached answers may be used: this process hears invalidations right now."""
        return self._pid == os.getpid() and self._subscribed.is_set()

    def ensure(self, wait: float = 0.0) -> None:
        """Start the thread in this process if it is not running; when this call starts it, wait up
        to ``wait`` seconds for the subscription (a caller on a worker thread, never the event
        loop). Only then: while Redis is down every lookup goes to the database at once, never
        waiting for a subscription that is not coming."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._subscribed = threading.Event()
            self._client = None
            self._pid = os.getpid()
            subscribed = self._subscribed
            threading.Thread(target=self._run, name="auth-invalidation", daemon=True).start()
        if wait:
            subscribed.wait(wait)

    def _run(self) -> None:
        pid = os.getpid()
        delay, lost = 0.1, False
        while self._pid == pid:
            pubsub = None
            try:
                pubsub = self.client().pubsub()
                pubsub.subscribe(channel())
                while self._pid == pid:
                    message = pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    # The server's acknowledgement of the subscription comes first; a message
                    # (any payload) is an invalidation.
                    if message.get("type") == "subscribe":
                        clear_local()  # what was cached while unsubscribed may be stale
                        self._subscribed.set()
                        if lost:
                            logger.warning("auth cache invalidation channel back")
                        lost, delay = False, 0.1
                    elif message.get("type") == "message":
                        clear_local()
            except Exception as exc:  # noqa: BLE001 - any failure: distrust the caches, retry
                self._subscribed.clear()
                clear_local()
                if not lost and threading.main_thread().is_alive():  # once per outage; quiet at exit
                    logger.warning("auth cache invalidation channel lost (%s); retrying", type(exc).__name__)
                lost = True
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001 - closing a dead connection
                        pass


listener = _Listener()
