"""Governance of inference: rate limits and quotas (issue 10), exact across processes.

The pipeline (apps/inference/pipeline/) calls these at fixed points of every request to a model,
whatever the entry point (chat, stream, the async API, batches):

    authenticate → authorize → validate → **rate limit** → **quota reserve** → route → admit
    → dispatch → **reconcile** → audit → metrics

Contracts (plain values in, plain values out; accounts imports nothing of gpu or inference):

* ``admit(principal, items=, ip=, units=, in_flight=)``: rate limit and quota reserve in one
  Redis script, one round trip: takes ``units`` from the caller's token buckets (per API key,
  user, IP), counts the request against the key's in-flight cap (sync chat), and holds requests
  and tokens (each ``Item``'s prompt estimate plus its ``max_tokens``, or
  MEDAI_QUOTA_DEFAULT_MAX_TOKENS) against the organization's and the location's daily and monthly
  quotas. All or nothing: a refusal takes nothing. Returns the ``RateLimit`` (its ``headers``,
  ``X-RateLimit-*``) and a ``Reservation`` per item; raises ``LimitExceeded`` (429 with
  ``Retry-After``: a bucket's refill time, or the quota window's end) or ``Unavailable`` (503:
  Redis is down and the organization fails closed, the default).
  ``check_rate_limit`` and ``reserve`` are its two halves, for callers that need only one.
* ``reconcile(reservation, prompt_tokens=, completion_tokens=, completed=)`` exactly once per
  reservation: the real usage replaces the hold (a request counts when it completed or used
  tokens; nothing when it never reached a model), and the in-flight slot is freed. Never raises.
  A hold that is never settled (the process died) is released when its lease ends
  (MEDAI_QUOTA_LEASE_SECONDS; MEDAI_QUOTA_ASYNC_LEASE_SECONDS for a queued task), by the next
  script that runs; a settle after that charges the real usage.
* ``reservation_for(principal, ref=)``: the hold made at submit for an async task (``ref``: its
  id, chosen before the task row exists), as the worker that settles it finds it.

Exactness: every check and every change of a request is one Lua script, atomic in Redis, with
Redis's clock; the quotas themselves are mirrored into Redis on every change (quotas.py), so the
request path never queries the database. What a window used is counted as it is reserved, so
``N`` requests of quota ``N`` across any number of processes admit exactly ``N``.

On the web process's event loop (sync chat, websockets) ``admit_async`` and
``check_rate_limit_async`` await the same script on the loop's asyncio client: a blocking round
trip there stops every request of the process while Redis answers (a stalled Redis: up to
MEDAI_REDIS_SOCKET_TIMEOUT). On two busy cores the throughput gain was within noise (the asyncio
round trip costs the loop more CPU; bench/README.md). The blocking ``admit`` stays for threads
(the async API's submit in its database thread, the worker, management code).

None of it writes an audit event: the inference's own event (apps/inference/auditing.py) is the record; a refusal is the 429 the caller sees.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import time
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis
from django.conf import settings
from django.db import DatabaseError

from apps.accounts.governance import metrics, quotas, store

if TYPE_CHECKING:
    from apps.accounts.services import Principal

logger = logging.getLogger("medai.governance")

CHAT = "chat"  # the action of a chat completion, sync or async


class LimitExceeded(Exception):
    """A rate limit or quota refuses this request: answers 429 with ``Retry-After``."""

    status = 429

    def __init__(self, code: str, message: str, retry_after: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after = code, message, retry_after
        self.headers = headers or {}


class Unavailable(LimitExceeded):
    """The counter store is down and this organization fails closed: 503, nothing was sent."""

    status = 503


@dataclass(frozen=True)
class RateLimit:
    """What the rate limiter decided for a request it let through."""

    headers: dict[str, str] = field(default_factory=dict)  # X-RateLimit-Limit, -Remaining, -Reset


@dataclass(frozen=True)
class Reservation:
    """Requests and tokens held against a quota until ``reconcile`` settles them."""

    user_id: int
    location_pk: int
    organization_id: int | None
    action: str
    requests: int = 0
    tokens: int = 0
    ref: str = ""  # what it is for (a task id), when another process settles it
    hold: str = ""  # the hold's id in Redis ("": nothing held, nothing to settle there)
    keys: tuple[str, ...] = ()  # the counters a settle charges when the hold is gone
    in_flight: tuple[str, str] | None = None  # (zset, member) of the in-flight cap
    completion_cap: int = 0  # the completion tokens held, when a token quota applies
    day: str = ""  # the day window the request was counted in (its counters' day field)


@dataclass(frozen=True)
class Item:
    """One request to hold quota for: its prompt's estimated tokens, its ``max_tokens``, and the
    id of the hold (an async task's id; empty: a new one)."""

    prompt_tokens: int
    max_tokens: int | None = None
    ref: str = ""


NO_LIMIT = RateLimit()
_headers: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "medai_rate_limit_headers", default=None
)
_fail_open: dict[int | None, bool] = {}  # organization → fails open, as the last script answer said


