"""Per-model concurrency slots, counted in every process, admitted with no round trip, and a
bounded, priority-ordered line of requests waiting for one.

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

The line. A request that finds every slot of its models taken joins each model's line in this
process, ordered by its key ``(-priority, turn, ticket)``: CRITICAL first, and within a level
round-robin between locations (``new_key``), first come first served within a location; a
newcomer never takes a slot while someone with a better key waits for it. A request's limit
depends on its priority (``PolicyState.limit_for``: NORMAL and LOW stop short of the slots the
policy reserves for CRITICAL and HIGH), so an urgent request finds a slot free even while a flood
of LOW work holds every other one and keeps a line of its own. A
release hands its slot straight to the best waiter of that model (the count does not change, so
nobody can slip in between, and the waiter wakes with its lease: no poll). A release in another
process is announced on a Redis channel (``released``, in the same round trip as the count it
publishes) and wakes the heads of this process's lines for that model to re-check; a waiter also
re-checks on its own every ``RECHECK_SECONDS``, which only matters for GPU policy changes and an
announcement lost while Redis was away.

Urgent work across processes. Hand-offs keep a process's slots for its own line, so a process
flooding a model with LOW work would keep a HIGH or CRITICAL request of another process waiting
for as long as its flood lasts (beyond the slots the policy reserves for urgent work, which cover
the common case). So each process also publishes, with its counts, the most urgent HIGH or
CRITICAL priority waiting for each model in it (``urgent``), and a release that would hand its
slot to a less urgent waiter first reads the others' entries (from Redis, at most every 20 ms per
process, and only then): if a more urgent request waits elsewhere, the slot is freed instead and
announced, and that request takes it. CRITICAL thus starts within one slot's turn (plus one
publication, about 50 ms) of any process's flood; within a priority each process serves its own
line first. The line is per process (each process's waiters compete
for the slots the others leave through the published counts), holds at most
``MEDAI_ADMISSION_QUEUE_MAX`` waiters per model (a newcomer of higher priority than the last one
takes its place; the one put out answers 429), and a waiter gives up after the policy's
``wait_seconds``. Their 429 carries ``retry_after``: the line ahead of them times how long this
model's slots were held lately, divided among its slots.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence

from django.conf import settings

from apps.gpu import shared
from apps.gpu.priority import Priority

logger = logging.getLogger("medai.gpu")

PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
PUBLISH_MIN_INTERVAL = 0.05
HEARTBEAT = 2.0
STALE_AFTER = 10.0
RECHECK_SECONDS = 1.0  # a waiter's own re-check: policy changes, a lost cross-process announcement
URGENT = int(Priority.HIGH)  # waiters this urgent are announced to the other processes
HOLD_ALPHA = 0.2  # weight of the newest slot hold time in its moving average
DEFAULT_HOLD_SECONDS = 1.0  # a model whose slots were never released here yet (and no latency known)

_local: defaultdict[int, int] = defaultdict(int)
_lock = threading.Lock()
_dirty = threading.Event()
_published = threading.Condition()
_publish_round = 0
_publisher: threading.Thread | None = None
_publisher_pid: int | None = None
_hold_ema: dict[int, float] = {}  # seconds a slot of each model was held, moving average (this process)

Key = tuple[int, float, int]  # (-priority, turn, ticket): smaller is served first


class Lease:
    """A held slot. ``release()`` is idempotent; it hands the slot to the best waiter of the model."""

    __slots__ = ("endpoint_id", "released", "acquired_at")

    def __init__(self, endpoint_id: int) -> None:
        self.endpoint_id, self.released, self.acquired_at = endpoint_id, False, time.monotonic()

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        endpoint_id = self.endpoint_id
        held = time.monotonic() - self.acquired_at
        remote = remote_in_flight().get(endpoint_id, 0)  # outside the lock: it may refresh the view
        with _lock:  # a peek: only decides whether to look for urgent waiters elsewhere
            head = _head(endpoint_id)
        urgent_elsewhere = -1
        if head is not None and -head.key[0] < URGENT:
            urgent_elsewhere = fresh_remote_urgent().get(endpoint_id, -1)
        with _lock:
            previous = _hold_ema.get(endpoint_id)
            _hold_ema[endpoint_id] = held if previous is None else previous + HOLD_ALPHA * (held - previous)
            waiter = _head(endpoint_id)
            handed: Lease | None = None
            if waiter is not None and -waiter.key[0] < urgent_elsewhere:
                waiter = None  # a more urgent request waits in another process: free the slot for it
            if waiter is not None and _local[endpoint_id] - 1 + remote < waiter.limit:
                handed = Lease(endpoint_id)  # the slot passes on: the count stays
                _grant(waiter, handed)
                _started(waiter.key)
            else:
                waiter = None
                _local[endpoint_id] -= 1
        if waiter is None:
            _dirty.set()
        elif not waiter.notify() and handed is not None:
            handed.release()  # the waiter's loop is gone: on to the next


class _Waiter:
    __slots__ = ("key", "limit", "loop", "future", "endpoint_ids", "lease", "gone", "bumped")

    def __init__(self, key: Key, limit: int, loop: asyncio.AbstractEventLoop, endpoint_ids: Sequence[int]) -> None:
        self.key, self.limit, self.loop, self.endpoint_ids = key, limit, loop, tuple(endpoint_ids)
        self.future: asyncio.Future[None] = loop.create_future()
        self.lease: Lease | None = None
        self.gone = False  # out of every line: granted, bumped, nudged, or left
        self.bumped = False

    def notify(self) -> bool:
        """Wake it on its own loop; False when that loop is closed."""
        try:
            if _running_loop() is self.loop:
                _wake(self.future)
            else:
                self.loop.call_soon_threadsafe(_wake, self.future)
        except RuntimeError:
            return False
        return True


_lines: dict[int, list[_Waiter]] = {}  # per model, by key
_tickets = itertools.count()


class LineFull(Exception):
    """No room in the line of any of the request's models (or put out of it by a more urgent one)."""


