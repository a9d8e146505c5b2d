"""The pipeline's admit and dispatch steps: one backend call with admission, retries, the circuit
breaker and failover. Admission is apps.gpu's (GPU policy, concurrency slots, a bounded
priority-ordered wait); the call, its retries and failover are inference's (moved here from
apps/gpu/resilience.py so that gpu never imports inference's backends).

    choose candidates (policy, health, circuits, latency)  →  take a concurrency slot, or wait in
    the model's line for one (priority-ordered, bounded in time and length: ``slots``)  →  call
    →  on a backend failure: count it on the circuit, fail over to the next candidate; when every
    candidate has failed, retry the ones that failed retryably (connect errors, 502/503/504) up to
    ``MEDAI_BACKEND_RETRIES`` times with exponential backoff and jitter.

A failure the request caused (``BackendRejected``: unsupported input, too long, malformed; see
``apps.inference.backends.classify``) is that caller's answer: it is not counted on the circuit,
not retried, not sent to another model, and marks nothing down.

The call must be one that no token has reached the client from yet (a whole non-streamed
completion, or the opening of a stream): after that nothing is retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from django.conf import settings

from apps.gpu import circuit, policy, shared, slots
from apps.gpu.metrics import record_attempt
from apps.inference.backends import BackendFailure, BackendRejected

logger = logging.getLogger("medai.gpu")

T = TypeVar("T")
RETRYABLE_STATUS = {502, 503, 504}


class NoBackend(Exception):
    """No candidate could serve. ``all_failed``: every one was tried and failed."""

    def __init__(self, status_code: int, code: str, message: str, retry_after: int, all_failed: bool = False) -> None:
        super().__init__(message)
        self.status_code, self.code, self.message = status_code, code, message
        self.retry_after, self.all_failed = retry_after, all_failed


def is_retryable(exc: Any) -> bool:
    return bool(getattr(exc, "connect_failed", False)) or getattr(exc, "status_code", None) in RETRYABLE_STATUS


def backoff(retry: int) -> float:
    """Exponential backoff with jitter: base × 2^(retry-1), ×0.5..1.5."""
    base = settings.MEDAI_RETRY_BACKOFF_SECONDS * 2 ** (retry - 1)
    return base * (0.5 + random.random())


def _busy(choice: policy.Choice, ids: list[int], limit: int, key: slots.Key, why: str) -> NoBackend:
    if limit == 0:
        return NoBackend(
            503,
            "gpu_overloaded",
            f"GPU policy holds new work (pressure {choice.policy.level}, "
            f"thermal {choice.policy.thermal}); retry later.",
            max(1, int(choice.policy.wait_seconds)),
        )
    retry = slots.retry_after(ids, slots.ahead_of(ids, key), limit)
    return NoBackend(
        429,
        "model_busy",
        f"Every allowed model is at its concurrency limit ({limit} at pressure "
        f"{choice.policy.level}) and {why}; retry in about {retry} s.",
        retry,
    )


async def admit(
    choice: policy.Choice, pool: Sequence[Any], priority: int, key: slots.Key, deadline: float
) -> tuple[Any, slots.Lease] | None:
    """The admit step: a concurrency slot on one of ``pool`` (in its order) that the GPU policy's
    limit for ``priority`` and the circuit breaker allow, else a place in the models' line until
    one frees (or ``deadline``). Returns (endpoint, lease); None when it is time to look again
    (policy, other processes' slots); raises NoBackend 429/503 when the wait ran out or the line
    is full."""
    limit = choice.policy.limit_for(priority)
    for ep in pool:
        lease = slots.try_acquire(ep.id, limit, key=key)
        if lease is None:
            continue
        if circuit.allow(ep.id):  # a half-open circuit lets one trial through
            return ep, lease
        lease.release()
    ids = [ep.id for ep in pool]
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _busy(choice, ids, limit, key, f"this request waited {choice.policy.wait_seconds:g} s")
    try:
        lease = await slots.wait_for_slot(ids, limit=limit, key=key, timeout=min(remaining, slots.RECHECK_SECONDS))
    except slots.LineFull:
        raise _busy(choice, ids, limit, key, f"{slots.queue_max()} requests already wait for it") from None
    if lease is None:
        return None
    endpoint = next((ep for ep in pool if ep.id == lease.endpoint_id), None)
    if endpoint is None or not circuit.allow(lease.endpoint_id):
        lease.release()
        return None
    return endpoint, lease


async def call_with_failover(
    candidates: Sequence[Any],
    call: Callable[[Any], Awaitable[T]],
    *,
    priority: int = 1,
    location: int | None = None,
    keep_first: bool = False,
    on_attempt: Callable[[Any, str], None] | None = None,
    on_admit: Callable[[], None] | None = None,
) -> tuple[Any, T, slots.Lease]:
    """Run ``call(endpoint)`` on the best candidate that can serve; returns (endpoint, result, lease).

    ``location`` (the caller's) takes its turn among other locations' requests of its priority in
    the models' lines (``slots.new_key``). ``on_admit()`` is called as each admission starts, ``on_attempt(endpoint, error)`` after each
    call ("" when it succeeded). The caller releases the lease when the work ends (at once for a completion, at the end of a
    stream). ``BackendRejected`` (the request's fault) propagates untouched. Raises NoBackend (503
    none can serve / all failed, 503 GPU policy holds new work, 429 every slot busy and the wait
    ran out or the line is full, with a Retry-After estimated from the line ahead).
    """
    started = time.monotonic()
    deadline: float | None = None
    retries = 0
    tried: set[int] = set()
    retry_ids: set[int] = set()
    failures: list[str] = []
    key = slots.new_key(priority, location)  # this request's place in every model's line
    while True:
        choice = policy.choose(candidates, priority, keep_first=keep_first)
        if deadline is None:
            deadline = started + choice.policy.wait_seconds
        pool = [ep for ep in choice.candidates if ep.id not in tried]
        if not choice.candidates:
            why = "; ".join(f"{name}: {reason}" for name, reason in choice.skipped) or "no candidates"
            if failures:
                raise NoBackend(503, "backend_unavailable", "; ".join(failures), 5, all_failed=True)
            raise NoBackend(503, "no_backend_available", f"No model server can take this request now ({why}).", 5)
        if not pool:
            if retries < settings.MEDAI_BACKEND_RETRIES and retry_ids & {ep.id for ep in choice.candidates}:
                retries += 1
                await asyncio.sleep(backoff(retries))
                tried -= retry_ids
                retry_ids = set()
                continue
            raise NoBackend(503, "backend_unavailable", "; ".join(failures), 5, all_failed=True)

        if on_admit:
            on_admit()
        admitted = await admit(choice, pool, priority, key, deadline)
        if admitted is None:
            continue  # time to look again: policy, other processes' slots, the deadline
        endpoint, lease = admitted

        t0 = time.perf_counter()
        try:
            result = await call(endpoint)
        except BackendFailure as exc:
            lease.release()
            tried.add(endpoint.id)
            if is_retryable(exc):
                retry_ids.add(endpoint.id)
            failures.append(f"{endpoint.name}: {exc.reason}")
            if on_attempt:
                on_attempt(endpoint, exc.reason)
            _safely(circuit.record_failure, endpoint.id)
            record_attempt(endpoint, ok=False)
            if "timed out" in exc.reason and not getattr(exc, "connect_failed", False):
                _safely(shared.mark_health, endpoint.id, False, exc.reason)  # a backend that times out is down
            continue
        except BackendRejected:
            lease.release()
            # The request's fault says nothing about the backend: no failure, and no success either
            # (bad requests must not keep a failing backend's circuit closed); a trial it held is
            # handed back so the next request can be the trial.
            _safely(circuit.end_trial, endpoint.id)
            record_attempt(endpoint, outcome="client_error")
            raise
        except BaseException:
            lease.release()
            raise
        elapsed_ms = (time.perf_counter() - t0) * 1000
        shared.observe_latency(endpoint.id, elapsed_ms)
        _safely(circuit.record_success, endpoint.id)
        record_attempt(endpoint, ok=True)
        if on_attempt:
            on_attempt(endpoint, "")
        return endpoint, result, lease


def _safely(func: Callable[..., Any], *args: Any) -> None:
    """Breaker bookkeeping must not turn a Redis hiccup into a failed request."""
    try:
        func(*args)
    except Exception:
        logger.warning("circuit/health bookkeeping failed", exc_info=True)
