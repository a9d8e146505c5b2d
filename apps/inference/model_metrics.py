"""The per-model metrics (ModelMetric rows, apps/gpu) from the request records, every 10 s.

The monitor is handed this function (apps/gpu/inventory.py): it reads InferenceTask rows, which
are inference's, and hands gpu plain counts per model (``services.record_model_metrics``), which
adds the failed attempts counted in Redis and keeps the latency EMA.

``failures`` counts backend faults only (``metrics.counts_against_model``): a request the client
cancelled (Stop) or that was refused for its input still counts as a request of the model, never
as one of its failures.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from apps.gpu import services
from apps.gpu.metrics import counts_against_model
from apps.inference.models import InferenceTask, ModelEndpoint


def aggregate_metrics(now: datetime | None = None) -> int:
    """Write the ModelMetric rows of the current and previous bucket from the request records
    (and the failed attempts the request paths counted in Redis). Returns rows written."""
    now = now or timezone.now()
    current = services.bucket_start(now)
    written = 0
    endpoints = dict(ModelEndpoint.objects.values_list("name", "pk"))
    for start in (current - timedelta(seconds=services.METRIC_BUCKET_SECONDS), current):
        end = start + timedelta(seconds=services.METRIC_BUCKET_SECONDS)
        rows = (
            InferenceTask.objects.filter(created_at__gte=start, created_at__lt=end)
            .exclude(model_name="")
            .values_list(
                "model_name", "status", "http_status", "error_code", "inference_ms", "latency_ms", "completion_tokens"
            )
        )
        per_model: dict[str, services.ModelCounts] = {}
        for name, status, http_status, error_code, inference_ms, latency_ms, tokens in rows:
            m = per_model.setdefault(name, services.ModelCounts())
            m.requests += 1
            took_ms = inference_ms or latency_ms
            if counts_against_model(status, http_status, error_code):
                m.failures += 1
            elif status == InferenceTask.Status.COMPLETED and took_ms is not None:
                m.latencies_ms.append(float(took_ms))
                m.tokens += tokens
                m.inference_ms += inference_ms or 0
        written += services.record_model_metrics(start, per_model, endpoints)
    return written
