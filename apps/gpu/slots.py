"""Per-model concurrency slots, exact across processes: a Redis sorted set of leases per endpoint.

A lease expires on its own (``MEDAI_SLOT_LEASE_SECONDS``) so a process that dies holding one
cannot shrink a model's capacity for longer than that. Acquire and release are one round trip each.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis
from django.conf import settings

from apps.gpu import shared

_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""

_script = None


def _acquire_script():  # type: ignore[no-untyped-def]
    global _script
    if _script is None:
        _script = shared.client().register_script(_ACQUIRE)
    return _script


class Lease:
    """A held slot. ``release()`` is idempotent."""

    __slots__ = ("endpoint_id", "token", "released")

    def __init__(self, endpoint_id: int, token: str) -> None:
        self.endpoint_id, self.token, self.released = endpoint_id, token, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            try:
                shared.client().zrem(shared.key(f"slots:{self.endpoint_id}"), self.token)
            except Exception:  # noqa: BLE001 - the lease expires by itself
                pass


def try_acquire(endpoint_id: int, limit: int) -> Lease | None:
    """Take a slot if fewer than ``limit`` are held; None otherwise (never waits)."""
    if limit <= 0:
        return None
    now = time.time()
    ttl = settings.MEDAI_SLOT_LEASE_SECONDS
    token = uuid.uuid4().hex
    try:
        ok = _acquire_script()(keys=[shared.key(f"slots:{endpoint_id}")],
                               args=[f"{now:.3f}", limit, f"{now + ttl:.3f}", token, int(ttl) + 60])
    except redis.RedisError:
        # Fail open: a Redis outage must not stop clinical traffic; the backend still has its own limits.
        lease = Lease(endpoint_id, token)
        lease.released = True
        return lease
    return Lease(endpoint_id, token) if ok else None


def in_flight(endpoint_id: int) -> int:
    return int(shared.client().zcount(shared.key(f"slots:{endpoint_id}"), time.time(), "+inf"))


def in_flight_by_endpoint() -> dict[int, int]:
    """Requests in flight per endpoint id, every process counted."""
    c = shared.client()
    prefix = shared.key("slots:")
    keys = list(c.scan_iter(match=prefix + "*", count=500))
    if not keys:
        return {}
    now = time.time()
    pipe = c.pipeline(transaction=False)
    for k in keys:
        pipe.zcount(k, now, "+inf")
    counts = pipe.execute()
    return {int(k.decode()[len(prefix):]): int(n) for k, n in zip(keys, counts, strict=True) if n}


def wait_loop_delays() -> Callable[[], float]:
    """Polling delays for a waiting request: 5 ms doubling to 100 ms."""
    delay = 0.005

    def next_delay() -> float:
        nonlocal delay
        current, delay = delay, min(delay * 2, 0.1)
        return current

    return next_delay
