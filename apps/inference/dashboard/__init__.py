"""The admin dashboard: what an IT lead reads at a glance on the admin's index page.

``page(user)`` is the whole page's figures with the geometry of its charts (``templates/admin/
index.html`` only draws them); ``live(scope)`` the part that changes by the second (queue, GPUs),
which the page's socket (``/ws/admin/dashboard/``, ``consumer.py``) sends again every few seconds
and on each GPU sample. The figures themselves and who sees which are in ``figures.py``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from apps.accounts.models import User
from apps.inference.dashboard import charts
from apps.inference.dashboard.figures import (
    Scope,
    gpu_history,
    gpu_now,
    models,
    queue,
    quota_use,
    timings,
    traffic,
)

__all__ = ["Scope", "live", "live_gpu", "page"]


def _queue_view(q: dict[str, Any]) -> dict[str, Any]:
    top = charts.nice_max(max((d["queued"] for d in q["depth"]), default=0))
    return {**q, "depth": [{**d, "bar": charts.percent(d["queued"] / top)} for d in q["depth"]], "bar_max": top}


def _gpu_view(g: dict[str, Any], history: dict[int, dict[str, list[float]]] | None = None) -> dict[str, Any]:
    gpus = []
    for gpu in g["gpus"]:
        series = (history or {}).get(gpu["index"], {})
        gpus.append(
            {
                **gpu,
                "bar": charts.percent((gpu["used_percent"] or 0) / 100),
                "memory_trend": charts.spark(series.get("memory_percent", []), floor=0),
                "temperature_trend": charts.spark(series.get("temperature_c", []), floor=None),
            }
        )
    return {**g, "gpus": gpus}


def live_gpu() -> dict[str, Any]:
    """The GPUs now, as the page shows them (JSON-ready): from the shared state, no query."""
    return _gpu_view(gpu_now())


def live(scope: Scope, now: datetime | None = None) -> dict[str, Any]:
    """The figures the page refreshes live: the queue and the GPUs (JSON-ready)."""
    now = now or timezone.now()
    return {"at": now.isoformat(), "queue": _queue_view(queue(scope, now)), "gpu": live_gpu()}


def page(user: User, now: datetime | None = None) -> dict[str, Any]:
    """Everything the dashboard shows to ``user`` (staff), charts laid out."""
    now = now or timezone.now()
    scope = Scope.of(user)
    t = traffic(scope, now)
    hours = [f"{h['start']:%H:%M}–{h['start'] + timedelta(hours=1):%H:%M}" for h in t["hourly"]]
    t["requests_chart"] = charts.columns([h["requests"] for h in t["hourly"]], hours)
    t["tokens_chart"] = charts.columns([h["tokens"] for h in t["hourly"]], hours)
    t["first_hour"], t["last_hour"] = t["hourly"][0]["start"], t["hourly"][-1]["start"]
    top = max((r["tokens_day"] for r in t["by_location"]), default=0)
    for row in t["by_location"]:
        row["bar"] = charts.percent(row["tokens_day"] / top if top else 0)
    top = max((r["requests_day"] for r in t["by_model"]), default=0)
    for row in t["by_model"]:
        row["bar"] = charts.percent(row["requests_day"] / top if top else 0)
    model_rows = models(scope, now)
    for row in model_rows:
        row["trend"] = charts.spark(row["trend_p95_ms"], floor=0)
    quota = quota_use(scope)
    for row in quota["rows"]:
        row["requests_bar"] = charts.percent(row["requests_share"])
        row["tokens_bar"] = charts.percent(row["tokens_share"])
    return {
        "now": now,
        "scope": scope,
        "traffic": t,
        "queue": _queue_view(queue(scope, now)),
        "timings": timings(scope, now),
        "models": model_rows,
        "gpu": _gpu_view(gpu_now(), gpu_history(now)),
        "quotas": quota,
    }
