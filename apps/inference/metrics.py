"""Prometheus metrics of inference: outcomes, tokens, run and wait times, queue depth.

Counters and histograms are kept by the process that finished the inference (a web process for
sync chat, a django-q2 worker for async tasks) and gathered from every process by
prometheus_client's multiprocess mode (medai/metrics.py). Queue depth is read from the database
at scrape time (``QueueCollector``: one grouped count over the task status index), so it is the
same whichever process answers ``/metrics`` and costs nothing between scrapes.

    medai_tasks_total{mode, outcome, model}          mode: sync | stream | async
                                                      outcome: completed | failed | client_error |
                                                               cancelled | expired
    medai_tokens_total{model, agent_type, direction}  direction: in (prompt) | out (completion)
    medai_task_run_seconds{mode, model}               the backend call of completed inferences
    medai_queue_wait_seconds{priority}                queued → started, async tasks
    medai_queue_depth{priority}, medai_queue_oldest_seconds{priority}, medai_queue_processing
    medai_model_drift{model, figure}                  1: the figure drifted from the model's baseline
                                                      (apps/inference/quality.py); 0: not flagged
    medai_model_drift_p_value{model, figure}          the test's p-value (tested figures only)
    medai_model_drift_effect{model, figure}           the change (relative for medians, points for rates)
    medai_model_drift_checked_timestamp_seconds{model}

Drift is computed by whichever process runs the hourly schedule (a django-q2 worker) or
``manage.py quality``, and kept as rows (``ModelDrift``); ``QualityCollector`` reads the newest
verdicts at scrape time, so any web process's ``/metrics`` shows them, whoever computed them.
Every enabled model has its ``medai_model_drift`` series (0 until a check flags it: too few
samples and "not checked yet" are not drift), so the alert's series exists from the start.

``failed`` is a fault of medai or the backend (what counts against a model, as in
apps/gpu/metrics.counts_against_model); ``client_error`` a request refused for its input;
``cancelled`` a client that went away (Stop) or cancelled its task.

Quota use and governance's refusals: apps/accounts/governance/metrics.py.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from apps.gpu.metrics import counts_against_model
from apps.inference import quality
from apps.inference.models import InferenceTask, ModelDrift, ModelEndpoint

logger = logging.getLogger("medai.inference")

PRIORITIES = ("low", "normal", "high", "critical")
# LLM calls: from a cached one-token answer to a long generation.
RUN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

TASKS = Counter(
    "medai_tasks_total",
    "Inferences finished, by mode (sync, stream, async), outcome and model",
    ["mode", "outcome", "model"],
)
TOKENS = Counter(
    "medai_tokens_total",
    "Tokens in (prompt) and out (completion), by model and agent type",
    ["model", "agent_type", "direction"],
)
RUN_SECONDS = Histogram(
    "medai_task_run_seconds",
    "Time of the backend call of completed inferences, by mode and model",
    ["mode", "model"],
    buckets=RUN_BUCKETS,
)
WAIT_SECONDS = Histogram(
    "medai_queue_wait_seconds",
    "Time async tasks waited in the queue before a worker started them, by priority",
    ["priority"],
    buckets=WAIT_BUCKETS,
)


_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached: ``labels()`` validates and locks on every call, most of
    what counting a request cost."""
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def outcome_of(status: str, http_status: int | None, error_code: str) -> str:
    """The ``outcome`` label of a finished inference."""
    if status == "failed":
        if counts_against_model(status, http_status, error_code):
            return "failed"
        return "cancelled" if not (http_status and 400 <= http_status < 500) else "client_error"
    return status if status in ("completed", "cancelled", "expired") else "failed"


def _priority(value: Any) -> str:
    try:
        return PRIORITIES[int(value)]
    except (TypeError, ValueError, IndexError):
        return "normal"


def observe(record: Mapping[str, Any]) -> None:
    """Count one finished inference from its InferenceTask field values (a dict of them, or
    ``task_fields(task)``). Never raises: metrics never fail a request."""
    try:
        mode = "async" if record.get("mode") == "async" else ("stream" if record.get("stream") else "sync")
        model = record.get("model_name") or ""
        status = record.get("status") or ""
        _child(TASKS, mode, outcome_of(status, record.get("http_status"), record.get("error_code") or ""), model).inc()
        agent = record.get("agent_type") or ""
        if record.get("prompt_tokens"):
            _child(TOKENS, model, agent, "in").inc(record["prompt_tokens"])
        if record.get("completion_tokens"):
            _child(TOKENS, model, agent, "out").inc(record["completion_tokens"])
        if status == "completed" and record.get("inference_ms") is not None:
            _child(RUN_SECONDS, mode, model).observe(record["inference_ms"] / 1000)
        if mode == "async" and record.get("queue_wait_ms") is not None:
            _child(WAIT_SECONDS, _priority(record.get("priority"))).observe(record["queue_wait_ms"] / 1000)
    except Exception:
        logger.warning("could not count an inference in the metrics", exc_info=True)


