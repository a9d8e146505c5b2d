"""GPU services: health checks, state publication, per-model metrics, history, server control.

The monitor process calls these on its schedule; the admin calls the server verbs.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.gpu import circuit, shared
from apps.gpu.models import GpuSample, ModelMetric, ModelServer
from apps.gpu.providers import GpuReading

logger = logging.getLogger("medai.gpu")

METRIC_BUCKET_SECONDS = 60
EMA_ALPHA = 0.3


# --- health checks -----------------------------------------------------------------------------


async def _check_one(client: httpx.AsyncClient, ep: Any) -> tuple[bool, str]:
    """llama.cpp and vLLM answer ``/health`` at the server root; others are asked ``/v1/models``."""
    headers = {"Authorization": f"Bearer {ep.api_key}"} if ep.api_key else {}
    url = ep.server_root + "/health" if ep.kind in ("llamacpp", "vllm") else ep.base_url.rstrip("/") + "/models"
    try:
        response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return False, f"{type(exc).__name__} on {url}"
    if response.status_code == 200:
        return True, "ok"
    return False, f"HTTP {response.status_code} on {url}"


async def _check_all(endpoints: list[Any]) -> dict[int, tuple[bool, str]]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(3.0, connect=2.0)) as client:
        # One check per server: several models served by one server share its answer.
        by_target: dict[tuple[str, str], list[Any]] = {}
        for ep in endpoints:
            target = ep.server_root if ep.kind in ("llamacpp", "vllm") else ep.base_url
            by_target.setdefault((ep.kind, target), []).append(ep)
        groups = list(by_target.values())
        results = await asyncio.gather(*(_check_one(client, group[0]) for group in groups))
    return {ep.id: result for group, result in zip(groups, results, strict=True) for ep in group}


def check_health() -> dict[int, tuple[bool, str]]:
    """Health-check every enabled model endpoint; share the results; let a recovered backend's
    open circuit try a request at once (half-open)."""
    from apps.inference import router

    endpoints = [ep for ep in router.snapshot().models.values() if ep.enabled]
    if not endpoints:
        return {}
    results = asyncio.run(_check_all(endpoints))
    for endpoint_id, (ok, detail) in results.items():
        shared.mark_health(endpoint_id, ok, detail)
        if ok and circuit.state_of(endpoint_id)[0] == circuit.OPEN:
            circuit.half_open(endpoint_id)
    return results


# --- state --------------------------------------------------------------------------------------


def publish_state(
    provider: Any,
    readings: list[GpuReading],
    decision: dict[str, Any],
    extra: dict[str, Any],
    ema_ms: dict[str, float] | None = None,
) -> dict:
    """Share the latest readings and policy decision (TTL 30 s: a dead monitor's data expires)."""
    from apps.inference.models import ModelEndpoint

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
        "endpoint_names": {str(pk): name for pk, name in ModelEndpoint.objects.values_list("pk", "name")},
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
    from apps.gpu.policy import current_policy

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


def _bucket(ts: datetime) -> datetime:
    epoch = int(ts.timestamp()) // METRIC_BUCKET_SECONDS * METRIC_BUCKET_SECONDS
    return datetime.fromtimestamp(epoch, tz=ts.tzinfo or timezone.get_current_timezone())


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[index])