def enabled() -> bool:
    return bool(settings.MEDAI_GOVERNANCE)


def rate_limit_headers() -> dict[str, str]:
    """The ``X-RateLimit-*`` headers of this request's last rate-limit decision (a view adds them
    to its answer, also to an error after the rate-limit step)."""
    return _headers.get() or {}


def estimate_prompt_tokens(req: dict[str, Any]) -> int:
    """An upper bound of a request's prompt tokens without a tokenizer: the UTF-8 bytes of its
    messages and tools as JSON (byte-level BPE never makes more tokens than bytes; the JSON's
    quotes and keys outnumber a chat template's markers) plus MEDAI_QUOTA_PROMPT_OVERHEAD for what
    is added later (a route's system prompt). Over-reserving is released at reconcile."""
    size = len(json.dumps(req.get("messages") or [], ensure_ascii=False, separators=(",", ":")).encode())
    if req.get("prompt"):  # a (legacy) completions request: its prompt (or prompts)
        size += len(json.dumps(req["prompt"], ensure_ascii=False, separators=(",", ":")).encode())
    if req.get("tools"):
        size += len(json.dumps(req["tools"], ensure_ascii=False, separators=(",", ":")).encode())
    return size + int(settings.MEDAI_QUOTA_PROMPT_OVERHEAD)


def item_of(req: dict[str, Any], ref: str = "") -> Item:
    """The quota item of a validated chat or completions request (a list of prompts: each
    prompt's completion held)."""
    completion = req.get("max_completion_tokens") or req.get("max_tokens")
    prompts = req.get("prompt")
    if completion and isinstance(prompts, list) and len(prompts) > 1:
        completion *= len(prompts)
    return Item(estimate_prompt_tokens(req), completion, ref)


# --- admission: rate limit + in-flight + quota reserve, one script ---------------------------------


@dataclass(frozen=True)
class Admitted:
    rate_limit: RateLimit
    reservations: list[Reservation]


def _scopes(principal: Principal) -> list[str]:
    scopes = [f"l:{principal.location_pk}"]
    if principal.organization_id is not None:
        scopes.insert(0, f"o:{principal.organization_id}")
    return scopes


def _credential(principal: Principal) -> str:
    return f"k:{principal.api_key_id}" if principal.api_key_id is not None else f"u:{principal.user_id}"


def _buckets(principal: Principal, ip: str | None) -> list[tuple[str, float, float, str]]:
    p = store.prefix()
    out: list[tuple[str, float, float, str]] = []
    if principal.api_key_id is not None:
        out.append(
            (
                f"{p}b:k:{principal.api_key_id}",
                settings.MEDAI_RATE_LIMIT_KEY_RATE,
                settings.MEDAI_RATE_LIMIT_KEY_BURST,
                "1",  # the key's own limits (admin) replace these
            )
        )
    out.append(
        (f"{p}b:u:{principal.user_id}", settings.MEDAI_RATE_LIMIT_USER_RATE, settings.MEDAI_RATE_LIMIT_USER_BURST, "0")
    )
    if ip:
        ip = ip.replace(store.SEPARATOR, "?")  # the scripts' field separator (store.pack): never from a client
        out.append((f"{p}b:i:{ip}", settings.MEDAI_RATE_LIMIT_IP_RATE, settings.MEDAI_RATE_LIMIT_IP_BURST, "0"))
    return out


