"""Prometheus metrics of the GPU app.

GPU readings, pressure level, thermal state and circuit states live in the shared (Redis) state,
so they are exported by a collector that reads it at scrape time (``GpuCollector``): any web
process's ``/metrics`` shows the monitor's data, and how old it is (``medai_gpu_sample_age_seconds``:
a stalled monitor shows). Backend attempts are counters of the process that made them (web or
worker), health checks (``medai_health_checks_total{model, outcome}``) the monitor's, gathered
from every process by prometheus_client's multiprocess mode (medai/metrics.py). Backend faults are also counted in Redis per minute, for the ModelMetric rows
the monitor writes (``services.aggregate_metrics``).

What counts against a model is decided here, once (``counts_against_model``): a backend fault.
A client that cancels (a clinician pressing Stop) or whose request the backend refuses for its
input (a 4xx) is not a failure of the model: not in its failure rate, not in the ``fails:``
buckets, not in ``medai_backend_attempts_total{outcome="failure"}``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from apps.gpu import shared

BACKEND_ATTEMPTS = Counter(
    "medai_backend_attempts_total",
    "Backend calls by model and outcome (ok, failure: a "
    "backend fault, client_error: refused for the request's input, cancelled: by the client)",
    ["model", "outcome"],
)
ATTEMPT_OUTCOMES = ("ok", "failure", "client_error", "cancelled")
HEALTH_CHECKS = Counter(
    "medai_health_checks",
    "Health checks of the model backends by the monitor, by model and outcome (ok, failure)",
    ["model", "outcome"],
)
# A client's own withdrawal, recorded as a request's error_code (older rows: FAILED client_disconnected).
CLIENT_CANCEL_CODES = frozenset({"client_disconnected", "cancelled"})
LEVELS = ("LOW", "NORMAL", "HIGH", "CRITICAL")
THERMAL = ("NORMAL", "REDUCE", "PAUSE", "STOP")
CIRCUIT_VALUE = {"closed": 0, "half_open": 1, "open": 2}


def record_health_check(model: str, ok: bool) -> None:
    """Count one health check (the monitor's process: gathered by the multiprocess mode)."""
    HEALTH_CHECKS.labels(model, "ok" if ok else "failure").inc()


def failure_bucket(ts: float | None = None) -> int:
    return int((ts or time.time()) // 60 * 60)


def counts_against_model(status: str, http_status: int | None, error_code: str) -> bool:
    """Whether a finished request (its InferenceTask status, HTTP status and error code) is a
    failure of the model that served it. Only backend faults are: a FAILED request that the
    client did not cancel and that was not refused for its input (a 4xx answer to the client)."""
    if status != "failed" or error_code in CLIENT_CANCEL_CODES:
        return False
    return not (http_status is not None and 400 <= http_status < 500)


def record_attempt(endpoint: Any, ok: bool | None = None, *, outcome: str | None = None) -> None:
    """Count one backend call: ``ok`` True/False, or an ``outcome`` of ATTEMPT_OUTCOMES. Only a
    ``failure`` (a backend fault) goes into the per-minute ``fails:`` buckets."""
    outcome = outcome or ("ok" if ok else "failure")
    if outcome not in ATTEMPT_OUTCOMES:
        raise ValueError(f"unknown attempt outcome {outcome!r}")
    BACKEND_ATTEMPTS.labels(endpoint.name, outcome).inc()
    if outcome == "failure":
        try:
            k = shared.key(f"fails:{failure_bucket()}")
            pipe = shared.client().pipeline(transaction=False)
            pipe.hincrby(k, endpoint.name, 1)
            pipe.expire(k, 3600)
            pipe.execute()
        except Exception:  # noqa: BLE001 - metrics never fail a request
            pass


class GpuCollector(Collector):
    def describe(self) -> list[Any]:
        return []  # no I/O when registering

    def collect(self) -> Any:
        try:
            v = shared.view()
        except Exception:  # noqa: BLE001
            return
        state = v.state
        labels = ["gpu", "name", "simulated"]
        fams = {
            "memory_used": GaugeMetricFamily("medai_gpu_memory_used_bytes", "GPU memory used", labels=labels),
            "memory_total": GaugeMetricFamily("medai_gpu_memory_total_bytes", "GPU memory total", labels=labels),
            "temperature": GaugeMetricFamily("medai_gpu_temperature_celsius", "GPU temperature", labels=labels),
            "power": GaugeMetricFamily("medai_gpu_power_watts", "GPU power draw", labels=labels),
            "utilization": GaugeMetricFamily("medai_gpu_utilization_ratio", "GPU utilization (0-1)", labels=labels),
        }
        for g in state.get("gpus") or []:
            lv = [str(g["index"]), g["name"], "true" if g.get("simulated") else "false"]
            fams["memory_used"].add_metric(lv, g["memory_used_mb"] * 2**20)
            fams["memory_total"].add_metric(lv, g["memory_total_mb"] * 2**20)
            if g.get("temperature_c") is not None:
                fams["temperature"].add_metric(lv, g["temperature_c"])
            if g.get("power_w") is not None:
                fams["power"].add_metric(lv, g["power_w"])
            if g.get("utilization_percent") is not None:
                fams["utilization"].add_metric(lv, g["utilization_percent"] / 100)
        yield from fams.values()
        sampled = GaugeMetricFamily(
            "medai_gpu_sample_age_seconds", "Seconds since the monitor last published the GPU state"
        )
        if state.get("ts"):
            sampled.add_metric([], max(time.time() - float(state["ts"]), 0.0))
        yield sampled
        decision = state.get("policy") or {}
        level = GaugeMetricFamily("medai_gpu_pressure_level", "Pressure level (0 LOW .. 3 CRITICAL)")
        level.add_metric([], LEVELS.index(decision["level"]) if decision.get("level") in LEVELS else 0)
        yield level
        thermal = GaugeMetricFamily("medai_gpu_thermal_state", "Thermal state (0 NORMAL .. 3 STOP)")
        thermal.add_metric([], THERMAL.index(decision["thermal"]) if decision.get("thermal") in THERMAL else 0)
        yield thermal
        for name, key in (
            ("medai_gpu_policy_concurrency", "concurrency"),
            ("medai_gpu_policy_batch_size", "batch_size"),
        ):
            fam = GaugeMetricFamily(name, f"Per-model {key} the GPU policy allows now")
            if key in decision:
                fam.add_metric([], decision[key])
            yield fam
        names = state.get("endpoint_names") or {}
        circ = GaugeMetricFamily(
            "medai_circuit_state", "Circuit breaker state (0 closed, 1 half-open, 2 open)", labels=["model"]
        )
        for endpoint_id, name in names.items():
            st = v.circuits.get(int(endpoint_id), ("closed", 0, 0.0))[0]
            circ.add_metric([name], CIRCUIT_VALUE.get(st, 0))
        yield circ
        health = GaugeMetricFamily("medai_backend_up", "Last health check answered (1) or not (0)", labels=["model"])
        for endpoint_id, name in names.items():
            entry = v.health.get(int(endpoint_id))
            if entry is not None:
                health.add_metric([name], 1 if entry["ok"] else 0)
        yield health


_registered = False


def register() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(GpuCollector())
        _registered = True