def aggregate_metrics(now: datetime | None = None) -> int:
    """Write the ModelMetric rows of the current and previous bucket from the request records
    (and the failed attempts the request paths counted in Redis). Returns rows written.

    ``failures`` counts backend faults only (``metrics.counts_against_model``): a request the
    client cancelled (Stop) or that was refused for its input still counts as a request of the
    model, never as one of its failures."""
    from apps.gpu.metrics import counts_against_model, failure_bucket
    from apps.inference.models import InferenceTask, ModelEndpoint

    now = now or timezone.now()
    current = _bucket(now)
    written = 0
    endpoints = dict(ModelEndpoint.objects.values_list("name", "pk"))
    for start in (current - timedelta(seconds=METRIC_BUCKET_SECONDS), current):
        end = start + timedelta(seconds=METRIC_BUCKET_SECONDS)
        rows = (
            InferenceTask.objects.filter(created_at__gte=start, created_at__lt=end)
            .exclude(model_name="")
            .values_list(
                "model_name", "status", "http_status", "error_code", "inference_ms", "latency_ms", "completion_tokens"
            )
        )
        try:
            fails = {
                k.decode(): int(v)
                for k, v in shared.client().hgetall(shared.key(f"fails:{failure_bucket(start.timestamp())}")).items()
            }
        except Exception:  # noqa: BLE001
            fails = {}
        per_model: dict[str, dict[str, Any]] = {}
        for name, status, http_status, error_code, inference_ms, latency_ms, tokens in rows:
            m = per_model.setdefault(name, {"requests": 0, "failures": 0, "lat": [], "tokens": 0, "ms": 0})
            m["requests"] += 1
            if counts_against_model(status, http_status, error_code):
                m["failures"] += 1
            elif status == InferenceTask.Status.COMPLETED and (inference_ms or latency_ms) is not None:
                m["lat"].append(float(inference_ms or latency_ms))
                m["tokens"] += tokens
                m["ms"] += inference_ms or 0
        for name, count in fails.items():
            m = per_model.setdefault(name, {"requests": 0, "failures": 0, "lat": [], "tokens": 0, "ms": 0})
            m["requests"] += count
            m["failures"] += count
        for name, m in per_model.items():
            previous = (
                ModelMetric.objects.filter(model_name=name, bucket_start__lt=start)
                .exclude(latency_ema_ms=None)
                .order_by("-bucket_start")
                .values_list("latency_ema_ms", flat=True)
                .first()
            )
            mean = statistics.fmean(m["lat"]) if m["lat"] else None
            if mean is None:
                ema = previous
            else:
                ema = mean if previous is None else previous + EMA_ALPHA * (mean - previous)
            ModelMetric.objects.update_or_create(
                model_name=name,
                bucket_start=start,
                defaults=dict(
                    endpoint_id=endpoints.get(name),
                    bucket_seconds=METRIC_BUCKET_SECONDS,
                    requests=m["requests"],
                    failures=m["failures"],
                    latency_ema_ms=ema,
                    latency_p50_ms=_percentile(m["lat"], 0.5),
                    latency_p95_ms=_percentile(m["lat"], 0.95),
                    tokens_per_second=(m["tokens"] / (m["ms"] / 1000)) if m["ms"] else None,
                ),
            )
            written += 1
    return written


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
    from apps.audit.models import AuditEvent
    from apps.audit.services import record_event

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


@transaction.atomic
def ensure_bundled_server(
    port: int,
    *,
    endpoint_name: str | None = None,
    parallel: int = 4,
    ctx_size: int | None = None,
    threads: int | None = None,
    vram_mb: int = 400,
    autostart: bool = True,
) -> ModelServer:
    """The supervised llama.cpp server of the embedded default, on the bundled SmolLM2 GGUF, and the
    model endpoint that points at it (created or updated; idempotent). The launcher calls this,
    then runs the monitor, which starts the server."""
    from apps.gpu.llamacpp import BUNDLED_MODEL_ALIAS
    from apps.inference.models import ModelEndpoint

    name = endpoint_name or BUNDLED_MODEL_ALIAS
    base_url = f"http://127.0.0.1:{port}/v1"
    endpoint, _ = ModelEndpoint.objects.get_or_create(
        name=name,
        defaults=dict(
            kind=ModelEndpoint.Kind.LLAMACPP,
            base_url=base_url,
            served_model_id=BUNDLED_MODEL_ALIAS,
            context_length=2048,
            vram_mb=vram_mb,
            rank=100,
        ),
    )
    if endpoint.base_url != base_url:
        endpoint.base_url = base_url
        endpoint.save(update_fields=["base_url", "updated_at"])
    args = ["--parallel", str(parallel), "--ctx-size", str(ctx_size or 2048 * parallel)]
    if threads:
        args += ["--threads", str(threads)]
    server, _ = ModelServer.objects.update_or_create(
        name=f"llama.cpp {name}",
        defaults=dict(
            endpoint=endpoint, port=port, host="127.0.0.1", gpu_index=0, vram_mb=vram_mb, autostart=autostart, args=args
        ),
    )
    return server