_ADJECTIVE = {"day": "daily", "month": "monthly"}
_BUCKET_NAMES = {"k": "API key", "u": "user", "i": "IP address"}


@dataclass(frozen=True)
class _Call:
    """One admission as the script takes it, and what its answer is read against."""

    principal: Principal
    items: Sequence[Item]
    units: int
    action: str
    keys: list[str]
    args: list[Any]
    refs: list[str]
    amounts: list[int]
    scopes: list[str]
    windows: store.Windows
    flight: tuple[str, str] | None


def _call(
    principal: Principal, items: Sequence[Item], ip: str | None, units: int, rate: bool, in_flight: bool, action: str
) -> _Call:
    w = store.windows()
    p = store.prefix()
    refs = [it.ref or uuid.uuid4().hex for it in items]
    amounts = [it.prompt_tokens + (it.max_tokens or settings.MEDAI_QUOTA_DEFAULT_MAX_TOKENS) for it in items]
    scopes = _scopes(principal) if items else []
    async_hold = any(it.ref for it in items)
    lease = settings.MEDAI_QUOTA_ASYNC_LEASE_SECONDS if async_hold else settings.MEDAI_QUOTA_LEASE_SECONDS
    key_field = f"k:{principal.api_key_id}" if principal.api_key_id is not None else ""
    fo_field = f"fo:{principal.organization_id}" if principal.organization_id is not None else ""
    args: list[Any] = [p, units, len(items), lease, w.day, w.day_end, w.month_end, key_field, fo_field]
    buckets = _buckets(principal, ip) if rate else []
    args.append(len(buckets))
    for bucket in buckets:
        args.extend(bucket)
    flight = (f"{p}f:{_credential(principal)}", refs[0]) if in_flight and refs else None
    if flight:
        args += [flight[0], settings.MEDAI_INFLIGHT_PER_KEY, flight[1], settings.MEDAI_QUOTA_LEASE_SECONDS]
    else:
        args += ["", 0, "", 0]
    args.append(len(scopes))
    for scope in scopes:
        args += [scope, store.counter_key(scope, w.month)]
    args.append(len(items))
    for ref, amount in zip(refs, amounts, strict=True):
        args += [ref, amount]
    keys = [p + "lim", p + "leases"]
    return _Call(principal, items, units, action, keys, store.pack(args), refs, amounts, scopes, w, flight)


def admit(
    principal: Principal,
    *,
    items: Sequence[Item] = (),
    ip: str | None = None,
    units: int = 1,
    rate: bool = True,
    in_flight: bool = False,
    action: str = CHAT,
) -> Admitted:
    """Rate limit (``rate``: ``units`` from each bucket), in-flight cap (``in_flight``) and quota
    reservation of ``items``, atomically in one round trip. See the module's contract. Blocking:
    for a thread (the worker, management code); on an event loop, ``admit_async``."""
    if not enabled():
        return Admitted(NO_LIMIT, [_empty(principal, action, it) for it in items])
    call = _call(principal, items, ip, units, rate, in_flight, action)
    try:
        answer = store.unpack(store.run("ADMIT", call.keys, call.args))
        if answer[0] == "reload":
            quotas.publish_from_anywhere()
            answer = store.unpack(store.run("ADMIT", call.keys, call.args))
            _published(answer)
    except redis.RedisError as exc:
        return _store_down(principal, action, items, exc)
    return _decide(call, answer)


