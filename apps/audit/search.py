"""Searching the audit trail (``GET /v1/audit/events``): query parameters → filters → one page.

Pagination is a cursor on ``seq`` (OpenAI's list shape: ``data``, ``first_id``, ``last_id``,
``has_more``; pass ``last_id`` back as ``after``), newest first by default: an offset would make
each page cost more than the last on a table that only grows, and would shift under appends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils.dateparse import parse_date, parse_datetime

from apps.audit.models import AuditEvent

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
FIELDS = AuditEvent.RECORD_FIELDS


class FilterError(ValueError):
    """A query parameter that cannot be used: answers 400 naming it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param, self.message = param, message


@dataclass(frozen=True)
class Page:
    events: list[AuditEvent]
    has_more: bool


def _when(param: str, raw: str, *, end: bool = False) -> datetime:
    value = parse_datetime(raw)
    if value is None:
        day = parse_date(raw)
        if day is None:
            raise FilterError(param, f"{param} must be an ISO 8601 date or date-time (e.g. 2026-01-31T08:00:00Z).")
        value = (
            datetime(day.year, day.month, day.day, 23, 59, 59, 999999)
            if end
            else datetime(day.year, day.month, day.day)
        )
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _int(param: str, raw: str, *, minimum: int = 0) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise FilterError(param, f"{param} must be an integer.") from None
    if value < minimum:
        raise FilterError(param, f"{param} must be at least {minimum}.")
    return value


def _codes(param: str, raw: str) -> list[str]:
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if not values or any(len(v) > 64 for v in values):
        raise FilterError(param, f"{param} must be one or more comma-separated values of at most 64 characters.")
    return values


KNOWN = {
    "user",
    "user_id",
    "api_key_id",
    "location",
    "action",
    "outcome",
    "since",
    "until",
    "correlation_id",
    "object_type",
    "object_id",
    "purpose_of_use",
    "limit",
    "after",
    "order",
}


def search(events: QuerySet[AuditEvent], params: Any) -> Page:
    """One page of ``events`` (already restricted to what the caller may see) filtered by the query
    parameters ``params`` (a QueryDict or a dict); FilterError names a parameter it cannot use."""
    unknown = sorted(set(params) - KNOWN)
    if unknown:
        raise FilterError(unknown[0], f"unknown parameter {unknown[0]!r}; use {', '.join(sorted(KNOWN))}.")
    qs = events
    get = params.get
    if get("user"):
        qs = qs.filter(actor__in=_codes("user", get("user")))
    if get("user_id"):
        qs = qs.filter(actor_id=_int("user_id", get("user_id")))
    if get("api_key_id"):
        qs = qs.filter(api_key_id=_int("api_key_id", get("api_key_id")))
    if get("location"):
        qs = qs.filter(location__in=_codes("location", get("location")))
    if get("action"):
        actions = _codes("action", get("action"))
        exact = [a for a in actions if not a.endswith(".*")]
        prefixes = [a[:-1] for a in actions if a.endswith(".*")]  # "auth.*": every auth event
        cond = Q(action__in=exact) if exact else Q()
        for prefix in prefixes:
            cond |= Q(action__startswith=prefix)
        qs = qs.filter(cond)
    if get("outcome"):
        outcomes = _codes("outcome", get("outcome"))
        bad = [o for o in outcomes if o not in AuditEvent.Outcome.values]
        if bad:
            raise FilterError("outcome", f"outcome must be one of {', '.join(AuditEvent.Outcome.values)}.")
        qs = qs.filter(outcome__in=outcomes)
    if get("since"):
        qs = qs.filter(created_at__gte=_when("since", get("since")))
    if get("until"):
        qs = qs.filter(created_at__lte=_when("until", get("until"), end=True))
    for name in ("correlation_id", "object_type", "object_id", "purpose_of_use"):
        if get(name):
            qs = qs.filter(**{name: get(name)[:64]})
    order = get("order") or "desc"
    if order not in ("asc", "desc"):
        raise FilterError("order", "order must be asc or desc.")
    limit = _int("limit", get("limit"), minimum=1) if get("limit") else DEFAULT_LIMIT
    if limit > MAX_LIMIT:
        raise FilterError("limit", f"limit must be at most {MAX_LIMIT}.")
    if get("after"):
        after = _int("after", get("after"))
        qs = qs.filter(seq__gt=after) if order == "asc" else qs.filter(seq__lt=after)
    rows = list(qs.order_by("seq" if order == "asc" else "-seq").only(*FIELDS)[: limit + 1])
    return Page(rows[:limit], len(rows) > limit)
