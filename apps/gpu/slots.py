"""Per-model concurrency slots, counted in every process, admitted with no round trip.

Each process counts its own requests in flight per model exactly (a lock and a dict) and a
background thread publishes those counts to Redis (hash ``inflight``: one field per process, at
most every 50 ms when they change, and every 2 s as a heartbeat). Admission compares this
process's count plus the other processes' published counts (from the per-process view, at most
``MEDAI_GPU_STATE_CACHE_SECONDS`` old; a request already waiting reads them fresh from Redis, at
most every 20 ms per process) with the policy's limit.

Why not an exact Redis semaphore: it costs a round trip on every request (150 µs here under load,
over the 0.2 ms budget of the whole decision). The price of this design is that processes
starting requests within the same second may briefly exceed a model's limit together; within one
process the limit is exact, and a level that admits nothing (CRITICAL, thermal pause) admits
nothing anywhere. A process that dies stops heart-beating and its counts are ignored after 10 s.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import json
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable

from apps.gpu import shared

PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
PUBLISH_MIN_INTERVAL = 0.05
HEARTBEAT = 2.0
STALE_AFTER = 10.0

_local: defaultdict[int, int] = defaultdict(int)
_lock = threading.Lock()
_dirty = threading.Event()
_published = threading.Condition()
_publish_round = 0
_publisher: threading.Thread | None = None
_publisher_pid: int | None = None


class Lease:
    """A held slot. ``release()`` is idempotent."""

    __slots__ = ("endpoint_id", "released")

    def __init__(self, endpoint_id: int) -> None:
        self.endpoint_id, self.released = endpoint_id, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            with _lock:
                _local[self.endpoint_id] -= 1
                waiter = None
                queue = _waiters.get(self.endpoint_id)
                while queue:
                    candidate = queue.pop(0)
                    if not candidate.woken and not candidate.future.done():
                        waiter = candidate
                        waiter.woken = True
                        break
            if waiter is not None:  # the longest waiter for this model tries next
                waiter.loop.call_soon_threadsafe(_wake, waiter.future)
            _dirty.set()


class _Waiter:
    __slots__ = ("ticket", "loop", "future", "woken")

    def __init__(self, ticket: int, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        self.ticket, self.loop, self.future, self.woken = ticket, loop, future, False


_waiters: defaultdict[int, list[_Waiter]] = defaultdict(list)  # per model, by ticket: first come, first served
_tickets = itertools.count()


def new_ticket() -> int:
    """A place in the waiting line, kept by a request across its waits."""
    return next(_tickets)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_turn(endpoint_ids: Iterable[int], timeout: float, ticket: int) -> bool:
    """Wait, in ticket order per model, until a slot of one of these models is released in this
    process, or ``timeout`` passes (releases in other processes and policy changes are seen by
    polling). True when woken by a release."""
    loop = asyncio.get_running_loop()
    waiter = _Waiter(ticket, loop, loop.create_future())
    ids = list(endpoint_ids)
    with _lock:
        for endpoint_id in ids:
            bisect.insort(_waiters[endpoint_id], waiter, key=lambda w: w.ticket)
    try:
        await asyncio.wait_for(waiter.future, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        with _lock:
            waiter.woken = True
            for endpoint_id in ids:
                queue = _waiters.get(endpoint_id)
                if queue is not None:
                    try:
                        queue.remove(waiter)
                    except ValueError:
                        pass
                    if not queue:
                        del _waiters[endpoint_id]


def try_acquire(endpoint_id: int, limit: int, *, ticket: int | None = None) -> Lease | None:
    """Take a slot if fewer than ``limit`` requests are in flight on this model (every process
    counted); None otherwise. Never waits, never does I/O when the view is fresh. A request does
    not overtake requests of this process that have waited for the model longer (lower tickets)."""
    if limit <= 0:
        return None
    remote = remote_in_flight().get(endpoint_id, 0)
    if ticket is not None and remote and _local[endpoint_id] + remote >= limit:
        # A waiter held back by other processes' counts reads them fresh (the view may be up to
        # MEDAI_GPU_STATE_CACHE_SECONDS old): a slot freed elsewhere is taken within one poll.
        remote = fresh_remote_in_flight().get(endpoint_id, 0)
    with _lock:
        if _local[endpoint_id] + remote >= limit:
            return None
        queue = _waiters.get(endpoint_id)
        if queue and (ticket is None or any(w.ticket < ticket and not w.woken for w in queue)):
            return None
        _local[endpoint_id] += 1
    _dirty.set()
    _ensure_publisher()
    return Lease(endpoint_id)


def _parse(raw: dict[bytes, bytes], exclude_self: bool) -> dict[int, int]:
    now = time.time()
    totals: defaultdict[int, int] = defaultdict(int)
    for field, value in raw.items():
        if exclude_self and field.decode() == PROCESS_ID:
            continue
        entry = json.loads(value)
        if now - entry["ts"] > STALE_AFTER:
            continue
        for endpoint_id, count in entry["counts"].items():
            totals[int(endpoint_id)] += int(count)
    return dict(totals)


def remote_in_flight() -> dict[int, int]:
    """Other processes' requests in flight per model, from this process's view."""
    v = shared.view()
    cached = getattr(v, "_remote_in_flight", None)
    if cached is None:
        cached = _parse(v.in_flight_raw, exclude_self=True)
        v._remote_in_flight = cached  # type: ignore[attr-defined]
    return cached


_fresh_remote: tuple[float, dict[int, int]] | None = None
FRESH_REMOTE_SECONDS = 0.02


def fresh_remote_in_flight() -> dict[int, int]:
    """Other processes' published counts read from Redis, at most every 20 ms per process (only
    waiting requests ask: admission itself never waits on a round trip)."""
    global _fresh_remote
    now = time.monotonic()
    cached = _fresh_remote
    if cached is not None and now - cached[0] < FRESH_REMOTE_SECONDS:
        return cached[1]
    try:
        counts = _parse(shared.client().hgetall(shared.key("inflight")), exclude_self=True)
    except Exception:  # noqa: BLE001 - Redis unreachable: the view's counts stand
        counts = remote_in_flight()
    _fresh_remote = (now, counts)
    return counts


def local_in_flight() -> dict[int, int]:
    with _lock:
        return {k: n for k, n in _local.items() if n}


def in_flight_by_endpoint() -> dict[int, int]:
    """Requests in flight per model in every process, read from Redis now (plus this process's own)."""
    try:
        totals = _parse(shared.client().hgetall(shared.key("inflight")), exclude_self=True)
    except Exception:  # noqa: BLE001
        totals = {}
    for endpoint_id, n in local_in_flight().items():
        totals[endpoint_id] = totals.get(endpoint_id, 0) + n
    return {k: n for k, n in totals.items() if n}


def in_flight(endpoint_id: int) -> int:
    return in_flight_by_endpoint().get(endpoint_id, 0)


def _publish_once() -> None:
    global _publish_round
    counts = local_in_flight()
    try:
        shared.client().hset(shared.key("inflight"), PROCESS_ID,
                             json.dumps({"ts": time.time(), "counts": {str(k): n for k, n in counts.items()}}))
    except Exception:  # noqa: BLE001 - published again at the next change or heartbeat
        pass
    with _published:
        _publish_round += 1
        _published.notify_all()


def _publish_loop() -> None:
    while True:
        _dirty.wait(HEARTBEAT)
        _dirty.clear()
        _publish_once()
        time.sleep(PUBLISH_MIN_INTERVAL)


def _ensure_publisher() -> None:
    global _publisher, _publisher_pid
    if _publisher is None or not _publisher.is_alive() or _publisher_pid != os.getpid():
        with _lock:
            if _publisher is None or not _publisher.is_alive() or _publisher_pid != os.getpid():
                _publisher = threading.Thread(target=_publish_loop, daemon=True, name="medai-slot-publish")
                _publisher_pid = os.getpid()
                _publisher.start()


def flush_releases(timeout: float = 5.0) -> None:
    """Wait until this process's current counts are in Redis (tests, the monitor's drain)."""
    _ensure_publisher()
    for _ in range(2):  # the second round surely started after this call
        with _published:
            target = _publish_round + 1
            _dirty.set()
            _published.wait_for(lambda target=target: _publish_round >= target, timeout)


def reset_local() -> None:
    """Forget this process's counts (tests)."""
    with _lock:
        _local.clear()


def wait_loop_delays() -> Callable[[], float]:
    """How long a waiting request waits before re-checking on its own: 5 ms doubling to 50 ms
    (a release in this process wakes it at once; one in another process is seen at the next check,
    at most ``PUBLISH_MIN_INTERVAL`` after it happened)."""
    delay = 0.005

    def next_delay() -> float:
        nonlocal delay
        current, delay = delay, min(delay * 2, 0.05)
        return current

    return next_delay