async def admit_async(
    principal: Principal,
    *,
    items: Sequence[Item] = (),
    ip: str | None = None,
    units: int = 1,
    rate: bool = True,
    in_flight: bool = False,
    action: str = CHAT,
) -> Admitted:
    """``admit`` on an event loop (sync chat): the same script, awaited on the loop's asyncio
    client, so that the loop serves other requests while Redis answers. The trade-off: an asyncio
    round trip costs the loop more CPU than a blocking one (a task, the protocol's callbacks); in
    exchange the loop never stops for Redis (under concurrency, or a slow Redis).

    A caller cancelled meanwhile (the client went away) cannot leave a slot or a hold behind: the
    script runs to its answer in a task of its own, and an admission nobody received is released
    (a settle of nothing) as soon as it arrives."""
    if not enabled():
        return Admitted(NO_LIMIT, [_empty(principal, action, it) for it in items])
    call = _call(principal, items, ip, units, rate, in_flight, action)
    settles = _take_queued()
    try:
        answer = await _run_shielded(call, settles)
        if answer[0] == "reload":  # (the settles went: SETTLE ran before ADMIT asked for the limits)
            await quotas.publish_async()
            answer = await _run_shielded(call)
            _published(answer)
    except redis.RedisError as exc:
        if settles is not None:
            logger.warning("could not settle %d quota reservation(s); their leases will release them", settles.n)
        if _fail_open.get(principal.organization_id) is None and principal.organization_id is not None:
            await _learn_fail_open(principal.organization_id)
        return _store_down(principal, action, items, exc)
    return _decide(call, answer)


def _published(answer: Any) -> None:
    """The script still misses the limits it was just given: the publish went elsewhere (another
    Redis behind the same name) or was lost again; the store counts as down for this request."""
    if answer[0] == "reload":
        raise redis.RedisError("the limits' mirror is missing right after it was published")


async def _run_shielded(call: _Call, settles: _Settles | None = None) -> Any:
    """The admission script in a task of its own (``settles``: the loop's queued settles, sent
    first in the same script)."""
    if settles is None:
        script = store.async_script("ADMIT")(keys=call.keys, args=call.args)
    else:
        p = store.prefix()
        settle_args = store.pack([p, settles.n, *settles.fields])
        script = store.async_script("SETTLE_ADMIT")(keys=call.keys, args=[*settle_args, *call.args])
    task = asyncio.get_running_loop().create_task(script)
    try:
        return store.unpack(await asyncio.shield(task))
    except asyncio.CancelledError:
        task.add_done_callback(lambda done: _release_unreceived(call, done))
        raise


def _release_unreceived(call: _Call, done: asyncio.Task[Any]) -> None:
    """The admission of a cancelled caller arrived: give back what it took (its holds, its slot;
    a bucket's unit stays spent, as a refused request's would)."""
    if done.cancelled() or done.exception() is not None or store.unpack(done.result())[0] != "ok":
        return
    entries = [
        (Reservation(0, 0, None, call.action, 1, 0, "", ref, (), call.flight if i == 0 else None), 0, 0, False)
        for i, ref in enumerate(call.refs)
    ]
    n, fields = _settle_fields(entries)
    if n:
        _queue_settle(n, fields)


async def _learn_fail_open(organization_id: int) -> None:
    """Redis is down and this process never heard the organization's choice: ask the database, in
    a thread (the loop never queries), and keep the answer until the next script answer replaces it."""
    from asgiref.sync import sync_to_async

    try:
        found = await sync_to_async(quotas.fail_open_of, thread_sensitive=True)(organization_id)
    except DatabaseError:  # the database is down too: the default decides
        return
    if found is not None:
        _fail_open[organization_id] = found


_REJECTED = {"rate": "rate_limit", "inflight": "in_flight", "quota": "quota"}  # answer → metric kind


