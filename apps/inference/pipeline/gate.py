"""The steps before any backend is chosen: authenticate → authorize → validate → rate limit → quota
reserve → route. Each maps its owner's answer (accounts, validation, the router) to an ``ApiError``.

Speed: sync chat runs them on the event loop from this process's caches (credentials, the model
registry); a step whose cache misses (``NeedsDatabase``, ``SnapshotStale``) runs again, alone, in a
worker thread, where it may query. The others make no query, so no step runs twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation

from apps.accounts import governance
from apps.accounts import services as accounts
from apps.accounts.services import AuthError, Forbidden, NeedsDatabase, Principal
from apps.inference import router, validation
from apps.inference.errors import ApiError
from apps.inference.pipeline import steps
from apps.inference.responses import request as responses_request
from apps.inference.services import db_unit

logger = logging.getLogger("medai.inference")
T = TypeVar("T")
run_sync = sync_to_async(thread_sensitive=False)


async def _cached_else_thread(func: Callable[..., T], *args: Any) -> T:
    """``func(*args, cached_only=True)`` on the loop; in a worker thread (where it may query)
    when a cache cannot answer."""
    try:
        return func(*args, cached_only=True)
    except (NeedsDatabase, router.SnapshotStale):
        pass
    except SynchronousOnlyOperation:  # a query slipped through (a lazy relation): the thread answers
        logger.warning("%s needed a query on the event loop; answered from a thread", func.__name__, exc_info=True)
    return await run_sync(db_unit(func))(*args)


# --- authenticate: once per HTTP request or websocket connection ---------------------------------


def _authenticate(header: str | None, *, cached_only: bool = False) -> Principal:
    try:
        return accounts.authenticate_header(header, cached_only=cached_only)
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None


def authenticate_sync(header: str | None) -> Principal:
    """The authenticate step: an ``Authorization`` header → the caller, or ApiError 401."""
    steps.enter(steps.AUTHENTICATE)
    return _authenticate(header)


async def authenticate(header: str | None) -> Principal:
    """The authenticate step on the event loop: from the caches, else in a thread."""
    steps.enter(steps.AUTHENTICATE)
    return await _cached_else_thread(_authenticate, header)


def authenticated(principal: Principal) -> Principal:
    """The authenticate step of an entry point whose caller DRF already authenticated (through
    ``BearerAuthentication``, the same accounts function, once per request): ``request.auth``."""
    steps.enter(steps.AUTHENTICATE)
    return principal


# --- authorize, validate -----------------------------------------------------------------------


def authorize(principal: Principal, scope: str) -> None:
    """The authorize step: the scope this action needs, or ApiError 403."""
    steps.enter(steps.AUTHORIZE)
    try:
        accounts.authorize(principal, scope)
    except Forbidden as exc:
        raise ApiError(403, exc.code, exc.message) from None


def validate_chat(body: bytes) -> dict[str, Any]:
    """The validate step of a chat body: the validated request, or ApiError 400 naming the field."""
    steps.enter(steps.VALIDATE)
    return validation.validate_chat(validation.parse_json_object(body))


def validate_completion(body: bytes) -> dict[str, Any]:
    """The validate step of a (legacy) completions body: the validated request (``prompt`` a
    list), or ApiError 400 naming the field."""
    steps.enter(steps.VALIDATE)
    return validation.validate_completion(validation.parse_json_object(body))


def validate_response(body: bytes) -> Any:
    """The validate step of a Responses body (CreateResponse): its shapes checked
    (``responses.request.parse``), or ApiError 400 naming the field. The chat request it becomes
    is validated by ``responses.request.chat_request`` once its conversation is known."""
    steps.enter(steps.VALIDATE)
    return responses_request.parse(validation.parse_json_object(body))


def parse_body(body: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object (ApiError 400 ``invalid_json``)."""
    return validation.parse_json_object(body)