OBSERVED_FIELDS = (
    "mode",
    "stream",
    "status",
    "http_status",
    "error_code",
    "model_name",
    "agent_type",
    "prompt_tokens",
    "completion_tokens",
    "inference_ms",
    "queue_wait_ms",
    "priority",
)


def task_fields(task: Any) -> dict[str, Any]:
    """What ``observe`` reads, from an InferenceTask instance."""
    return {name: getattr(task, name, None) for name in OBSERVED_FIELDS}


def count_finished(mode: str, outcome: str, n: int = 1, model: str = "") -> None:
    """Count tasks that ended without running (cancelled while queued, expired)."""
    if n:
        try:
            _child(TASKS, mode, outcome, model).inc(n)
        except Exception:
            logger.warning("could not count finished tasks in the metrics", exc_info=True)


class QueueCollector(Collector):
    """Queue depth, oldest wait (per priority) and tasks running, read at scrape time."""

    def describe(self) -> list[Any]:
        return []  # no I/O when registering

    def collect(self) -> Any:
        S = InferenceTask.Status
        try:
            # Only async tasks are ever QUEUED or PROCESSING (a sync request is recorded when it
            # ends), so the status index alone answers: no mode filter, no table read.
            rows = list(
                InferenceTask.objects.filter(status=S.QUEUED)
                .order_by()
                .values_list("priority")
                .annotate(n=Count("pk"), oldest=Min("created_at"))
            )
            processing = InferenceTask.objects.filter(status=S.PROCESSING).order_by().count()
        except Exception:  # a scrape answers without the queue rather than fail
            logger.warning("queue metrics unavailable", exc_info=True)
            return
        now = timezone.now()
        depth = GaugeMetricFamily("medai_queue_depth", "Async tasks queued, by priority", labels=["priority"])
        oldest = GaugeMetricFamily(
            "medai_queue_oldest_seconds", "Age of the oldest queued task, by priority", labels=["priority"]
        )
        found = {_priority(prio): (n, first) for prio, n, first in rows}
        for name in PRIORITIES:
            n, first = found.get(name, (0, None))
            depth.add_metric([name], n)
            oldest.add_metric([name], max((now - first).total_seconds(), 0.0) if first else 0.0)
        running = GaugeMetricFamily("medai_queue_processing", "Async tasks running now")
        running.add_metric([], processing)
        yield depth
        yield oldest
        yield running


# A verdict older than this is not exported: a model no longer checked (no traffic) stops alerting.
DRIFT_FRESH = timedelta(days=8)


class QualityCollector(Collector):
    """The newest drift verdict of each model's figures (``ModelDrift`` rows), read at scrape time."""

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        try:
            rows = quality.latest_drift(timezone.now() - DRIFT_FRESH)
            enabled = list(ModelEndpoint.objects.filter(enabled=True).values_list("name", flat=True))
        except Exception:
            logger.warning("drift metrics unavailable", exc_info=True)
            return
        labels = ["model", "figure"]
        drift = GaugeMetricFamily(
            "medai_model_drift",
            "1: the figure drifted from the model's baseline (apps/inference/quality.py)",
            labels=labels,
        )
        p_value = GaugeMetricFamily("medai_model_drift_p_value", "The drift test's p-value", labels=labels)
        effect = GaugeMetricFamily(
            "medai_model_drift_effect",
            "The figure's change from its baseline (relative, or rate points)",
            labels=labels,
        )
        checked = GaugeMetricFamily(
            "medai_model_drift_checked_timestamp_seconds", "When the model's drift was last checked", labels=["model"]
        )
        seen: set[tuple[str, str]] = set()
        last: dict[str, float] = {}
        for row in rows:
            seen.add((row.model_name, row.figure))
            drift.add_metric([row.model_name, row.figure], 1 if row.drifted else 0)
            if row.p_value is not None:
                p_value.add_metric([row.model_name, row.figure], row.p_value)
                if row.effect is not None:
                    effect.add_metric([row.model_name, row.figure], row.effect)
            last[row.model_name] = max(last.get(row.model_name, 0.0), row.checked_at.timestamp())
        for name in enabled:
            for figure in ModelDrift.Figure.values:
                if (name, figure) not in seen:
                    drift.add_metric([name, figure], 0)
        for name, at in sorted(last.items()):
            checked.add_metric([name], at)
        yield drift
        yield p_value
        yield effect
        yield checked


_registered = False


def register() -> None:
    """Register the scrape-time collector with the default registry (single-process mode;
    medai/metrics.py adds it to the multiprocess registry itself)."""
    global _registered
    if not _registered:
        REGISTRY.register(QueueCollector())
        REGISTRY.register(QualityCollector())
        _registered = True
