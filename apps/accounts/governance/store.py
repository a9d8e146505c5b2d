"""Where governance keeps its counters: Redis, under ``{MEDAI_CACHE_PREFIX}:gov:`` (see lua.py for
the keys), through one process-wide client and the two scripts registered on it.

Windows are calendar days and months in ``TIME_ZONE`` (UTC by default): a window's counters are
keyed by its name (``d20261202``, ``m202612``), so a new window starts from zero without anyone
resetting anything, and the old key expires a day after its window ended.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import redis
import redis.asyncio
from django.conf import settings
from redis.commands.core import AsyncScript, Script

from apps.accounts.governance import lua

_client: redis.Redis | None = None
_scripts: dict[str, Script] = {}
_lock = threading.Lock()


def prefix() -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX') or 'medai'}:gov:"


def _pool_options() -> dict[str, Any]:
    """A bounded pool that makes a command wait for a free connection. redis-py's default pool
    raises ``MaxConnectionsError`` (a ``ConnectionError``) for the command past its size, 100: more
    admissions than that in flight on one web process (a burst of clients) were answered 503
    ``quota_store_unavailable`` although Redis was fine. The wait is bounded by the socket timeout:
    a pool still full after it means Redis is not answering, which is the outage case."""
    return {
        "max_connections": settings.MEDAI_REDIS_MAX_CONNECTIONS,
        "timeout": settings.MEDAI_REDIS_SOCKET_TIMEOUT,
        "decode_responses": True,
        **settings.REDIS_OPTIONS,
    }


def client() -> redis.Redis:
    """The process's governance client on ``REDIS_URL`` (thread-safe bounded pool, see
    ``_pool_options``; short timeouts, so a dead Redis fails a request within
    MEDAI_REDIS_CONNECT_TIMEOUT rather than hanging it)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                pool = redis.BlockingConnectionPool.from_url(settings.REDIS_URL, **_pool_options())
                _client = redis.Redis.from_pool(pool)
    return _client


def reset_client() -> None:
    """Forget the client and its scripts (tests that point the process at another Redis)."""
    global _client
    with _lock:
        old, _client = _client, None
        _scripts.clear()
        _async.clear()
    if old is not None:
        old.close()


def script(name: str) -> Script:
    found = _scripts.get(name)
    if found is None:
        found = _scripts[name] = client().register_script(getattr(lua, name))
    return found


_async: dict[int, tuple[asyncio.AbstractEventLoop, redis.asyncio.Redis, dict[str, AsyncScript]]] = {}


def _async_entry() -> tuple[asyncio.AbstractEventLoop, redis.asyncio.Redis, dict[str, AsyncScript]]:
    """The running loop's asyncio client and its scripts. One client per loop (an asyncio
    connection belongs to the loop it was opened on), one bounded pool (``_pool_options``). A
    closed loop's client is dropped when the next loop asks (a test client runs a loop per request)."""
    loop = asyncio.get_running_loop()
    found = _async.get(id(loop))
    if found is None or found[0] is not loop:
        for key in [k for k, (lp, _, _) in _async.items() if lp.is_closed()]:
            del _async[key]
        pool = redis.asyncio.BlockingConnectionPool.from_url(settings.REDIS_URL, **_pool_options())
        c = redis.asyncio.Redis.from_pool(pool)
        found = _async[id(loop)] = (loop, c, {})
    return found


def async_client() -> redis.asyncio.Redis:
    """The running loop's asyncio Redis client (the governance scripts' own, and its pool): for
    other short commands on the event loop (apps/inference/response_cache.py)."""
    return _async_entry()[1]


def async_script(name: str) -> AsyncScript:
    """``script(name)`` on the asyncio client of the running loop (``_async_entry``)."""
    found = _async_entry()
    scripts = found[2]
    s = scripts.get(name)
    if s is None:
        s = scripts[name] = found[1].register_script(getattr(lua, name))
    return s


def async_pool() -> redis.asyncio.ConnectionPool:
    """The connection pool of the running loop's governance client (tests)."""
    async_script("ADMIT")
    return _async[id(asyncio.get_running_loop())][1].connection_pool


def flush() -> None:
    """Delete every governance key of this prefix (tests, benches)."""
    c = client()
    keys = list(c.scan_iter(match=prefix() + "*", count=1000))
    for i in range(0, len(keys), 500):
        c.delete(*keys[i : i + 500])


# --- windows ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Windows:
    """The current day's and month's names and when each ends (epoch seconds)."""

    day: str
    day_end: float
    month: str
    month_end: float


_windows: Windows | None = None


def windows(now: float | None = None) -> Windows:
    """Today's and this month's windows, computed once a day per process."""
    global _windows
    t = time.time() if now is None else now
    w = _windows
    if w is not None and now is None and t < w.day_end:
        return w
    tz = ZoneInfo(settings.TIME_ZONE)
    local = datetime.fromtimestamp(t, tz)
    day_start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    day_end = (day_start + timedelta(days=1, hours=1)).replace(hour=0)  # DST-safe midnight
    month_start = day_start.replace(day=1)
    month_end = (month_start + timedelta(days=32)).replace(day=1)
    w = Windows(
        day=f"d{local:%Y%m%d}",
        day_end=day_end.timestamp(),
        month=f"m{local:%Y%m}",
        month_end=month_end.timestamp(),
    )
    if now is None:
        _windows = w
    return w


def counter_key(scope: str, month: str) -> str:
    """The counters of ``scope`` (``o:<organization id>``, ``l:<location pk>``) for a month and
    each of its days."""
    return f"{prefix()}c:{scope}:{month}"


def scope_keys(scopes: list[str], w: Windows) -> list[str]:
    return [counter_key(s, w.month) for s in scopes]


def usage(scope: str, w: Windows | None = None) -> dict[str, dict[str, int]]:
    """What a scope used (and holds) in the current day and month: {"day": {requests, tokens}, ...}."""
    w = w or windows()
    dr, dt, mr, mt = client().hmget(counter_key(scope, w.month), f"{w.day}:r", f"{w.day}:t", "m:r", "m:t")
    return {
        "day": {"requests": int(dr or 0), "tokens": int(dt or 0)},
        "month": {"requests": int(mr or 0), "tokens": int(mt or 0)},
    }


SEPARATOR = "\x1f"  # between the fields of a script's one packed argument (lua.py)


class Unpackable(ValueError):
    """A field holds the separator: it cannot be sent packed (a hostile IP string, a prefix)."""


def pack(args: list[Any]) -> list[str]:
    """A script's arguments as its one packed argument (see lua.py)."""
    packed = SEPARATOR.join([a if type(a) is str else str(a) for a in args])
    if packed.count(SEPARATOR) != len(args) - 1:
        raise Unpackable("a script argument holds the field separator")
    return [packed]


def unpack(answer: str) -> list[str]:
    """A script's answer sent as one packed string (ADMIT's) → its fields."""
    return answer.split(SEPARATOR)


def run(name: str, keys: list[str], args: list[Any]) -> Any:
    return script(name)(keys=keys, args=args)
