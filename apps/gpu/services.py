"""GPU services: state publication, per-model metrics, history, server control.

The monitor process calls these on its schedule; the admin calls the server verbs. What needs the
models themselves (health checks, the request records behind the metrics, the bundled model's
endpoint) is apps.inference's and calls these with plain values (apps/gpu/inventory.py).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import record_event
from apps.gpu import circuit, shared
from apps.gpu.metrics import failure_bucket
from apps.gpu.models import GpuSample, ModelMetric, ModelServer
from apps.gpu.policy import current_policy
from apps.gpu.providers import GpuReading

logger = logging.getLogger("medai.gpu")

METRIC_BUCKET_SECONDS = 60
EMA_ALPHA = 0.3


# --- state --------------------------------------------------------------------------------------


def publish_state(
    provider: Any,
    readings: list[GpuReading],
    decision: dict[str, Any],
    extra: dict[str, Any],
    ema_ms: dict[str, float] | None = None,
    *,
    endpoint_names: dict[str, str],
) -> dict:
    """Share the latest readings and policy decision (TTL 30 s: a dead monitor's data expires).
    ``endpoint_names``: endpoint id (a string, as JSON keys are) -> model name, of every model."""
    servers = list(ModelServer.objects.values("name", "gpu_index", "endpoint__name", "state", "port", "vram_mb"))
    level_by_gpu = {g["index"]: g for g in decision.get("gpus", [])}
    gpus = []
    for r in readings:
        g = r.as_dict()
        g["level"] = level_by_gpu.get(r.index, {}).get("level", decision["level"])
        g["thermal"] = level_by_gpu.get(r.index, {}).get("thermal", decision["thermal"])
        g["models"] = [
            s["endpoint__name"] or s["name"]
            for s in servers
            if s["gpu_index"] == r.index and s["state"] in ("running", "starting")
        ]
        gpus.append(g)
    latest = latest_ema() if ema_ms is None else ema_ms
    state = {
        "ts": time.time(),
        "provider": provider.name,
        "simulated": provider.simulated,
        "gpus": gpus,
        "policy": decision,
        "ema_ms": latest,
        "endpoint_names": endpoint_names,
        "servers": servers,
        **extra,
    }
    shared.publish("state", state, ttl=30)
    shared.invalidate()
    return state


def stale_after() -> float:
    """Seconds after which the last GPU sample is stale: a few of the monitor's sample intervals."""
    return float(settings.MEDAI_GPU_STALE_AFTER)


def freshness(sampled_at: float | None, published: bool = True, now: float | None = None) -> dict[str, Any]:
    """How old the sample is and whether the monitor still publishes. A sample older than
    ``stale_after()`` is stale, and then the monitor counts as not running: a monitor that runs
    publishes every interval. (This process may also hold an old sample because Redis is gone:
    shared.view() keeps the last one; it is just as stale to whoever reads it.)"""
    if not published or sampled_at is None:
        return {"sampled_at": None, "age_seconds": None, "stale": True, "monitor_running": False}
    age = max(0.0, (time.time() if now is None else now) - float(sampled_at))
    stale = age > stale_after()
    return {"sampled_at": sampled_at, "age_seconds": round(age, 1), "stale": stale, "monitor_running": not stale}


def status_payload(now: float | None = None) -> dict[str, Any]:
    """What ``GET /v1/gpu/status`` answers, from the shared state."""
    v = shared.view()
    state = v.state
    decision = state.get("policy") or {}
    policy = current_policy()
    return {
        "provider": state.get("provider", "none"),
        "simulated": bool(state.get("simulated")),
        **freshness(state.get("ts"), bool(state), now),
        "pressure_level": policy.level,
        "thermal_state": policy.thermal,
        "policy": {
            "batch_size": policy.batch_size,
            "concurrency": policy.concurrency,
            "reserved_for_urgent": policy.reserved,
            "allowed_models": sorted(state.get("endpoint_names", {}).get(str(i), str(i)) for i in policy.allowed)
            if policy.allowed is not None
            else "all",
            "admits_new_work": policy.admit_new,
            "admits_critical": policy.admit_critical,
            "paused_for_oom": bool(state.get("oom")),
        },
        "gpus": [
            {
                "index": g["index"],
                "name": g["name"],
                "simulated": bool(g.get("simulated")),
                "memory": {
                    "total_mb": g["memory_total_mb"],
                    "used_mb": g["memory_used_mb"],
                    "free_mb": g["memory_free_mb"],
                    "used_percent": g["memory_percent"],
                },
                "temperature_c": g.get("temperature_c"),
                "power_w": g.get("power_w"),
                "utilization_percent": g.get("utilization_percent"),
                "pressure_level": g.get("level", decision.get("level")),
                "thermal_state": g.get("thermal"),
                "models": g.get("models", []),
                "processes": g.get("processes", []),
            }
            for g in state.get("gpus") or []
        ],
        "backends": [
            {
                "model": name,
                "healthy": v.health.get(int(pk), {}).get("ok"),
                "circuit": v.circuits.get(int(pk), (circuit.CLOSED, 0, 0.0))[0],
                "latency_ema_ms": round(v.ema_ms[int(pk)], 1) if int(pk) in v.ema_ms else None,
            }
            for pk, name in sorted(state.get("endpoint_names", {}).items(), key=lambda kv: kv[1])
        ],
        "servers": state.get("servers", []),
    }


# --- per-model metrics ----------------------------------------------------------------------


def bucket_start(ts: datetime) -> datetime:
    """The start of the ModelMetric bucket that ``ts`` falls in."""
    epoch = int(ts.timestamp()) // METRIC_BUCKET_SECONDS * METRIC_BUCKET_SECONDS
    return datetime.fromtimestamp(epoch, tz=ts.tzinfo or timezone.get_current_timezone())


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[index])


