"""Quotas and per-key limits as IT edits them (admin, ``manage.py quota``), and their mirror in Redis.

The database rows (``Quota``, ``ApiKeyLimit``, ``Organization.quota_fail_open``) are the truth;
the request path never reads them. After every change (a signal, on commit) ``publish`` writes
them all into one Redis hash in one MULTI, which the admission script reads: a change takes effect
in every process at once, and the request path stays one round trip with no query. When Redis
lost the hash (a restart of the embedded one), the script answers "reload" and the first request
publishes it again (apps/accounts/governance/__init__.py).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import close_old_connections, transaction
from django.db.models.signals import post_delete, post_save

from apps.accounts.governance import store
from apps.accounts.models import ApiKeyLimit, Location, Organization, Quota

logger = logging.getLogger("medai.governance")
T = TypeVar("T")
NONE = -1  # "no limit" in the mirror


class QuotaError(ValueError):
    """A quota command or form named something that does not exist, or nothing to limit."""


# --- the mirror ---------------------------------------------------------------------------------


def _limits_of(rows: list[Quota]) -> dict[str, str]:
    by_scope: dict[str, tuple[list[int], str]] = {}
    for q in rows:
        scope = f"l:{q.location_id}" if q.location_id is not None else f"o:{q.organization_id}"
        name = q.scope_name
        limits, _ = by_scope.setdefault(scope, ([NONE, NONE, NONE, NONE], name))
        at = 0 if q.period == Quota.Period.DAY else 2
        limits[at] = NONE if q.max_requests is None else q.max_requests
        limits[at + 1] = NONE if q.max_tokens is None else q.max_tokens
    return {scope: ",".join(map(str, limits)) + "|" + name for scope, (limits, name) in by_scope.items()}


def _number(value: float | int | None) -> str:
    return str(NONE) if value is None else repr(float(value)) if isinstance(value, float) else str(value)


def mirror() -> dict[str, str]:
    """What the Redis hash holds: every quota, fail-open organization and key override."""
    rows = list(Quota.objects.select_related("organization", "location"))
    fields = {"_v": "1", **_limits_of(rows)}
    for org_id in Organization.objects.filter(quota_fail_open=True).values_list("pk", flat=True):
        fields[f"fo:{org_id}"] = "1"
    for lim in ApiKeyLimit.objects.all():
        fields[f"k:{lim.api_key_id}"] = ",".join((_number(lim.rate), _number(lim.burst), _number(lim.max_in_flight)))
    return fields


def publish() -> None:
    """Write the mirror to Redis, replacing the old one atomically (queries: call where allowed)."""
    fields = mirror()
    key = store.prefix() + "lim"
    pipe = store.client().pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, mapping=dict(fields.items()))  # a fresh dict: redis-py types its Mapping as invariant
    pipe.execute()


def publish_from_anywhere() -> None:
    """``publish``, also from an event loop's thread (where Django refuses queries): then in a
    short-lived thread, waited for. Only after Redis lost the mirror, so once per Redis restart."""
    _off_loop(publish)


async def publish_async() -> None:
    """``publish`` awaited from an event loop: in a worker thread (queries and the blocking client
    belong there), the loop free meanwhile. Only after Redis lost the mirror."""
    from asgiref.sync import sync_to_async

    await sync_to_async(_in_thread(publish), thread_sensitive=False)()


def _in_thread(func: Callable[[], T]) -> Callable[[], T]:
    def unit() -> T:
        close_old_connections()
        try:
            return func()
        finally:
            close_old_connections()

    return unit


def _off_loop(func: Callable[[], T]) -> T:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return func()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(_in_thread(func)).result(timeout=30)


def _changed(**kwargs: Any) -> None:
    transaction.on_commit(_publish_quietly)


def _publish_quietly() -> None:
    try:
        publish()
    except Exception:  # the row is saved; the next "reload" or change publishes it
        logger.warning("could not publish quota changes to Redis", exc_info=True)


def connect_signals() -> None:
    """Republish after any change of a quota, a key's limits or an organization (apps.py)."""
    for model in (Quota, ApiKeyLimit, Organization):
        post_save.connect(_changed, sender=model, dispatch_uid=f"governance-{model.__name__}-save")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"governance-{model.__name__}-delete")


# --- the verbs IT uses ---------------------------------------------------------------------------


@dataclass(frozen=True)
class QuotaView:
    """A quota with what its scope used (and holds) in the current window."""

    quota: Quota
    used_requests: int
    used_tokens: int

    @property
    def scope(self) -> str:
        return self.quota.scope_name


def _scope(location: str | None, organization: str | None) -> dict[str, Any]:
    if bool(location) == bool(organization):
        raise QuotaError("Name exactly one of --location CODE or --organization NAME.")
    if location:
        loc = Location.objects.filter(code=location).first()
        if loc is None:
            raise QuotaError(f"No location with code '{location}'.")
        return {"location": loc, "organization": None}
    org = Organization.objects.filter(name=organization).first()
    if org is None:
        raise QuotaError(f"No organization named '{organization}'.")
    return {"organization": org, "location": None}


def set_quota(
    *,
    period: str,
    location: str | None = None,
    organization: str | None = None,
    requests: int | None = None,
    tokens: int | None = None,
) -> Quota:
    """Create or replace the quota of a location or organization for a period (day, month)."""
    if period not in Quota.Period.values:
        raise QuotaError(f"period must be one of {', '.join(Quota.Period.values)}, got '{period}'.")
    if requests is None and tokens is None:
        raise QuotaError("Give --requests N and/or --tokens T (or use 'quota clear').")
    for name, value in (("requests", requests), ("tokens", tokens)):
        if value is not None and value < 0:
            raise QuotaError(f"--{name} must be >= 0, got {value}.")
    scope = _scope(location, organization)
    with transaction.atomic():
        quota, _ = Quota.objects.update_or_create(
            **scope, period=period, defaults={"max_requests": requests, "max_tokens": tokens}
        )
    return quota


def clear_quota(*, location: str | None = None, organization: str | None = None, period: str | None = None) -> int:
    """Remove a scope's quotas (one period, or both): how many were removed."""
    scope = _scope(location, organization)
    qs = Quota.objects.filter(**scope)
    if period:
        if period not in Quota.Period.values:
            raise QuotaError(f"period must be one of {', '.join(Quota.Period.values)}, got '{period}'.")
        qs = qs.filter(period=period)
    with transaction.atomic():
        removed, _ = qs.delete()
    return removed


def current_usage(quota: Quota) -> tuple[int, int]:
    """(requests, tokens) the quota's scope used or holds in its current window (Redis)."""
    scope = f"l:{quota.location_id}" if quota.location_id is not None else f"o:{quota.organization_id}"
    used = store.usage(scope)[quota.period]
    return used["requests"], used["tokens"]


def list_quotas(location: str | None = None, organization: str | None = None) -> list[QuotaView]:
    """Every quota (or one scope's), with its current use."""
    qs = Quota.objects.select_related("organization", "location").order_by("organization__name", "location__code")
    if location or organization:
        scope = _scope(location, organization)
        qs = qs.filter(**{k: v for k, v in scope.items() if v is not None})
    views = []
    for q in qs:
        requests, tokens = current_usage(q)
        views.append(QuotaView(q, requests, tokens))
    return views


def fail_open_of(organization_id: int | None) -> bool | None:
    """Whether an organization fails open, from the database (None: no such organization)."""
    if organization_id is None:
        return None
    row = Organization.objects.filter(pk=organization_id).values_list("quota_fail_open", flat=True).first()
    return bool(row) if row is not None else None