def new_ticket() -> int:
    """A place in the waiting line, kept by a request across its waits."""
    return next(_tickets)


# Fair shares between locations within a priority level: start-time fair queueing with a unit cost.
# Each request takes the turn after its location's previous request, but never one before the turn
# being served now (``_served``): a location that sends 100 requests at once takes turns 1..100, one
# that sends a request meanwhile takes the next turn to be served, and goes ahead of the other's
# 99 waiting ones. A location that was idle gets no credit for it. Per process, as the line is.
_turns: dict[tuple[int, object], float] = {}  # (priority, location) -> the turn its latest request took
_served: dict[int, float] = {}  # priority -> the latest turn that took a slot


def new_key(priority: int, location: object = None) -> Key:
    """A request's place in every model's line, kept across its waits: ``(-priority, turn, ticket)``."""
    with _lock:
        turn = max(_served.get(priority, 0.0), _turns.get((priority, location), 0.0)) + 1
        _turns[(priority, location)] = turn
    return (-priority, turn, next(_tickets))


def _started(key: Key | None) -> None:
    """A request with ``key`` took a slot (under ``_lock``): its turn is being served."""
    if key is not None and len(key) == 3:
        priority = -key[0]
        if key[1] > _served.get(priority, 0.0):
            _served[priority] = key[1]


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _head(endpoint_id: int) -> _Waiter | None:
    line = _lines.get(endpoint_id)
    return line[0] if line else None


def _remove(waiter: _Waiter) -> None:
    """Take it out of every line (under ``_lock``)."""
    waiter.gone = True
    if -waiter.key[0] >= URGENT:
        _dirty.set()  # the urgent waiters this process publishes change
    for endpoint_id in waiter.endpoint_ids:
        line = _lines.get(endpoint_id)
        if line is None:
            continue
        i = bisect.bisect_left(line, waiter.key, key=lambda w: w.key)
        if i < len(line) and line[i] is waiter:
            del line[i]
        if not line:
            del _lines[endpoint_id]


def _grant(waiter: _Waiter, lease: Lease) -> None:
    _remove(waiter)
    waiter.lease = lease


def queue_max() -> int:
    return settings.MEDAI_ADMISSION_QUEUE_MAX


