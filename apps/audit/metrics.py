"""Prometheus metrics of the audit trail: did the last verification hold, and how old is the
newest signed checkpoint.

    medai_audit_chain_ok                          1: the last verification (the worker's
                                                  checkpoint schedule, or ``audit_verify``) held;
                                                  0: it found the chain broken
    medai_audit_last_verify_timestamp_seconds     when that verification ran (Unix time)
    medai_audit_checkpoint_age_seconds            seconds since the newest exported checkpoint

Whoever verifies (a django-q2 worker every 5 minutes, an operator's ``audit_verify``) writes its
outcome to the shared cache (Redis: ``record_verification``); any web process's ``/metrics`` reads
it at scrape time (``AuditCollector``), so the reading survives the process that wrote it. The
newest checkpoint's time comes from the same record, or, when the cache has none (Redis was
flushed, nothing verified since a restart), from the last line of the checkpoint file. Nothing is
exported before the first verification: an alert on ``medai_audit_chain_ok == 0`` fires on a
broken chain, never on a fresh install.
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.cache import cache
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

logger = logging.getLogger("medai.audit")

CACHE_KEY = "audit:last-verification"
TAIL_BYTES = 4096  # a checkpoint line is ~250 bytes


def record_verification(*, ok: bool, checkpoint_at: str | None) -> None:
    """Keep the outcome of a verification (and the time of the checkpoint it wrote, ISO 8601) for
    the metrics. Never raises: a verification's result does not depend on Redis."""
    previous = last_verification() or {}
    entry = {
        "ok": bool(ok),
        "at": time.time(),
        "checkpoint_at": _epoch(checkpoint_at) if checkpoint_at else previous.get("checkpoint_at"),
    }
    try:
        cache.set(CACHE_KEY, json.dumps(entry), timeout=None)
    except Exception:  # metrics never fail the verification
        logger.warning("could not keep the audit verification's outcome for the metrics", exc_info=True)


def last_verification() -> dict[str, Any] | None:
    try:
        raw = cache.get(CACHE_KEY)
    except Exception:  # a scrape answers without it
        logger.warning("audit verification state unavailable", exc_info=True)
        return None
    if not raw:
        return None
    try:
        entry = json.loads(raw)
    except (TypeError, ValueError):
        return None
    return entry if isinstance(entry, dict) else None


def _epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


def newest_checkpoint_in_file(path: Path) -> float | None:
    """The time of the last checkpoint line of ``path`` (its tail only: the file only grows)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - TAIL_BYTES, 0))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for raw in reversed(lines):
        try:
            at = json.loads(raw).get("at")
        except (ValueError, AttributeError):
            continue
        if isinstance(at, str):
            return _epoch(at)
    return None


class AuditCollector(Collector):
    """The last verification's outcome and the newest checkpoint's age, read at scrape time."""

    def describe(self) -> list[Any]:
        return []  # no I/O when registering

    def collect(self) -> Any:
        from django.conf import settings

        entry = last_verification()
        ok = GaugeMetricFamily(
            "medai_audit_chain_ok", "The last audit chain verification held (1) or found it broken (0)"
        )
        verified = GaugeMetricFamily(
            "medai_audit_last_verify_timestamp_seconds", "When the audit chain was last verified (Unix time)"
        )
        age = GaugeMetricFamily(
            "medai_audit_checkpoint_age_seconds", "Seconds since the newest signed audit checkpoint was exported"
        )
        checkpoint_at = entry.get("checkpoint_at") if entry else None
        if entry is not None:
            ok.add_metric([], 1 if entry.get("ok") else 0)
            verified.add_metric([], float(entry.get("at") or 0))
        if checkpoint_at is None:
            checkpoint_at = newest_checkpoint_in_file(Path(settings.MEDAI_AUDIT_CHECKPOINT_PATH))
        if checkpoint_at is not None:
            age.add_metric([], max(time.time() - float(checkpoint_at), 0.0))
        yield ok
        yield verified
        yield age


_registered = False


def register() -> None:
    """Register the scrape-time collector with the default registry (single-process mode;
    medai/metrics.py adds it to the multiprocess registry itself)."""
    global _registered
    if not _registered:
        REGISTRY.register(AuditCollector())
        _registered = True
