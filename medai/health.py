"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: DB, Redis, workers).

``/readyz`` also reports the model servers (``models``: how many enabled endpoints the last health
checks found serving), without letting them decide readiness: when every backend is down this
process must stay in the load balancer to answer a clear 503, not vanish from it."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django_q.status import Stat

from apps.gpu import circuit, policy, shared
from apps.inference import router


async def healthz(request: HttpRequest) -> JsonResponse:
    # Async: liveness costs no thread (and is the floor that bench/chat_overhead.py compares to).
    return JsonResponse({"status": "ok"})


def _check_db() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, connection.vendor
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return False, f"{type(exc).__name__}: {exc}"


def _check_redis() -> tuple[bool, str]:
    try:
        cache.set("medai:readyz", time.time(), 10)
        return cache.get("medai:readyz") is not None, "ok"
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"


def _check_workers() -> tuple[bool, str]:
    try:
        clusters = [s for s in Stat.get_all() if s.status not in ("Stopped", "Stopping")]
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    return bool(clusters), f"{len(clusters)} cluster(s) alive"


def _check_models() -> dict[str, object]:
    """Enabled model endpoints that are serving: health checked (or marked by the supervisor) and
    not circuit-open, read fresh from the shared state."""
    try:
        view = shared.load_view()
        enabled = [ep for ep in router.snapshot().models.values() if ep.enabled]
        stale = max(3 * settings.MEDAI_HEALTH_INTERVAL, 30.0)
        serving = [
            ep.name
            for ep in enabled
            if policy._healthy(view, ep.id, stale)[0] and view.circuits.get(ep.id, (circuit.CLOSED,))[0] != circuit.OPEN
        ]
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    return {
        "ok": bool(serving),
        "serving": sorted(serving),
        "enabled": len(enabled),
        "detail": f"{len(serving)} of {len(enabled)} enabled model endpoint(s) serving",
    }


def readyz(request: HttpRequest) -> JsonResponse:
    checks = {}
    for name, check in (("database", _check_db), ("redis", _check_redis), ("workers", _check_workers)):
        ok, detail = check()
        checks[name] = {"ok": ok, "detail": detail}
    ready = all(c["ok"] for c in checks.values())
    return JsonResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks, "models": _check_models()},
        status=200 if ready else 503,
    )