async def wait_for_slot(endpoint_ids: Iterable[int], *, limit: int, key: Key, timeout: float) -> Lease | None:
    """Wait in line (by ``key``) for a slot of one of these models, at most ``timeout`` seconds.

    Returns the lease a release handed over, or None when it is time to look again (the timeout,
    a release in another process, a re-check). Raises ``LineFull`` when every one of these lines
    is full of waiters at least as urgent, or when a more urgent newcomer put this one out."""
    loop = asyncio.get_running_loop()
    ids = list(dict.fromkeys(endpoint_ids))
    waiter = _Waiter(key, limit, loop, ids)
    most = queue_max()
    bumped: _Waiter | None = None
    with _lock:
        joined = [i for i in ids if len(_lines.get(i, ())) < most]
        if not joined:
            # Full everywhere: a more urgent request takes the place of the least urgent waiter.
            worst = max((_lines[i][-1] for i in ids), key=lambda w: w.key)
            if worst.key <= key:
                raise LineFull
            _remove(worst)
            worst.bumped, bumped = True, worst
            joined = [i for i in ids if len(_lines.get(i, ())) < most]
        waiter.endpoint_ids = tuple(joined)
        for endpoint_id in joined:
            bisect.insort(_lines.setdefault(endpoint_id, []), waiter, key=lambda w: w.key)
    if bumped is not None:
        bumped.notify()
    if -key[0] >= URGENT and limit > 0:
        _dirty.set()  # other processes hear of it and free their next slot for it (``Lease.release``)
        _ensure_publisher()
    if any(remote_in_flight().get(i, 0) for i in joined):
        _ensure_listener()  # other processes hold these slots: hear of their releases
    timer = loop.call_later(timeout, _wake, waiter.future)  # cheaper than asyncio.timeout on this path
    try:
        await waiter.future
    except BaseException:
        lease = _leave(waiter)
        if lease is not None:
            lease.release()  # granted just as the request was cancelled: pass it on
        raise
    finally:
        timer.cancel()
    if waiter.bumped:
        raise LineFull
    return _leave(waiter)


def _leave(waiter: _Waiter) -> Lease | None:
    with _lock:
        if not waiter.gone:
            _remove(waiter)
        lease, waiter.lease = waiter.lease, None
    return lease


def ahead_of(endpoint_ids: Iterable[int], key: Key) -> int:
    """How many requests of this process wait before ``key`` for these models (the fewest of them)."""
    with _lock:
        counts = [
            bisect.bisect_left(line, key, key=lambda w: w.key)
            for i in endpoint_ids
            if (line := _lines.get(i)) is not None
        ]
    return min(counts, default=0)


def waiting(endpoint_id: int) -> int:
    """Requests of this process in the line of this model."""
    with _lock:
        return len(_lines.get(endpoint_id, ()))


def retry_after(endpoint_ids: Iterable[int], ahead: int, limit: int) -> int:
    """Seconds until a request with ``ahead`` requests before it would likely have a slot: rounds
    of ``limit`` requests, each as long as a slot of the model was held lately (the request-path
    latency EMA before any was released here). The soonest of the models; at least 1."""
    v = shared.view()
    best = math.inf
    for endpoint_id in endpoint_ids:
        hold = _hold_ema.get(endpoint_id)
        if hold is None:
            ema_ms = v.ema_ms.get(endpoint_id)
            hold = ema_ms / 1000 if ema_ms else DEFAULT_HOLD_SECONDS
        best = min(best, math.ceil((ahead + 1) / max(limit, 1)) * hold)
    if best is math.inf:
        best = DEFAULT_HOLD_SECONDS
    return max(1, math.ceil(best))


def _nudge(counts: dict[int, int]) -> None:
    """Slots of these models were freed in another process: wake that many heads of each line to
    look again (they keep their keys, so they still come before any newcomer)."""
    woken: list[_Waiter] = []
    with _lock:
        for endpoint_id, n in counts.items():
            for waiter in list(_lines.get(endpoint_id, ()))[: max(n, 1)]:
                _remove(waiter)
                woken.append(waiter)
    for waiter in woken:
        waiter.notify()


