"""What the System page shows (``GET /v1/system/status``): the GPU state, the models the GPU policy
allows now, the queue's depth by priority and each model endpoint's health and circuit.

The GPU part is ``GET /v1/gpu/status``'s payload (apps/gpu/services.py), the page's websocket
(``/ws/gpu/``) keeps it live between reads. The queue is counted twice:

- ``organization``: the queued work of the caller's organization by priority, the same set a
  task's ``position`` is counted against (apps/inference/queue/read.py): how much is ahead in the
  line. The queue is shared by every organization, and a count over all of them would tell each
  one how busy the others are, so it is never shown.
- ``yours``: what ``GET /v1/async/health`` counts, the tasks the caller may see (their own; a
  location admin's location).

Counts only: no task's content, owner or id. Backends are every enabled model endpoint, from the
registry, with the monitor's last health check (``up`` is null when none is recent: the monitor
is not checking) and the circuit breaker's state; no URL and no error text (a health check's
detail names the server's address).
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db.models import Count, Min
from django.utils import timezone

from apps.gpu import circuit, shared
from apps.gpu import services as gpu_services
from apps.gpu.policy import current_policy
from apps.gpu.priority import Priority
from apps.inference import router
from apps.inference.models import InferenceTask
from apps.inference.queue import read as queue_read

PRIORITIES = [p.name.lower() for p in sorted(Priority, reverse=True)]  # critical first


def _depth(tasks: Any) -> dict[str, Any]:
    queued = tasks.queued()
    depth = dict.fromkeys(PRIORITIES, 0)
    for prio, n in queued.order_by().values_list("priority").annotate(n=Count("id")):
        depth[Priority(prio).name.lower()] = n
    oldest = queued.aggregate(m=Min("queued_at"))["m"]
    return {
        "depth": depth,
        "queued": sum(depth.values()),
        "processing": tasks.processing().count(),
        "oldest_wait_s": round((timezone.now() - oldest).total_seconds(), 1) if oldest else 0.0,
    }


def queue_status(principal: Any) -> dict[str, Any]:
    """The queue as the caller may see it (see the module's docstring)."""
    organization = (
        InferenceTask.objects.filter(location__organization_id=principal.organization_id)
        if principal.organization_id is not None
        else InferenceTask.objects.filter(location_id=principal.location_pk)
    )
    health = queue_read.health(principal)
    return {
        "organization": _depth(organization),
        "yours": {k: health[k] for k in ("depth", "queued", "processing", "oldest_wait_s")},
        "workers_alive": health["workers_alive"],
        "queue_max": health["queue_max"],
        "emergency_mode": health["emergency_mode"],
    }


def backends(now: float | None = None) -> list[dict[str, Any]]:
    """Each enabled model endpoint: up (its last health check, null when none is recent), circuit
    state, latency EMA, and whether the GPU policy lets it take work now."""
    now = time.time() if now is None else now
    view = shared.view()
    policy = current_policy()
    recent = 3 * settings.MEDAI_HEALTH_INTERVAL
    out = []
    for ep in sorted(router.snapshot().models.values(), key=lambda e: (e.rank, e.name)):
        if not ep.enabled:
            continue
        check = view.health.get(ep.id)
        age = None if check is None else max(0.0, now - float(check["ts"]))
        state, failures, _ = circuit.state_of(ep.id)
        out.append(
            {
                "model": ep.name,
                "kind": ep.kind,
                "up": None if age is None or age > recent else bool(check and check["ok"]),
                "checked_seconds_ago": None if age is None else round(age, 1),
                "circuit": state,
                "consecutive_failures": failures,
                "latency_ema_ms": round(view.ema_ms[ep.id], 1) if ep.id in view.ema_ms else None,
                "allowed_now": policy.allows_model(ep.id),
            }
        )
    return out


def system_status(principal: Any) -> dict[str, Any]:
    """``GET /v1/system/status``: the GPU status, the backends and the queue, with the limits the
    page judges staleness by."""
    gpu = gpu_services.status_payload()
    gpu.pop("servers", None)  # the supervised servers' ports and names are the admin's, not the page's
    return {
        **gpu,
        "backends": backends(),
        "queue": queue_status(principal),
        "stale_after_seconds": gpu_services.stale_after(),
        "health_interval_seconds": float(settings.MEDAI_HEALTH_INTERVAL),
    }