@dataclass
class ModelCounts:
    """One model's requests in one bucket, as its request records tell (apps/inference/model_metrics.py)."""

    requests: int = 0
    failures: int = 0  # backend faults only (metrics.counts_against_model)
    latencies_ms: list[float] = field(default_factory=list)  # of the completed requests
    tokens: int = 0  # completion tokens of the completed requests
    inference_ms: int = 0  # their time in the backend


def failed_attempts(start: datetime) -> dict[str, int]:
    """Backend faults by model name that the request paths counted in Redis in the bucket at
    ``start`` (attempts that failed over to another model leave no request record of their own).
    Empty when Redis cannot be read: the rows still come from the records."""
    try:
        raw = shared.client().hgetall(shared.key(f"fails:{failure_bucket(start.timestamp())}"))
    except Exception:  # noqa: BLE001
        return {}
    return {shared.text(k): int(v) for k, v in raw.items()}


def record_model_metrics(start: datetime, per_model: dict[str, ModelCounts], endpoint_ids: dict[str, int]) -> int:
    """Write the ModelMetric rows of the bucket at ``start``: the records' counts per model name plus
    the failed attempts counted in Redis, the latency EMA carried on from the model's previous row.
    ``endpoint_ids``: model name -> endpoint id, for the rows' endpoint. Returns rows written."""
    per_model = {name: replace(m) for name, m in per_model.items()}  # the caller's counts stay as they are
    for name, count in failed_attempts(start).items():
        m = per_model.setdefault(name, ModelCounts())
        m.requests += count
        m.failures += count
    for name, m in per_model.items():
        previous = (
            ModelMetric.objects.filter(model_name=name, bucket_start__lt=start)
            .exclude(latency_ema_ms=None)
            .order_by("-bucket_start")
            .values_list("latency_ema_ms", flat=True)
            .first()
        )
        mean = statistics.fmean(m.latencies_ms) if m.latencies_ms else None
        if mean is None:
            ema = previous
        else:
            ema = mean if previous is None else previous + EMA_ALPHA * (mean - previous)
        ModelMetric.objects.update_or_create(
            model_name=name,
            bucket_start=start,
            defaults=dict(
                endpoint_id=endpoint_ids.get(name),
                bucket_seconds=METRIC_BUCKET_SECONDS,
                requests=m.requests,
                failures=m.failures,
                latency_ema_ms=ema,
                latency_p50_ms=_percentile(m.latencies_ms, 0.5),
                latency_p95_ms=_percentile(m.latencies_ms, 0.95),
                tokens_per_second=(m.tokens / (m.inference_ms / 1000)) if m.inference_ms else None,
            ),
        )
    return len(per_model)