def try_acquire(endpoint_id: int, limit: int, *, key: Key | None = None) -> Lease | None:
    """Take a slot if fewer than ``limit`` requests are in flight on this model (every process
    counted); None otherwise. Never waits, never does I/O when the view is fresh. A request does
    not overtake requests of this process waiting for the model with a better key; one without a
    key overtakes nobody."""
    if limit <= 0:
        return None
    remote = remote_in_flight().get(endpoint_id, 0)
    if key is not None and remote and _local[endpoint_id] + remote >= limit:
        # A waiter held back by other processes' counts reads them fresh (the view may be up to
        # MEDAI_GPU_STATE_CACHE_SECONDS old): a slot freed elsewhere is taken at once.
        remote = fresh_remote_in_flight().get(endpoint_id, 0)
    if key is not None and -key[0] < URGENT and _urgent_lately(endpoint_id) > -key[0]:
        return None  # a slot this process just freed for an urgent request elsewhere: not for this one
    with _lock:
        if _local[endpoint_id] + remote >= limit:
            return None
        line = _lines.get(endpoint_id)
        if line and (key is None or line[0].key < key):
            return None
        _local[endpoint_id] += 1
        _started(key)
    _dirty.set()
    _ensure_publisher()
    return Lease(endpoint_id)


def _parse(raw: dict[bytes | str, bytes | str], exclude_self: bool) -> dict[int, int]:
    now = time.time()
    totals: defaultdict[int, int] = defaultdict(int)
    for field, value in raw.items():
        if exclude_self and shared.text(field) == PROCESS_ID:
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
    cached = v.remote_in_flight
    if cached is None:
        cached = v.remote_in_flight = _parse(v.in_flight_raw, exclude_self=True)
    return cached


_fresh_remote: tuple[float, dict[int, int], dict[int, int]] | None = None  # (read at, counts, urgent)
FRESH_REMOTE_SECONDS = 0.02


def _fresh() -> tuple[float, dict[int, int], dict[int, int]]:
    """Other processes' published entries read from Redis, at most every 20 ms per process."""
    global _fresh_remote
    now = time.monotonic()
    cached = _fresh_remote
    if cached is not None and now - cached[0] < FRESH_REMOTE_SECONDS:
        return cached
    try:
        raw = shared.client().hgetall(shared.key("inflight"))
        fresh = (now, _parse(raw, exclude_self=True), _parse_urgent(raw))
    except Exception:  # noqa: BLE001 - Redis unreachable: the view's counts stand
        fresh = (now, remote_in_flight(), {})
    _fresh_remote = fresh
    return fresh


def fresh_remote_in_flight() -> dict[int, int]:
    """Other processes' published counts read from Redis, at most every 20 ms per process (only
    waiting requests ask: admission itself never waits on a round trip)."""
    return _fresh()[1]


def _parse_urgent(raw: dict[bytes | str, bytes | str]) -> dict[int, int]:
    """The most urgent priority (HIGH or CRITICAL) waiting for each model in other processes."""
    now = time.time()
    best: dict[int, int] = {}
    for field, value in raw.items():
        if shared.text(field) == PROCESS_ID:
            continue
        entry = json.loads(value)
        if now - entry["ts"] > STALE_AFTER:
            continue
        for endpoint_id, priority in (entry.get("urgent") or {}).items():
            best[int(endpoint_id)] = max(best.get(int(endpoint_id), -1), int(priority))
    return best


URGENT_LATELY_SECONDS = 0.1


def _urgent_lately(endpoint_id: int) -> int:
    """The most urgent priority waiting elsewhere for this model as this process last read it, if
    it read it lately (no I/O; -1 otherwise): a waiter of this process that re-checks on its own
    must not take the slot a release just freed for that request."""
    cached = _fresh_remote
    if cached is None or time.monotonic() - cached[0] > URGENT_LATELY_SECONDS:
        return -1
    return cached[2].get(endpoint_id, -1)


def fresh_remote_urgent() -> dict[int, int]:
    """Urgent requests waiting in other processes, per model (from Redis, at most 20 ms old).
    Asked only by a release that would hand its slot to a waiter less urgent than HIGH: at most one
    round trip per 20 ms per process, and none while the line is empty or urgent itself."""
    return _fresh()[2]


