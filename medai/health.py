"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: DB, Redis, workers)."""

from __future__ import annotations

import time

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
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
        from django_q.status import Stat

        clusters = [s for s in Stat.get_all() if s.status not in ("Stopped", "Stopping")]
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    return bool(clusters), f"{len(clusters)} cluster(s) alive"


def readyz(request: HttpRequest) -> JsonResponse:
    checks = {}
    for name, check in (("database", _check_db), ("redis", _check_redis), ("workers", _check_workers)):
        ok, detail = check()
        checks[name] = {"ok": ok, "detail": detail}
    ready = all(c["ok"] for c in checks.values())
    return JsonResponse({"status": "ready" if ready else "not_ready", "checks": checks}, status=200 if ready else 503)
