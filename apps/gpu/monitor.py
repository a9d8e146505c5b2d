"""The monitor process: samples the GPUs every 2 s, health-checks every backend every 10 s,
supervises local model servers, aggregates per-model metrics and publishes it all.

    python manage.py monitor          # or, from a launcher:  apps.gpu.monitor.run_monitor(stop_event)

Out of memory (a supervised server's log says so when it dies): new work is paused, in-flight
requests drain (up to 30 s), the largest running server is stopped, and work resumes with the
pressure level held at least at HIGH (smaller batches, less concurrency) for 5 minutes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections

from apps.gpu import inventory, policy, services, shared, slots
from apps.gpu.models import ModelServer
from apps.gpu.providers import Provider, get_provider
from apps.gpu.supervisor import Supervisor

logger = logging.getLogger("medai.gpu.monitor")

TICK = 0.5
METRICS_EVERY = 10.0
HISTORY_EVERY = 60.0
PRUNE_EVERY = 3600.0
DRAIN_TIMEOUT = 30.0
OOM_RECOVERY_SECONDS = 300.0


class Monitor:
    def __init__(
        self,
        provider: Provider | None = None,
        *,
        supervise: bool = True,
        models: inventory.ModelSource | None = None,
    ) -> None:
        self.provider = provider or get_provider()
        # The models, their health checks and metrics: handed by apps.inference (inventory.py).
        self.models = models or inventory.registered()
        self.trackers = policy.GpuTrackers()
        self.supervisor = Supervisor(on_oom=self.begin_oom) if supervise else None
        self.table: dict[str, Any] = policy.DEFAULT_TABLE
        self.oom: dict[str, Any] | None = None  # {"phase": "draining"|"recovering", "since", "until", "server"}
        self.last: dict[str, float] = {}
        self.decision: dict[str, Any] = {}
        self.readings: list[Any] = []
        self.circuits: dict[int, str] = {}
        self.ema_ms: dict[str, float] | None = None  # refreshed with the metrics, every 10 s
        self.pushed: tuple[Any, ...] | None = None
        self.pushed_at = 0.0

    # --- out of memory ----------------------------------------------------------------------

    def begin_oom(self, server: ModelServer) -> None:
        if self.oom is not None and self.oom["phase"] == "draining":
            return  # already handling one; a crash loop must not restart the drain
        logger.error("model server %s ran out of GPU memory: pausing new work and draining", server.name)
        self.oom = {"phase": "draining", "since": time.monotonic(), "server": server.name}
        services.audit("gpu.oom", failure=True, obj=server, server=server.name, response="pause new work and drain")
        self.sample()  # publish the pause now, not at the next sample

    def _advance_oom(self) -> None:
        if self.oom is None:
            return
        now = time.monotonic()
        if self.oom["phase"] == "draining":
            busy = sum(slots.in_flight_by_endpoint().values())
            if busy and now - self.oom["since"] < DRAIN_TIMEOUT:
                return
            largest = (
                ModelServer.objects.filter(state__in=[ModelServer.State.RUNNING, ModelServer.State.STARTING])
                .order_by("-vram_mb")
                .first()
            )
            if largest is not None and self.supervisor is not None:
                logger.warning(
                    "stopping the largest model server %s (%s MiB) after out-of-memory", largest.name, largest.vram_mb
                )
                self.supervisor.stop_server(largest)
                self.oom["stopped"] = largest.name
            self.oom.update(phase="recovering", until=now + OOM_RECOVERY_SECONDS)
        elif now >= self.oom["until"]:
            logger.info("out-of-memory recovery over")
            self.oom = None

    # --- one pass -------------------------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        readings = self.readings = self.provider.sample()
        models = self._model_infos()
        floor = None
        if self.oom is not None:
            floor = "CRITICAL" if self.oom["phase"] == "draining" else "HIGH"
        decision = policy.evaluate(self.table, readings, models, self.trackers, level_floor=floor)
        if self.oom is not None and self.oom["phase"] == "draining":
            decision.update(admit_new=False, admit_critical=False, concurrency=0, batch_size=1)
        extra = {
            "oom": {k: v for k, v in self.oom.items() if k in ("phase", "server", "stopped")} if self.oom else None
        }
        names = {str(m.id): m.name for m in models}
        state = services.publish_state(self.provider, readings, decision, extra, self.ema_ms, endpoint_names=names)
        if self.decision.get("level") != decision["level"] or self.decision.get("thermal") != decision["thermal"]:
            logger.info(
                "GPU policy: pressure %s, thermal %s, batch %s, concurrency %s, models %s",
                decision["level"],
                decision["thermal"],
                decision["batch_size"],
                decision["concurrency"],
                "all" if decision["allowed"] is None else decision["allowed"],
            )
            if self.decision:
                services.audit(
                    "gpu.policy.changed",
                    level=decision["level"],
                    thermal=decision["thermal"],
                    previous_level=self.decision.get("level"),
                    batch_size=decision["batch_size"],
                    concurrency=decision["concurrency"],
                    simulated=self.provider.simulated,
                )
        self._audit_circuits(state.get("endpoint_names") or {})
        self.decision = decision
        # Websocket pushes cost a channel-layer connection each: send changes, and a heartbeat.
        summary = (
            json.dumps(decision, sort_keys=True),
            tuple((g["index"], round(g["memory_percent"]), round(g.get("temperature_c") or 0)) for g in state["gpus"]),
        )
        if summary != self.pushed or time.monotonic() - self.pushed_at > 10:
            _push_ws(state)
            self.pushed, self.pushed_at = summary, time.monotonic()
        return state

    def _model_infos(self) -> list[policy.ModelInfo]:
        """Every model, on the GPU of its supervised server (if it has one here)."""
        gpu_of = dict(ModelServer.objects.exclude(endpoint=None).values_list("endpoint_id", "gpu_index"))
        return [dataclasses.replace(m, gpu_index=gpu_of.get(m.id, m.gpu_index)) for m in self.models.models()]

    def _audit_circuits(self, names: dict[str, str]) -> None:
        """Circuit transitions happen on request paths (no DB there); the monitor audits them."""
        current = {pk: s[0] for pk, s in shared.view().circuits.items()}
        for pk in set(current) | set(self.circuits):
            before, after = self.circuits.get(pk, "closed"), current.get(pk, "closed")
            if before != after:
                services.audit(
                    "gpu.circuit." + after, failure=after == "open", model=names.get(str(pk), str(pk)), previous=before
                )
        self.circuits = current

    def due(self, name: str, every: float, now: float) -> bool:
        if now - self.last.get(name, -1e9) >= every:
            self.last[name] = now
            return True
        return False

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        close_old_connections()
        try:
            if self.supervisor is not None:
                self.supervisor.reconcile()
            self._advance_oom()
            if self.due("table", 30.0, now):
                self.table = policy.publish_table()
            if self.due("sample", settings.MEDAI_GPU_SAMPLE_INTERVAL, now):
                self.sample()
            if self.due("health", settings.MEDAI_HEALTH_INTERVAL, now):
                self.models.check_health()
            if self.due("metrics", METRICS_EVERY, now):
                self.models.aggregate_metrics()
                self.ema_ms = services.latest_ema()
            if self.due("history", HISTORY_EVERY, now) and self.decision:
                services.record_history(self.readings, self.decision)
            if self.due("prune", PRUNE_EVERY, now):
                services.prune_history()
        finally:
            close_old_connections()

    def run(self, stop: threading.Event) -> None:
        logger.info(
            "monitor started (GPU provider: %s%s)",
            self.provider.name,
            ", SIMULATED data" if self.provider.simulated else "",
        )
        if self.supervisor is not None:
            self.supervisor.adopt_rows()
        try:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    self.tick(started)
                except Exception:  # the monitor outlives any one bad pass
                    logger.exception("monitor pass failed")
                stop.wait(max(0.0, TICK - (time.monotonic() - started)))
        finally:
            if self.supervisor is not None:
                self.supervisor.stop_all()
            self.provider.close()
            logger.info("monitor stopped")


def _push_ws(state: dict[str, Any]) -> None:
    """Live GPU state to the ``gpu`` websocket group."""
    try:
        layer = get_channel_layer()
        if layer is not None:
            async_to_sync(layer.group_send)(
                "gpu",
                {
                    "type": "gpu.update",
                    "data": {
                        "sampled_at": state["ts"],
                        "simulated": state["simulated"],
                        "policy": state["policy"],
                        "gpus": state["gpus"],
                    },
                },
            )
    except Exception:  # a websocket hiccup must not stop the monitor
        logger.debug("gpu websocket push failed", exc_info=True)


def run_monitor(stop: threading.Event | None = None, provider: Provider | None = None) -> None:
    """Run the monitor until ``stop`` is set (for a launcher: run it in a thread or a process).
    On return every model server it started has been stopped."""
    shared.invalidate()
    Monitor(provider).run(stop or threading.Event())
