from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.audit import display
from apps.gpu import circuit, services
from apps.gpu.models import (
    GpuSample,
    ModelMetric,
    ModelServer,
    PolicySettings,
    PressureLevel,
    SimulatedGpu,
    ThermalRule,
)


@admin.register(PressureLevel)
class PressureLevelAdmin(admin.ModelAdmin):
    list_display = ["level", "memory_from_percent", "models_allowed", "top_n", "batch_size", "concurrency"]
    list_editable = ["memory_from_percent", "models_allowed", "top_n", "batch_size", "concurrency"]
    ordering = ["memory_from_percent"]


@admin.register(ThermalRule)
class ThermalRuleAdmin(admin.ModelAdmin):
    list_display = ["state", "from_celsius", "load_factor", "admits_new_work", "admits_critical"]
    list_editable = ["from_celsius", "load_factor", "admits_new_work", "admits_critical"]


@admin.register(PolicySettings)
class PolicySettingsAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "recovery_margin_percent",
        "recovery_margin_celsius",
        "recovery_hold_seconds",
        "admission_wait_seconds",
        "urgent_reserve_percent",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not PolicySettings.objects.exists()


@admin.register(SimulatedGpu)
class SimulatedGpuAdmin(admin.ModelAdmin):
    """Steer the simulated provider: set a memory % or a temperature to put the system under pressure."""

    list_display = ["index", "name", "memory_total_mb", "memory_used_override_percent", "temperature_override_c"]
    list_editable = ["memory_used_override_percent", "temperature_override_c"]
    actions = ["clear_overrides"]

    @admin.action(description="Clear overrides (follow the simulated load again)")
    def clear_overrides(self, request: HttpRequest, queryset: QuerySet[SimulatedGpu]) -> None:
        queryset.update(memory_used_override_percent=None, temperature_override_c=None)


@admin.register(ModelServer)
class ModelServerAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "endpoint",
        "port",
        "gpu_index",
        "vram",
        "autostart",
        "desired_state",
        "state",
        "pid",
        "restarts",
        "last_error",
    ]
    list_filter = ["state", "gpu_index", "autostart"]
    readonly_fields = [
        "state",
        "pid",
        "restarts",
        "last_exit_code",
        "last_started_at",
        "last_error",
        "log_tail",
        "updated_at",
    ]
    actions = ["start", "stop", "restart"]

    @admin.display(description="VRAM", ordering="vram_mb")
    def vram(self, obj: ModelServer) -> str:
        return display.mib(obj.vram_mb) if obj.vram_mb else "—"

    @admin.action(description="Start (the monitor starts it within a second)")
    def start(self, request: HttpRequest, queryset: QuerySet[ModelServer]) -> None:
        for server in queryset:
            services.start_server(server, actor=request.user)
        self.message_user(request, f"Asked the monitor to start {queryset.count()} server(s).", messages.SUCCESS)

    @admin.action(description="Stop")
    def stop(self, request: HttpRequest, queryset: QuerySet[ModelServer]) -> None:
        for server in queryset:
            services.stop_server(server, actor=request.user)
        self.message_user(request, f"Asked the monitor to stop {queryset.count()} server(s).", messages.SUCCESS)

    @admin.action(description="Restart")
    def restart(self, request: HttpRequest, queryset: QuerySet[ModelServer]) -> None:
        for server in queryset:
            services.restart_server(server, actor=request.user)
        self.message_user(request, f"Asked the monitor to restart {queryset.count()} server(s).", messages.SUCCESS)


@admin.register(ModelMetric)
class ModelMetricAdmin(admin.ModelAdmin):
    list_display = [
        "bucket_start",
        "model_name",
        "requests",
        "failures",
        "failure_rate_percent",
        "latency_ema",
        "latency_p50",
        "latency_p95",
        "throughput",
        "circuit",
    ]
    list_filter = ["model_name"]
    date_hierarchy = "bucket_start"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="failure rate")
    def failure_rate_percent(self, obj: ModelMetric) -> str:
        return display.percent(obj.failure_rate) if obj.requests else "—"

    @admin.display(description="latency EMA", ordering="latency_ema_ms")
    def latency_ema(self, obj: ModelMetric) -> str:
        return display.ms(obj.latency_ema_ms)

    @admin.display(description="p50", ordering="latency_p50_ms")
    def latency_p50(self, obj: ModelMetric) -> str:
        return display.ms(obj.latency_p50_ms)

    @admin.display(description="p95", ordering="latency_p95_ms")
    def latency_p95(self, obj: ModelMetric) -> str:
        return display.ms(obj.latency_p95_ms)

    @admin.display(description="throughput", ordering="tokens_per_second")
    def throughput(self, obj: ModelMetric) -> str:
        return display.tokens_per_second(obj.tokens_per_second)

    @admin.display(description="circuit now")
    def circuit(self, obj: ModelMetric) -> str:
        if obj.endpoint_id is None:
            return "-"
        try:
            return circuit.state_of(obj.endpoint_id)[0]
        except Exception:  # noqa: BLE001
            return "?"


@admin.register(GpuSample)
class GpuSampleAdmin(admin.ModelAdmin):
    list_display = [
        "taken_at",
        "gpu_index",
        "name",
        "simulated",
        "memory",
        "temperature",
        "power",
        "utilization",
        "level",
        "thermal",
    ]
    list_filter = ["gpu_index", "simulated", "level", "thermal"]
    date_hierarchy = "taken_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="memory used", ordering="memory_used_mb")
    def memory(self, obj: GpuSample) -> str:
        share = obj.memory_used_mb / obj.memory_total_mb if obj.memory_total_mb else None
        return f"{display.mib(obj.memory_used_mb)} of {display.mib(obj.memory_total_mb)} ({display.percent(share)})"

    @admin.display(description="temperature", ordering="temperature_c")
    def temperature(self, obj: GpuSample) -> str:
        return display.celsius(obj.temperature_c)

    @admin.display(description="power", ordering="power_w")
    def power(self, obj: GpuSample) -> str:
        return display.watts(obj.power_w)

    @admin.display(description="utilization", ordering="utilization_percent")
    def utilization(self, obj: GpuSample) -> str:
        return display.percent_of(obj.utilization_percent)
