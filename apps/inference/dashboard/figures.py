"""The figures of the admin dashboard, each from a few aggregate queries (never a row per task).

Sources: the request records (``InferenceTask``: one row per sync request and per async task, with
its tokens and timings) for traffic, queue and timings; the shared GPU state in Redis (``apps/gpu``:
the monitor's last sample, backend health, circuits) for GPU and backends; ``ModelMetric`` rows for
the models' latency trend; the quota counters in Redis for quota use.

Who sees what (``Scope``): a superuser every organization's numbers; any other staff member their
own organization's (a shared medai serves several hospitals, and one's traffic, queue or quota use
is not another's business); staff of no organization none. GPUs, backends and the models' latency
are the shared infrastructure and are shown to every staff member.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, F, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone
from redis.exceptions import RedisError

from apps.accounts.governance import quotas
from apps.accounts.models import Quota, User
from apps.gpu import circuit, shared
from apps.gpu import services as gpu_services
from apps.gpu.metrics import CLIENT_CANCEL_CODES
from apps.gpu.models import GpuSample, ModelMetric
from apps.inference.dashboard.stats import percentiles
from apps.inference.models import LIVE_STATUSES, InferenceTask, ModelEndpoint, Priority

S = InferenceTask.Status
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# Most urgent first, as an IT lead reads a queue.
PRIORITIES = sorted(Priority, key=lambda p: -p.value)
# A backend fault, as apps.gpu.metrics.counts_against_model tells one (a FAILED request that the
# client did not cancel and that was not refused for its input), as a filter for aggregates.
BACKEND_FAULT = (
    Q(status=S.FAILED) & ~Q(error_code__in=CLIENT_CANCEL_CODES) & ~Q(http_status__gte=400, http_status__lt=500)
)
TOKENS = F("prompt_tokens") + F("completion_tokens")


@dataclass(frozen=True)
class Scope:
    """Whose numbers a staff member sees: every organization's (``everything``), or one's."""

    everything: bool
    organization_id: int | None
    label: str

    @classmethod
    def of(cls, user: User) -> Scope:
        if user.is_superuser:
            return cls(True, None, "all organizations")
        if user.organization_id is None:
            return cls(False, None, "no organization")
        return cls(False, user.organization_id, user.organization.name if user.organization else "")

    def tasks(self, qs: QuerySet[InferenceTask] | None = None) -> QuerySet[InferenceTask]:
        qs = InferenceTask.objects.all() if qs is None else qs
        if self.everything:
            return qs
        if self.organization_id is None:
            return qs.none()
        return qs.filter(location__organization_id=self.organization_id)

    def quotas(self) -> QuerySet[Quota]:
        qs = Quota.objects.select_related("organization", "location", "location__organization")
        if self.everything:
            return qs
        if self.organization_id is None:
            return qs.none()
        return qs.filter(Q(organization_id=self.organization_id) | Q(location__organization_id=self.organization_id))


def _counts(hour_ago: datetime) -> dict[str, Any]:
    in_hour = Q(created_at__gte=hour_ago)
    return {
        "requests_day": Count("id"),
        "requests_hour": Count("id", filter=in_hour),
        "tokens_day": Sum(TOKENS),
        "tokens_hour": Sum(TOKENS, filter=in_hour),
        "failed_day": Count("id", filter=Q(status=S.FAILED)),
    }


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v or 0) if k.startswith(("requests_", "tokens_", "failed_")) else v for k, v in row.items()}


def traffic(scope: Scope, now: datetime) -> dict[str, Any]:
    """Requests and tokens over the last hour and the last 24 hours, in total, per location and
    per model (sync and async alike; a task counts when it was made), and per clock hour for the
    last 24 hours."""
    recent = scope.tasks().filter(created_at__gt=now - DAY, created_at__lte=now).order_by()
    counts = _counts(now - HOUR)
    location_fields = ("location__code", "location__name", "location__organization__name")
    by_location = [
        _clean(r)
        for r in recent.values(*location_fields).annotate(**counts).order_by("-requests_day", "location__code")
    ]
    by_model = [_clean(r) for r in recent.values("model_name").annotate(**counts).order_by("-requests_day")]
    first_hour = now.astimezone(timezone.get_current_timezone()).replace(minute=0, second=0, microsecond=0) - 23 * HOUR
    per_hour = {
        r["hour"].timestamp(): r
        for r in recent.filter(created_at__gte=first_hour)
        .annotate(hour=TruncHour("created_at"))
        .values("hour")
        .annotate(requests=Count("id"), tokens=Sum(TOKENS))
        .order_by("hour")
    }
    hourly = []
    for i in range(24):
        start = first_hour + i * HOUR
        row = per_hour.get(start.timestamp(), {})
        hourly.append({"start": start, "requests": row.get("requests", 0), "tokens": row.get("tokens") or 0})
    return {
        "totals": _clean(recent.aggregate(**counts)),
        "by_location": by_location,
        "by_model": by_model,
        "hourly": hourly,
    }


def queue(scope: Scope, now: datetime) -> dict[str, Any]:
    """Async work waiting (by priority, most urgent first) and running now, and the oldest wait."""
    live = scope.tasks(InferenceTask.objects.filter(mode=InferenceTask.Mode.ASYNC, status__in=LIVE_STATUSES))
    counts = {(status, prio): n for status, prio, n in live.values_list("status", "priority").annotate(n=Count("id"))}
    depth = [{"priority": p.name.lower(), "queued": counts.get((S.QUEUED, p.value), 0)} for p in PRIORITIES]
    oldest = live.filter(status=S.QUEUED).aggregate(m=Min("queued_at"))["m"]
    return {
        "depth": depth,
        "queued": sum(d["queued"] for d in depth),
        "processing": sum(n for (status, _), n in counts.items() if status == S.PROCESSING),
        "oldest_wait_s": round(max((now - oldest).total_seconds(), 0.0), 1) if oldest else None,
    }


def timings(scope: Scope, now: datetime) -> dict[str, Any]:
    """Queue wait (``queue_wait_ms``: submitted to started) and run time (``inference_ms`` of the
    completed tasks: the backend's time) of async tasks, p50 and p95, over the last hour and day."""
    tasks = scope.tasks(InferenceTask.objects.filter(mode=InferenceTask.Mode.ASYNC, created_at__gt=now - DAY))
    windows = {"hour": Q(created_at__gte=now - HOUR), "day": Q(created_at__gt=now - DAY)}
    completed = tasks.filter(status=S.COMPLETED)
    samples = tasks.aggregate(
        wait_hour=Count("id", filter=windows["hour"] & Q(queue_wait_ms__isnull=False)),
        wait_day=Count("id", filter=Q(queue_wait_ms__isnull=False)),
        run_hour=Count("id", filter=windows["hour"] & Q(status=S.COMPLETED, inference_ms__isnull=False)),
        run_day=Count("id", filter=Q(status=S.COMPLETED, inference_ms__isnull=False)),
    )
    return {
        "wait_ms": percentiles(tasks, "queue_wait_ms", windows)[None],
        "run_ms": percentiles(completed, "inference_ms", windows)[None],
        "samples": samples,
    }


def models(scope: Scope, now: datetime) -> list[dict[str, Any]]:
    """Every registered model (and any other that answered in the last hour): its requests,
    backend faults and failure rate, latency p50/p95 (``inference_ms`` of completed requests) and
    tokens per second over the last hour (of the scope's requests); its health, circuit and latency
    EMA now, and its p95 latency per minute over the last hour (ModelMetric, every organization's)."""
    hour_ago = now - HOUR
    recent = scope.tasks().filter(created_at__gte=hour_ago, created_at__lte=now).exclude(model_name="").order_by()
    done = Q(status=S.COMPLETED)
    counts = {
        r["model_name"]: r
        for r in recent.values("model_name").annotate(
            requests=Count("id"),
            failures=Count("id", filter=BACKEND_FAULT),
            completion_tokens=Sum("completion_tokens", filter=done & Q(inference_ms__gt=0)),
            busy_ms=Sum("inference_ms", filter=done & Q(inference_ms__gt=0)),
        )
    }
    latency = percentiles(
        recent.filter(done), "inference_ms", {"hour": Q(created_at__gte=hour_ago)}, group="model_name"
    )
    trend: dict[str, list[float]] = {}
    for name, p95 in (
        ModelMetric.objects.filter(bucket_start__gte=hour_ago, latency_p95_ms__isnull=False)
        .order_by("bucket_start")
        .values_list("model_name", "latency_p95_ms")
    ):
        trend.setdefault(name, []).append(float(p95 or 0))
    view = shared.view()
    endpoints: list[dict[str, Any]] = [
        dict(e) for e in ModelEndpoint.objects.order_by("rank", "name").values("pk", "name", "kind", "enabled")
    ]
    known = {e["name"] for e in endpoints}
    endpoints += [{"pk": None, "name": n, "kind": "", "enabled": None} for n in sorted(set(counts) - known)]
    rows = []
    for ep in endpoints:
        c = counts.get(ep["name"], {})
        requests, failures = c.get("requests", 0), c.get("failures", 0)
        busy_ms, tokens = c.get("busy_ms") or 0, c.get("completion_tokens") or 0
        health = view.health.get(ep["pk"], {}) if ep["pk"] is not None else {}
        state = view.circuits.get(ep["pk"], (circuit.CLOSED, 0, 0.0)) if ep["pk"] is not None else None
        p = latency.get(ep["name"], {})
        rows.append(
            {
                "name": ep["name"],
                "kind": ep["kind"],
                "enabled": ep["enabled"],
                "healthy": health.get("ok"),
                "health_detail": str(health.get("detail") or "")[:200],
                "circuit": state[0] if state else None,
                "latency_ema_ms": view.ema_ms.get(ep["pk"]) if ep["pk"] is not None else None,
                "requests": requests,
                "failures": failures,
                "failure_rate": failures / requests if requests else None,
                "p50_ms": p.get("hour_p50"),
                "p95_ms": p.get("hour_p95"),
                "tokens_per_second": tokens * 1000 / busy_ms if busy_ms else None,
                "trend_p95_ms": trend.get(ep["name"], []),
            }
        )
    return rows


def gpu_now() -> dict[str, Any]:
    """The GPUs as the monitor last sampled them (``GET /v1/gpu/status``'s payload): memory,
    temperature, pressure and thermal state, simulated or not, and how fresh the sample is."""
    status = gpu_services.status_payload()
    return {
        "provider": status["provider"],
        "simulated": status["simulated"],
        "stale": status["stale"],
        "age_seconds": status["age_seconds"],
        "monitor_running": status["monitor_running"],
        "pressure_level": status["pressure_level"],
        "thermal_state": status["thermal_state"],
        "admits_new_work": status["policy"]["admits_new_work"],
        "gpus": [
            {
                "index": g["index"],
                "name": g["name"],
                "simulated": g["simulated"],
                "used_mb": g["memory"]["used_mb"],
                "total_mb": g["memory"]["total_mb"],
                "used_percent": g["memory"]["used_percent"],
                "temperature_c": g["temperature_c"],
                "power_w": g["power_w"],
                "utilization_percent": g["utilization_percent"],
                "pressure_level": g["pressure_level"],
                "thermal_state": g["thermal_state"],
            }
            for g in status["gpus"]
        ],
    }


def gpu_history(now: datetime) -> dict[int, dict[str, list[float]]]:
    """Per GPU, memory used (%) and temperature (°C) per sample over the last hour (GpuSample: one
    row per GPU per minute)."""
    out: dict[int, dict[str, list[float]]] = {}
    for index, used, total, temp in (
        GpuSample.objects.filter(taken_at__gte=now - HOUR)
        .order_by("taken_at")
        .values_list("gpu_index", "memory_used_mb", "memory_total_mb", "temperature_c")
    ):
        series = out.setdefault(index, {"memory_percent": [], "temperature_c": []})
        series["memory_percent"].append(100.0 * used / total if total else 0.0)
        if temp is not None:
            series["temperature_c"].append(temp)
    return out


def quota_use(scope: Scope) -> dict[str, Any]:
    """Every quota of the scope with what its current day or month used (Redis counters, requests
    in flight held): ``available`` False when the counter store cannot be read."""
    rows, available = [], True
    for quota in scope.quotas().order_by("organization__name", "location__code", "period"):
        try:
            used: tuple[int | None, int | None] = quotas.current_usage(quota)
        except RedisError:
            used, available = (None, None), False
        rows.append(
            {
                "scope": quota.scope_name,
                "period": quota.period,
                "max_requests": quota.max_requests,
                "max_tokens": quota.max_tokens,
                "used_requests": used[0],
                "used_tokens": used[1],
                "requests_share": _share(used[0], quota.max_requests),
                "tokens_share": _share(used[1], quota.max_tokens),
            }
        )
    return {"rows": rows, "available": available}


def _share(used: int | None, limit: int | None) -> float | None:
    if used is None or not limit:
        return None
    return used / limit