def latest_ema() -> dict[str, float]:
    """The latest latency EMA per endpoint id (for routing, shared through the state)."""
    since = timezone.now() - timedelta(minutes=30)
    out: dict[str, float] = {}
    for endpoint_id, ema in (
        ModelMetric.objects.filter(bucket_start__gte=since)
        .exclude(endpoint=None)
        .exclude(latency_ema_ms=None)
        .order_by("bucket_start")
        .values_list("endpoint_id", "latency_ema_ms")
    ):
        if ema is not None:  # excluded above; the checker cannot see it
            out[str(endpoint_id)] = round(ema, 2)
    return out


# --- history -------------------------------------------------------------------------------


def record_history(readings: list[GpuReading], decision: dict[str, Any]) -> None:
    by_gpu = {g["index"]: g for g in decision.get("gpus", [])}
    now = timezone.now()
    GpuSample.objects.bulk_create(
        [
            GpuSample(
                taken_at=now,
                gpu_index=r.index,
                name=r.name[:100],
                simulated=r.simulated,
                memory_total_mb=r.memory_total_mb,
                memory_used_mb=r.memory_used_mb,
                temperature_c=r.temperature_c,
                power_w=r.power_w,
                utilization_percent=r.utilization_percent,
                level=by_gpu.get(r.index, {}).get("level", decision["level"]),
                thermal=by_gpu.get(r.index, {}).get("thermal", decision["thermal"]),
            )
            for r in readings
        ]
    )


def prune_history() -> int:
    cutoff = timezone.now() - timedelta(days=settings.MEDAI_GPU_HISTORY_DAYS)
    deleted, _ = GpuSample.objects.filter(taken_at__lt=cutoff).delete()
    deleted_metrics, _ = ModelMetric.objects.filter(bucket_start__lt=cutoff - timedelta(days=23)).delete()
    return deleted + deleted_metrics


# --- audit -----------------------------------------------------------------------------------


def audit(action: str, *, failure: bool = False, actor: Any = None, obj: Any = None, **details: Any) -> None:
    """An audit event for GPU orchestration (crashes, restarts, out-of-memory, policy and circuit
    changes, admin actions). Never raises: the monitor must outlive an audit hiccup."""
    try:
        record_event(
            action,
            actor=actor,
            obj=obj,
            details=details,
            outcome=AuditEvent.Outcome.FAILURE if failure else AuditEvent.Outcome.SUCCESS,
        )
    except Exception:
        logger.warning("could not write the audit event %s", action, exc_info=True)


# --- model servers -------------------------------------------------------------------------


def start_server(server: ModelServer, actor: Any = None) -> None:
    """Ask the monitor to run this server (it starts within a second)."""
    ModelServer.objects.filter(pk=server.pk).update(desired_state=ModelServer.Desired.RUNNING)
    audit("gpu.server.start_requested", actor=actor, obj=server, server=server.name)


def stop_server(server: ModelServer, actor: Any = None) -> None:
    ModelServer.objects.filter(pk=server.pk).update(desired_state=ModelServer.Desired.STOPPED)
    audit("gpu.server.stop_requested", actor=actor, obj=server, server=server.name)


def restart_server(server: ModelServer, actor: Any = None) -> None:
    ModelServer.objects.filter(pk=server.pk).update(desired_state=ModelServer.Desired.RUNNING, restart_requested=True)
    audit("gpu.server.restart_requested", actor=actor, obj=server, server=server.name)


def ensure_llamacpp_server(
    endpoint_id: int,
    endpoint_name: str,
    port: int,
    *,
    parallel: int = 4,
    ctx_size: int | None = None,
    threads: int | None = None,
    vram_mb: int = 400,
    autostart: bool = True,
    extra: Sequence[str] = (),
) -> ModelServer:
    """The supervised llama.cpp server of a model endpoint on this machine (created or updated;
    idempotent): ``parallel`` slots of ``ctx_size`` tokens in all (2048 each by default), and
    ``extra`` options (the embeddings server's ``--embeddings --pooling mean``). The monitor
    starts it (apps/inference/bundled.py makes the bundled model's)."""
    args = ["--parallel", str(parallel), "--ctx-size", str(ctx_size or 2048 * parallel)]
    if threads:
        args += ["--threads", str(threads)]
    args += [str(a) for a in extra]
    server, _ = ModelServer.objects.update_or_create(
        name=f"llama.cpp {endpoint_name}",
        defaults=dict(
            endpoint_id=endpoint_id,
            port=port,
            host="127.0.0.1",
            gpu_index=0,
            vram_mb=vram_mb,
            autostart=autostart,
            args=args,
        ),
    )
    return server