def local_urgent() -> dict[int, int]:
    """The most urgent priority (HIGH or CRITICAL) waiting in this process per model, counting only
    waiters the policy lets in at all (a limit of 0: freeing a slot elsewhere would not help)."""
    with _lock:
        best: dict[int, int] = {}
        for endpoint_id, line in _lines.items():
            for waiter in line:  # by key: the first admissible one is the most urgent
                if -waiter.key[0] < URGENT:
                    break
                if waiter.limit > 0:
                    best[endpoint_id] = -waiter.key[0]
                    break
        return best


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


_last_published: dict[int, int] = {}


def _publish_once() -> None:
    global _publish_round
    counts = local_in_flight()
    urgent = local_urgent()
    freed = {k: n - counts.get(k, 0) for k, n in _last_published.items() if counts.get(k, 0) < n}
    try:
        pipe = shared.client().pipeline(transaction=False)
        entry: dict[str, object] = {"ts": time.time(), "counts": {str(k): n for k, n in counts.items()}}
        if urgent:
            entry["urgent"] = {str(k): p for k, p in urgent.items()}
        pipe.hset(shared.key("inflight"), PROCESS_ID, json.dumps(entry))
        if freed:  # after the count, in the same round trip: a woken waiter reads the new count
            pipe.publish(release_channel(), json.dumps({"pid": PROCESS_ID, "freed": freed}))
        pipe.execute()
        _last_published.clear()
        _last_published.update(counts)
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


_listener: threading.Thread | None = None
_listener_pid: int | None = None


def release_channel() -> str:
    """The channel releases are announced on. Channels ignore Redis's database numbers, so the
    number is part of the name: installations on other databases of one Redis stay apart."""
    db = shared.client().connection_pool.connection_kwargs.get("db", 0)
    return f"{shared.key('released')}:{db}"


def _listen_loop() -> None:
    """Hear other processes' releases (``released`` channel) and wake this process's waiters."""
    global _fresh_remote
    while True:
        pubsub = None
        try:
            pubsub = shared.client().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(release_channel())
            while True:
                message = pubsub.get_message(timeout=HEARTBEAT)
                if message is None or message.get("type") != "message":
                    continue
                data = json.loads(message["data"])
                if data.get("pid") == PROCESS_ID:
                    continue
                _fresh_remote = None  # the announcing process's new count is in Redis already
                _nudge({int(k): int(n) for k, n in data.get("freed", {}).items()})
        except Exception:  # Redis away: waiters re-check on their own meanwhile
            logger.debug("slot release listener reconnecting", exc_info=True)
            time.sleep(1.0)
        finally:
            if pubsub is not None:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001
                    pass


def _ensure_listener() -> None:
    global _listener, _listener_pid
    if _listener is None or not _listener.is_alive() or _listener_pid != os.getpid():
        with _lock:
            if _listener is None or not _listener.is_alive() or _listener_pid != os.getpid():
                _listener = threading.Thread(target=_listen_loop, daemon=True, name="medai-slot-listen")
                _listener_pid = os.getpid()
                _listener.start()


def _ensure_publisher() -> None:
    global _publisher, _publisher_pid
    if _publisher is None or not _publisher.is_alive() or _publisher_pid != os.getpid():
        with _lock:
            if _publisher is None or not _publisher.is_alive() or _publisher_pid != os.getpid():
                _publisher = threading.Thread(target=_publish_loop, daemon=True, name="medai-slot-publish")
                _publisher_pid = os.getpid()
                _publisher.start()


def _published_since(target: int) -> bool:
    return _publish_round >= target


def flush_releases(timeout: float = 5.0) -> None:
    """Wait until this process's current counts are in Redis (tests, the monitor's drain)."""
    _ensure_publisher()
    for _ in range(2):  # the second round surely started after this call
        with _published:
            target = _publish_round + 1
            _dirty.set()
            _published.wait_for(functools.partial(_published_since, target), timeout)


def reset_local() -> None:
    """Forget this process's counts and its last read of the others' (tests)."""
    global _fresh_remote
    _fresh_remote = None
    with _lock:
        _local.clear()
        _hold_ema.clear()
        _turns.clear()
        _served.clear()
        _last_published.clear()


shared.on_flush(reset_local)
