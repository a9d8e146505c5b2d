"""Usage for ``GET /v1/usage`` and admin: requests and tokens per organization, location, user and
model over a period, from the durable record every inference leaves (``InferenceTask``: one row
per sync request and per async task, with its real token counts), plus the live quota counters.

Durable totals come from the records rather than a second ledger: the record is already written
once per inference, in the same transaction as its audit event (sync: by the background writer;
async: with the outcome), so totals are exact and cost the request path nothing; the price is an
aggregate query per read (on the (location, created_at) rows of the period). A request counts as
the quota counts it: completed, or any tokens used.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, Q, Sum
from redis.exceptions import RedisError

from apps.accounts.governance import quotas
from apps.accounts.models import Quota
from apps.accounts.services import Principal
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask

GROUPS = {
    "organization": "location__organization__name",
    "location": "location__code",
    "user": "user__username",
    "model": "model_name",
}
PERIODS = ("day", "month")


def _date(value: str, field: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "invalid_value", f"{field} must be a date (YYYY-MM-DD), got '{value}'.", field) from None


def period_bounds(period: str | None, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """[start, end) of the period asked for: ``start``/``end`` dates (end exclusive, default
    tomorrow), else the current ``period`` (day or month, default month) in TIME_ZONE."""
    tz = ZoneInfo(settings.TIME_ZONE)
    today = datetime.now(tz).date()
    if start or end:
        first = _date(start, "start") if start else today.replace(day=1)
        last = _date(end, "end") if end else today + timedelta(days=1)
        if last <= first:
            raise ApiError(400, "invalid_value", "end must be after start.", "end")
    else:
        period = period or "month"
        if period not in PERIODS:
            raise ApiError(
                400, "invalid_value", f"period must be one of {', '.join(PERIODS)}, got '{period}'.", "period"
            )
        first = today if period == "day" else today.replace(day=1)
        last = first + timedelta(days=1) if period == "day" else (first + timedelta(days=32)).replace(day=1)
    return datetime.combine(first, time(), tz), datetime.combine(last, time(), tz)


def parse_group_by(raw: str | None) -> list[str]:
    groups = [g.strip() for g in (raw or ",".join(GROUPS)).split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ApiError(
            400, "invalid_value", f"group_by takes {', '.join(GROUPS)} (comma-separated), got '{raw}'.", "group_by"
        )
    return groups


def _quotas_of(principal: Principal) -> list[dict[str, Any]]:
    """The quotas that apply to the caller (their location's and organization's), with their use."""
    q = Q(location_id=principal.location_pk)
    if principal.organization_id is not None:
        q |= Q(organization_id=principal.organization_id)
    out = []
    for quota in Quota.objects.filter(q).select_related("organization", "location").order_by("period"):
        try:
            used: tuple[int | None, int | None] = quotas.current_usage(quota)
        except RedisError:
            used = (None, None)
        out.append(
            {
                "scope": quota.scope_name,
                "period": quota.period,
                "max_requests": quota.max_requests,
                "max_tokens": quota.max_tokens,
                "used_requests": used[0],
                "used_tokens": used[1],
            }
        )
    return out


def usage_of(
    principal: Principal,
    *,
    period: str | None = None,
    start: str | None = None,
    end: str | None = None,
    group_by: str | None = None,
) -> dict[str, Any]:
    """The usage the caller may see (``InferenceTask.objects.usage_visible_to``), grouped."""
    first, last = period_bounds(period, start, end)
    groups = parse_group_by(group_by)
    rows = (
        InferenceTask.objects.usage_visible_to(principal)
        .filter(created_at__gte=first, created_at__lt=last)
        .filter(Q(status=InferenceTask.Status.COMPLETED) | Q(prompt_tokens__gt=0) | Q(completion_tokens__gt=0))
        .values(*(GROUPS[g] for g in groups))
        .annotate(requests=Count("id"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"))
        .order_by(*(GROUPS[g] for g in groups))
    )
    data = []
    totals = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for row in rows:
        item = {g: row[GROUPS[g]] for g in groups}
        prompt, completion = row["prompt_tokens"] or 0, row["completion_tokens"] or 0
        counts = {
            "requests": row["requests"],
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        data.append({**item, **counts})
        for k, v in counts.items():
            totals[k] += v
    own = principal.role not in ("admin", "auditor") or principal.organization_id is None
    return {
        "object": "usage",
        "scope": "own" if own else "organization",
        "start": first.isoformat(),
        "end": last.isoformat(),
        "group_by": groups,
        "data": data,
        "totals": totals,
        "quotas": _quotas_of(principal),
    }
