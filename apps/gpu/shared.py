"""The GPU state every process shares, in Redis, and each process's short-lived view of it.

Written by the monitor (GPU readings, the policy decision, health) and by request paths (circuit
breaker transitions, a backend marked down). Read on every request from a per-process view that
is refreshed at most every ``MEDAI_GPU_STATE_CACHE_SECONDS`` with one pipelined round trip, so a
routing/admission decision is a few dict lookups.

Keys (prefix ``{MEDAI_CACHE_PREFIX}:gpu:``):
  state      JSON: readings, policy decision, latency EMAs, published by the monitor (TTL 30 s)
  table      JSON: the admin-edited policy table (used when no monitor publishes a decision)
  circuits   hash endpoint id -> "state,failures,opened_at"
  health     hash endpoint id -> JSON {"ok", "ts", "detail"}
  inflight   hash process id -> JSON {"ts", "counts": {endpoint id: requests in flight}}, see slots.py
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from django.conf import settings

_client: redis.Redis | None = None
_client_lock = threading.Lock()


def key(name: str) -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX') or 'medai'}:gpu:{name}"


def client() -> redis.Redis:
    """A process-wide Redis client on ``REDIS_URL`` (its connection pool is thread-safe). After a
    Redis restart it reconnects on the next command; while Redis is down a command fails within
    the settings' timeouts (``REDIS_OPTIONS``) with a ``redis.RedisError``."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = redis.Redis.from_url(settings.REDIS_URL, **settings.REDIS_OPTIONS)
    return _client


def reset_client() -> None:
    """Forget the client (tests that point the process at another Redis)."""
    global _client
    with _client_lock:
        old, _client = _client, None
    if old is not None:
        old.close()


@dataclass
class View:
    state: dict[str, Any]
    table: dict[str, Any] | None
    circuits: dict[int, tuple[str, int, float]]
    health: dict[int, dict[str, Any]]
    loaded_at: float
    ema_ms: dict[int, float] = field(default_factory=dict)
    in_flight_raw: dict[bytes | str, bytes | str] = field(default_factory=dict)  # per process, see slots.py
    remote_in_flight: dict[int, int] | None = field(default=None, compare=False)  # slots.py's parse of it


_view: View | None = None
_view_lock = threading.Lock()


def text(raw: bytes | str) -> str:
    """A Redis reply as text (this client does not decode: its replies are bytes)."""
    return raw.decode() if isinstance(raw, bytes) else raw


def _decode_circuit(raw: bytes) -> tuple[str, int, float]:
    state, failures, opened_at = raw.decode().split(",")
    return state, int(failures), float(opened_at)


def load_view() -> View:
    pipe = client().pipeline(transaction=False)
    pipe.get(key("state"))
    pipe.get(key("table"))
    pipe.hgetall(key("circuits"))
    pipe.hgetall(key("health"))
    pipe.hgetall(key("inflight"))
    state_raw, table_raw, circuits_raw, health_raw, in_flight_raw = pipe.execute()
    state = json.loads(state_raw) if state_raw else {}
    return View(
        state=state,
        table=json.loads(table_raw) if table_raw else None,
        circuits={int(k): _decode_circuit(v) for k, v in circuits_raw.items()},
        health={int(k): json.loads(v) for k, v in health_raw.items()},
        loaded_at=time.monotonic(),
        ema_ms={int(k): float(v) for k, v in (state.get("ema_ms") or {}).items()},
        in_flight_raw=in_flight_raw,
    )


def view() -> View:
    """This process's view of the shared state, at most ``MEDAI_GPU_STATE_CACHE_SECONDS`` old.

    When Redis cannot be read the last view is kept (or an empty one): GPU policy must not turn a
    Redis hiccup into failed requests.
    """
    global _view
    v = _view
    if v is None or time.monotonic() - v.loaded_at > settings.MEDAI_GPU_STATE_CACHE_SECONDS:
        with _view_lock:
            v = _view
            if v is None or time.monotonic() - v.loaded_at > settings.MEDAI_GPU_STATE_CACHE_SECONDS:
                try:
                    fresh = load_view()
                except redis.RedisError:
                    fresh = v or View({}, None, {}, {}, 0.0)
                    fresh.loaded_at = time.monotonic()
                fresh.ema_ms = {**fresh.ema_ms, **_local_ema}
                _view = v = fresh
    return v


def invalidate() -> None:
    global _view
    _view = None


# Latency EMA measured by this process (fresher than the monitor's, which comes from the records).
_local_ema: dict[int, float] = {}


def observe_latency(endpoint_id: int, ms: float, alpha: float = 0.2) -> None:
    previous = _local_ema.get(endpoint_id)
    value = ms if previous is None else previous + alpha * (ms - previous)
    _local_ema[endpoint_id] = value
    if _view is not None:
        _view.ema_ms[endpoint_id] = value


def publish(name: str, data: Any, ttl: int | None = None) -> None:
    client().set(key(name), json.dumps(data, separators=(",", ":")), ex=ttl)


def mark_health(endpoint_id: int, ok: bool, detail: str = "") -> None:
    entry = {"ok": ok, "ts": time.time(), "detail": detail[:200]}
    client().hset(key("health"), str(endpoint_id), json.dumps(entry))
    if _view is not None:
        _view.health[endpoint_id] = entry


def reset_local() -> None:
    """Forget this process's view (tests, after flushing the shared keys)."""
    invalidate()
    _local_ema.clear()


# What other modules keep locally of the shared state (slots.py: this process's in-flight counts),
# forgotten with it. They register here: this module is below them and imports none of them.
_on_flush: list[Callable[[], None]] = []


def on_flush(forget: Callable[[], None]) -> None:
    """Call ``forget`` whenever the shared keys are flushed (``flush_shared``)."""
    if forget not in _on_flush:
        _on_flush.append(forget)


def flush_shared() -> None:
    """Delete every shared GPU key, and forget what this process keeps of them (tests, benches)."""
    c = client()
    keys = list(c.scan_iter(match=key("*"), count=500))
    if keys:
        c.delete(*keys)
    reset_local()
    for forget in _on_flush:
        forget()