def _decide(call: _Call, answer: Any) -> Admitted:
    """The script's answer → the admission, or LimitExceeded."""
    principal, units, p = call.principal, call.units, store.prefix()
    kind = answer[0]
    if kind in _REJECTED:
        metrics.rejected(_REJECTED[kind])
    if kind == "rate":
        _, limit, remaining, reset_ms, retry_ms, which = answer
        headers = _rate_headers(limit, remaining, reset_ms)
        _headers.set(headers)
        who = _BUCKET_NAMES.get(which.removeprefix(p + "b:").split(":", 1)[0], "caller")
        if int(retry_ms) < 0:
            raise LimitExceeded(
                "rate_limit_exceeded",
                f"Rate limit of this {who}: {units} requests at once exceed its burst of {limit}.",
                max(1, math.ceil(int(reset_ms) / 1000)),
                headers,
            )
        raise LimitExceeded(
            "rate_limit_exceeded",
            f"Rate limit of this {who} exceeded (burst {limit}); retry in {math.ceil(int(retry_ms) / 1000)} s.",
            max(1, math.ceil(int(retry_ms) / 1000)),
            headers,
        )
    if kind == "inflight":
        raise LimitExceeded(
            "too_many_concurrent_requests",
            f"This credential already has {answer[1]} requests in flight (its limit); retry when one ends.",
            1,
            rate_limit_headers(),
        )
    if kind == "quota":
        _, name, period, what, limit, used, window_end, fail_open = answer
        _fail_open[principal.organization_id] = fail_open == "1"
        retry = max(1, math.ceil(float(window_end) - time.time()))
        resets = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(window_end)))
        raise LimitExceeded(
            "quota_exceeded",
            f"The {_ADJECTIVE.get(period, period)} {what} quota of {name} is used up ({used} of {limit} used "
            f"or held by requests in flight; this request needs more); it resets at {resets}.",
            retry,
            rate_limit_headers(),
        )
    _, limit, remaining, reset_ms, fail_open, token_limited = answer
    _fail_open[principal.organization_id] = fail_open == "1"
    rl = RateLimit(_rate_headers(limit, remaining, reset_ms)) if int(limit) >= 0 else NO_LIMIT
    _headers.set(rl.headers)
    counters = tuple(store.scope_keys(call.scopes, call.windows))  # per scope: this month's (and today's) counters
    capped = token_limited == "1"
    reservations = [
        Reservation(
            principal.user_id,
            principal.location_pk,
            principal.organization_id,
            call.action,
            1,
            amount,
            it.ref,
            ref,
            counters,
            call.flight if i == 0 else None,
            (it.max_tokens or settings.MEDAI_QUOTA_DEFAULT_MAX_TOKENS) if capped else 0,
            call.windows.day,
        )
        for i, (it, ref, amount) in enumerate(zip(call.items, call.refs, call.amounts, strict=True))
    ]
    return Admitted(rl, reservations)


def _rate_headers(limit: str, remaining: str, reset_ms: str) -> dict[str, str]:
    if int(limit) < 0:
        return {}
    return {
        "X-RateLimit-Limit": limit,
        "X-RateLimit-Remaining": remaining,
        "X-RateLimit-Reset": str(max(0, math.ceil(int(reset_ms) / 1000))),
    }


def _empty(principal: Principal, action: str, item: Item | None = None) -> Reservation:
    return Reservation(
        principal.user_id, principal.location_pk, principal.organization_id, action, 1, 0, item.ref if item else ""
    )


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _store_down(principal: Principal, action: str, items: Sequence[Item], exc: Exception) -> Admitted:
    """Redis is unreachable: fail open (unmetered) or closed (503), as the organization chose."""
    fail_open = _fail_open.get(principal.organization_id)
    if fail_open is None and not _on_event_loop():  # where a query is allowed: the organization's choice
        try:
            fail_open = quotas.fail_open_of(principal.organization_id)
        except DatabaseError:  # the database is down too: the default decides
            fail_open = None
    fail_open = bool(fail_open) or settings.MEDAI_GOVERNANCE_FAIL_OPEN
    if fail_open:
        logger.warning("quota store unavailable (%s): request admitted unmetered (fail open)", type(exc).__name__)
        return Admitted(NO_LIMIT, [_empty(principal, action, it) for it in items])
    metrics.rejected("unavailable")
    logger.warning("quota store unavailable (%s: %s): request refused (fail closed)", type(exc).__name__, exc)
    raise Unavailable(
        "quota_store_unavailable",
        "Quotas and rate limits cannot be checked right now (their store is unavailable); nothing was "
        "sent to a model. Try again shortly.",
        5,
    )


# --- the two halves, for callers that need only one -------------------------------------------


def check_rate_limit(principal: Principal, *, action: str = CHAT, units: int = 1, ip: str | None = None) -> RateLimit:
    """Take ``units`` from the caller's token buckets (per API key, user and IP); LimitExceeded."""
    return admit(principal, ip=ip, units=units, action=action).rate_limit