def validate_task(item: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """The validate step of one async task request (a parsed JSON object, validated once):
    (validated chat request, deadline_s), or ApiError 400."""
    steps.enter(steps.VALIDATE)
    return validation.validate_task(item)


def validate_batch(items: Any) -> list[tuple[dict[str, Any], float | None]]:
    """The validate step of an async batch's ``requests``: each item validated once; a 400 names
    the item (``requests[i].field``), a 413 a batch over MEDAI_BATCH_MAX."""
    steps.enter(steps.VALIDATE)
    return validation.validate_batch(items)


# --- rate limit, quota reserve (apps/accounts/governance/) ---------------------------------------


def _limited(exc: governance.LimitExceeded) -> ApiError:
    return ApiError(exc.status, exc.code, exc.message, headers={**exc.headers, "Retry-After": str(exc.retry_after)})


def _items(reqs: list[dict[str, Any]], refs: list[str] | None) -> list[governance.Item]:
    steps.enter(steps.RATE_LIMIT)
    steps.enter(steps.QUOTA_RESERVE)
    refs = refs or [""] * len(reqs)
    return [governance.item_of(req, ref) for req, ref in zip(reqs, refs, strict=True)]


def limit_and_reserve(
    principal: Principal,
    reqs: list[dict[str, Any]],
    *,
    ip: str | None = None,
    refs: list[str] | None = None,
    in_flight: bool = False,
) -> tuple[governance.RateLimit, list[governance.Reservation]]:
    """The rate limit and quota reserve steps in one Redis round trip (governance.admit): one
    unit per request from the caller's buckets, a hold per validated request (``refs``: the ids
    the holds are kept under, an async task's id), an in-flight slot for a sync request.
    ApiError 429 (rate, in-flight or quota, with ``Retry-After``) or 503 (store down, fail closed).
    Blocking: where a thread may wait (the async API's submit, in its database thread)."""
    items = _items(reqs, refs)
    try:
        admitted = governance.admit(principal, items=items, ip=ip, units=len(reqs), in_flight=in_flight)
    except governance.LimitExceeded as exc:
        raise _limited(exc) from None
    return admitted.rate_limit, admitted.reservations


async def limit_and_reserve_async(
    principal: Principal,
    reqs: list[dict[str, Any]],
    *,
    ip: str | None = None,
    refs: list[str] | None = None,
    in_flight: bool = False,
) -> tuple[governance.RateLimit, list[governance.Reservation]]:
    """``limit_and_reserve`` on the event loop (sync chat, a single async submit): the round trip
    awaited, not blocking."""
    items = _items(reqs, refs)
    try:
        admitted = await governance.admit_async(principal, items=items, ip=ip, units=len(reqs), in_flight=in_flight)
    except governance.LimitExceeded as exc:
        raise _limited(exc) from None
    return admitted.rate_limit, admitted.reservations


def rate_limit(principal: Principal, *, units: int = 1, ip: str | None = None) -> governance.RateLimit:
    """The rate limit step alone, once per HTTP request (``units``: the items of a batch); ApiError 429."""
    steps.enter(steps.RATE_LIMIT)
    try:
        return governance.check_rate_limit(principal, action=governance.CHAT, units=units, ip=ip)
    except governance.LimitExceeded as exc:
        raise _limited(exc) from None


def release(reservation: governance.Reservation) -> None:
    """Settle a reservation whose request never reached a model (refused after it was made)."""
    governance.reconcile(reservation, prompt_tokens=0, completion_tokens=0, completed=False)


def release_all(reservations: list[governance.Reservation]) -> None:
    """``release`` for many, in one round trip (an async submission that was refused or reused)."""
    governance.settle_many([(r, 0, 0, False) for r in reservations])


# --- route --------------------------------------------------------------------------------------


def _route(model: str | None, agent_type: str | None, *, cached_only: bool = False) -> router.Route:
    try:
        return router.resolve(model or None, agent_type or None, cached_only=cached_only)
    except router.RoutingError as exc:
        raise ApiError(exc.status_code, exc.code, exc.message, exc.param) from None


def route_sync(model: str | None, agent_type: str | None) -> router.Route:
    """The route step: the model or agent type asked for → its ordered candidates, or ApiError
    (404 unknown, 400 ambiguous...). May query the registry."""
    steps.enter(steps.ROUTE)
    return _route(model, agent_type)


async def route(model: str | None, agent_type: str | None) -> router.Route:
    """The route step on the event loop: from the registry snapshot, else in a thread."""
    steps.enter(steps.ROUTE)
    return await _cached_else_thread(_route, model, agent_type)


def _route_capability(model: str, capability: str, *, cached_only: bool = False) -> router.Route:
    try:
        return router.resolve_capability(model, capability, cached_only=cached_only)
    except router.RoutingError as exc:
        raise ApiError(exc.status_code, exc.code, exc.message, exc.param) from None


def route_capability_sync(model: str, capability: str) -> router.Route:
    """The route step of an embeddings or rerank request: the candidates that declare it."""
    steps.enter(steps.ROUTE)
    return _route_capability(model, capability)


async def route_capability(model: str, capability: str) -> router.Route:
    """``route_capability_sync`` on the event loop: from the registry snapshot, else in a thread."""
    steps.enter(steps.ROUTE)
    return await _cached_else_thread(_route_capability, model, capability)
