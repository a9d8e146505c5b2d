"""The documented shape of ``GET /v1/gpu/status`` (for the OpenAPI schema; the view renders a dict)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

LEVELS = ["LOW", "NORMAL", "HIGH", "CRITICAL"]
THERMAL = ["NORMAL", "REDUCE", "PAUSE", "STOP"]


class GpuMemorySerializer(serializers.Serializer):
    total_mb = serializers.IntegerField()
    used_mb = serializers.IntegerField()
    free_mb = serializers.IntegerField()
    used_percent = serializers.FloatField()


class GpuProcessSerializer(serializers.Serializer):
    pid = serializers.IntegerField()
    used_mb = serializers.IntegerField()


class GpuSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    name = serializers.CharField()
    simulated = serializers.BooleanField(help_text="True: made by the simulated provider, not read from hardware.")
    memory = GpuMemorySerializer()
    temperature_c = serializers.FloatField(allow_null=True)
    power_w = serializers.FloatField(allow_null=True)
    utilization_percent = serializers.FloatField(allow_null=True)
    pressure_level = serializers.ChoiceField(LEVELS)
    thermal_state = serializers.ChoiceField(THERMAL)
    models = serializers.ListField(child=serializers.CharField(), help_text="Models whose servers run on this GPU.")
    processes = GpuProcessSerializer(many=True)


@extend_schema_field({"oneOf": [{"type": "string", "enum": ["all"]}, {"type": "array", "items": {"type": "string"}}]})
class AllowedModelsField(serializers.JSONField):
    pass


class PolicyNowSerializer(serializers.Serializer):
    batch_size = serializers.IntegerField()
    concurrency = serializers.IntegerField(help_text="Requests in flight per model; 0: new work waits.")
    reserved_for_urgent = serializers.IntegerField(
        help_text="Of those, slots only CRITICAL and HIGH requests may hold (NORMAL and LOW stop short of them)."
    )
    allowed_models = AllowedModelsField()
    admits_new_work = serializers.BooleanField()
    admits_critical = serializers.BooleanField()
    paused_for_oom = serializers.BooleanField()


class BackendStateSerializer(serializers.Serializer):
    model = serializers.CharField()
    healthy = serializers.BooleanField(allow_null=True, help_text="Last health check; null: not checked yet.")
    circuit = serializers.ChoiceField(["closed", "half_open", "open"])
    latency_ema_ms = serializers.FloatField(allow_null=True)


class GpuStatusSerializer(serializers.Serializer):
    provider = serializers.ChoiceField(["nvml", "simulated", "none", "test"])
    simulated = serializers.BooleanField()
    sampled_at = serializers.FloatField(allow_null=True, help_text="Unix time of the monitor's last sample.")
    age_seconds = serializers.FloatField(allow_null=True, help_text="How old that sample is; null: none.")
    stale = serializers.BooleanField(
        help_text="True when the sample is older than a few sample intervals (MEDAI_GPU_STALE_AFTER) or there is none."
    )
    monitor_running = serializers.BooleanField(help_text="False when the monitor stopped publishing (stale).")
    pressure_level = serializers.ChoiceField(LEVELS)
    thermal_state = serializers.ChoiceField(THERMAL)
    policy = PolicyNowSerializer()
    gpus = GpuSerializer(many=True)
    backends = BackendStateSerializer(many=True)
    servers = serializers.ListField(child=serializers.DictField(), help_text="Supervised model servers.")
