"""Prometheus metrics of governance: what the limits refused, and what each quota has used.

    medai_limit_rejections_total{kind}          kind: rate_limit | in_flight | quota | unavailable
    medai_quota_used{level, scope, period, kind}   level: location | organization; scope: its
                                                   code or name; kind: requests | tokens; used
                                                   plus held now
    medai_quota_limit{level, scope, period, kind}  the limit (absent: that kind is unlimited)

Rejections are counted by the process that refused (a web process for chat and websockets, the
async API's submit), gathered by prometheus_client's multiprocess mode (medai/metrics.py). Quota
use is read at scrape time (``QuotaCollector``: the quotas from the database, their counters from
Redis with one HMGET per scope), so it is the same whichever process answers ``/metrics`` and
costs nothing on the request path: a series per quota and kind, a few dozen at most.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

logger = logging.getLogger("medai.governance")

REJECTIONS = Counter(
    "medai_limit_rejections",
    "Requests refused by governance, by kind (rate_limit, in_flight, quota: 429; unavailable: 503)",
    ["kind"],
)
KINDS = ("rate_limit", "in_flight", "quota", "unavailable")
for _kind in KINDS:
    # Exported as 0 before the first refusal: Prometheus's increase() and rate() count a
    # series' first value as its start, so a counter born at 1 would hide the first refusal
    # from an alert (deploy/prometheus/alerts.yml).
    REJECTIONS.labels(kind=_kind)


def rejected(kind: str) -> None:
    REJECTIONS.labels(kind=kind).inc()


class QuotaCollector(Collector):
    """Every quota's use and limit in its current window, read at scrape time."""

    def describe(self) -> list[Any]:
        return []  # no I/O when registering

    def collect(self) -> Any:
        from apps.accounts.governance import store
        from apps.accounts.models import Quota

        used = GaugeMetricFamily(
            "medai_quota_used",
            "Requests or tokens used and held in the quota's current window",
            labels=["level", "scope", "period", "kind"],
        )
        limit = GaugeMetricFamily("medai_quota_limit", "The quota's limit", labels=["level", "scope", "period", "kind"])
        try:
            rows = list(Quota.objects.select_related("organization", "location"))
            w = store.windows()
            usage: dict[str, dict[str, dict[str, int]]] = {}
            for q in rows:
                scope = f"l:{q.location_id}" if q.location_id is not None else f"o:{q.organization_id}"
                if scope not in usage:
                    usage[scope] = store.usage(scope, w)
                if q.location is not None:
                    level, name = "location", q.location.code
                elif q.organization is not None:
                    level, name = "organization", q.organization.name
                else:  # the model's check forbids it
                    continue
                period = str(q.period)
                for kind, cap in (("requests", q.max_requests), ("tokens", q.max_tokens)):
                    used.add_metric([level, name, period, kind], usage[scope][period][kind])
                    if cap is not None:
                        limit.add_metric([level, name, period, kind], cap)
        except Exception:  # a scrape answers without the quotas rather than fail
            logger.warning("quota metrics unavailable", exc_info=True)
            return
        yield used
        yield limit


_registered = False


def register() -> None:
    """Register the scrape-time collector with the default registry (single-process mode;
    medai/metrics.py adds it to the multiprocess registry itself)."""
    global _registered
    if not _registered:
        REGISTRY.register(QuotaCollector())
        _registered = True