async def check_rate_limit_async(
    principal: Principal, *, action: str = CHAT, units: int = 1, ip: str | None = None
) -> RateLimit:
    """``check_rate_limit`` on an event loop (a websocket's connect and messages): awaited."""
    return (await admit_async(principal, ip=ip, units=units, action=action)).rate_limit


def reserve(
    principal: Principal,
    *,
    action: str = CHAT,
    model: str = "",
    requests: int = 1,
    max_tokens: int | None = None,
    prompt_tokens: int = 0,
    ref: str = "",
) -> Reservation:
    """Hold ``requests`` requests of ``prompt_tokens`` plus up to ``max_tokens`` tokens each
    (None: MEDAI_QUOTA_DEFAULT_MAX_TOKENS) against the caller's quotas; LimitExceeded when they
    cannot cover it. Several requests come back as one reservation holding them all."""
    items = [Item(prompt_tokens, max_tokens, f"{ref}.{i}" if ref and requests > 1 else ref) for i in range(requests)]
    found = admit(principal, items=items, rate=False, action=action).reservations
    if len(found) == 1:
        return found[0]
    return Reservation(
        principal.user_id,
        principal.location_pk,
        principal.organization_id,
        action,
        len(found),
        sum(r.tokens for r in found),
        ref,
        "|".join(r.hold for r in found),
        found[0].keys if found else (),
    )


# --- settling -----------------------------------------------------------------------------------


def reservation_for(principal: Principal, *, action: str = CHAT, ref: str) -> Reservation:
    """The hold made at submit for ``ref`` (an async task's id), as the worker that settles it
    finds it: the hold in Redis under that id names its counters. The counters named here (the
    location's, and the organization's when the principal knows it) are charged only when there is
    no hold: none was needed at submit (no quota applied then), or Redis lost it. No query."""
    scopes = _scopes(principal)
    return Reservation(
        principal.user_id,
        principal.location_pk,
        principal.organization_id,
        action,
        1,
        0,
        ref,
        ref,
        tuple(store.scope_keys(scopes, store.windows())),
    )


def _settle_args(reservation: Reservation, prompt_tokens: int, completion_tokens: int, completed: bool) -> list[Any]:
    tokens = max(0, prompt_tokens) + max(0, completion_tokens)
    requests = reservation.requests if (completed or tokens) else 0
    flight = reservation.in_flight or ("", "")
    holds = reservation.hold.split("|") if reservation.hold else [""]
    out: list[Any] = []
    for i, hold in enumerate(holds):
        # a reservation of several holds (``reserve(requests=N)``) settles its usage on the first
        out += [hold, requests if i == 0 else 0, tokens if i == 0 else 0, *(flight if i == 0 else ("", ""))]
        out.append(reservation.day or store.windows().day)
        keys = reservation.keys if i == 0 else ()
        out += [len(keys), *keys]
    return out


def _settle_fields(entries: Sequence[tuple[Reservation, int, int, bool]]) -> tuple[int, list[Any]]:
    """SETTLE's per-hold fields for these entries, and how many holds they name (0: nothing to settle)."""
    args: list[Any] = []
    n = 0
    for reservation, prompt, completion, completed in entries:
        if not reservation.hold and reservation.in_flight is None:
            continue
        args += _settle_args(reservation, prompt, completion, completed)
        n += len(reservation.hold.split("|")) if reservation.hold else 1
    return n, args


def _settle_call(entries: Sequence[tuple[Reservation, int, int, bool]]) -> tuple[list[str], list[Any]] | None:
    """The SETTLE script's keys and arguments for these entries (None: nothing to settle)."""
    n, args = _settle_fields(entries)
    if not n:
        return None
    p = store.prefix()
    return [p + "leases"], store.pack([p, n, *args])


def settle_many(entries: Sequence[tuple[Reservation, int, int, bool]]) -> None:
    """``reconcile`` for many reservations in one round trip (a worker's finished group, a cancel).
    Never raises: a failure is logged, and the holds are released when their leases end."""
    if not enabled():
        return
    call = _settle_call(entries)
    if call is None:
        return
    try:
        store.run("SETTLE", *call)
    except Exception:  # a request that was answered stays answered
        logger.warning("could not settle quota reservation(s); their leases will release them", exc_info=True)


_pending: set[asyncio.Task[None]] = set()  # settles sent from an event loop, not yet answered


class _Settles:
    """Settles queued on one event loop: sent by the next admission of that loop (in its round
    trip, ``SETTLE_ADMIT``) or, if none comes first, by the task queued with the first of them."""

    __slots__ = ("n", "fields")

    def __init__(self) -> None:
        self.n = 0  # holds named
        self.fields: list[Any] = []  # SETTLE's per-hold fields


_queued: dict[asyncio.AbstractEventLoop, _Settles] = {}


def _queue_settle(n: int, fields: list[Any]) -> None:
    """Queue a settle on the running loop. The task that sends it is created now, as a settle's
    own task was: it runs before the loop reads any client's next request, so the settle reaches
    Redis before any later admission of this process, with the others queued meanwhile (one
    round trip for them all), or inside the first such admission's own script."""
    loop = asyncio.get_running_loop()
    queued = _queued.get(loop)
    if queued is None:
        for closed in [lp for lp in _queued if lp.is_closed()]:  # a test client's loop per request
            del _queued[closed]
        queued = _queued[loop] = _Settles()
        _spawn(_send_queued(loop, queued))
    queued.n += n
    queued.fields += fields


def _take_queued() -> _Settles | None:
    """The settles queued on the running loop, for an admission to send (None: none)."""
    queued = _queued.pop(asyncio.get_running_loop(), None)
    if queued is None or not queued.n:
        return None
    taken = _Settles()
    taken.n, taken.fields = queued.n, queued.fields
    queued.n, queued.fields = 0, []  # its task finds nothing left to send
    return taken


async def _send_queued(loop: asyncio.AbstractEventLoop, queued: _Settles) -> None:
    if _queued.get(loop) is queued:
        del _queued[loop]
    if not queued.n:  # an admission took them
        return
    p = store.prefix()
    await _settle_on_loop([p + "leases"], store.pack([p, queued.n, *queued.fields]))


async def _settle_on_loop(keys: list[str], args: list[Any]) -> None:
    try:
        await store.async_script("SETTLE")(keys=keys, args=args)
    except Exception:  # a request that was answered stays answered
        logger.warning("could not settle a quota reservation; its lease will release it", exc_info=True)


def wait_settled(timeout: float = 5.0) -> bool:
    """Whether every settle sent from an event loop was answered within ``timeout`` (tests)."""
    deadline = time.monotonic() + timeout
    while _pending and time.monotonic() < deadline:
        time.sleep(0.005)
    return not _pending


def reconcile(reservation: Reservation, *, prompt_tokens: int, completion_tokens: int, completed: bool) -> None:
    """Replace the reservation with the real usage (``completed`` False and no tokens: nothing
    was produced, the reservation is released) and free its in-flight slot. Never raises.

    On an event loop (sync chat's answer) the settle is queued and not waited for: the answer
    leaves without a second round trip, and the settle goes with the next admission's script
    or, if none comes first, with the others queued meanwhile (``_queue_settle``). It stays in
    order: it reaches Redis before any later admission of this process."""
    entries = [(reservation, prompt_tokens, completion_tokens, completed)]
    if not enabled():
        return
    if not _on_event_loop():
        settle_many(entries)
        return
    n, fields = _settle_fields(entries)
    if n:
        _queue_settle(n, fields)


def _spawn(settle: Coroutine[Any, Any, None]) -> None:
    """Send a settle from the running loop without waiting for it (kept until answered)."""
    task = asyncio.get_running_loop().create_task(settle)
    _pending.add(task)
    task.add_done_callback(_pending.discard)


def release_refs(refs: Sequence[str], *, action: str = CHAT) -> None:
    """Release the holds of async tasks that will never run (cancelled, expired): no usage."""
    entries = [(Reservation(0, 0, None, action, 1, 0, ref, ref), 0, 0, False) for ref in refs if ref]
    settle_many(entries)


def flush() -> None:
    """Forget every counter, bucket, hold and the limits' mirror (tests, benches)."""
    store.flush()
    _fail_open.clear()
