"""``GET /v1/system/status``: what the System page shows (thin over apps/inference/system_status.py)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import principal_of
from apps.accounts.permissions import CanReadGpu
from apps.gpu.api.serializers import LEVELS, THERMAL, GpuSerializer, PolicyNowSerializer
from apps.inference import system_status
from apps.inference.api.serializers import ErrorSerializer


class DepthByPrioritySerializer(serializers.Serializer):
    critical = serializers.IntegerField()
    high = serializers.IntegerField()
    normal = serializers.IntegerField()
    low = serializers.IntegerField()


class QueueCountsSerializer(serializers.Serializer):
    depth = DepthByPrioritySerializer()
    queued = serializers.IntegerField()
    processing = serializers.IntegerField()
    oldest_wait_s = serializers.FloatField()


class SystemQueueSerializer(serializers.Serializer):
    organization = QueueCountsSerializer(
        help_text="The caller's organization's async tasks (what a task's position counts); never other organizations'."
    )
    yours = QueueCountsSerializer(help_text="What GET /v1/async/health counts: the tasks the caller may see.")
    workers_alive = serializers.IntegerField()
    queue_max = serializers.IntegerField()
    emergency_mode = serializers.BooleanField()


class SystemBackendSerializer(serializers.Serializer):
    model = serializers.CharField()
    kind = serializers.CharField()
    up = serializers.BooleanField(allow_null=True, help_text="The last health check; null: none in 3 intervals.")
    checked_seconds_ago = serializers.FloatField(allow_null=True)
    circuit = serializers.ChoiceField(["closed", "half_open", "open"])
    consecutive_failures = serializers.IntegerField()
    latency_ema_ms = serializers.FloatField(allow_null=True)
    allowed_now = serializers.BooleanField(help_text="The GPU policy lets this model take work now.")


class SystemStatusSerializer(serializers.Serializer):
    provider = serializers.ChoiceField(["nvml", "simulated", "none", "test"])
    simulated = serializers.BooleanField()
    sampled_at = serializers.FloatField(allow_null=True)
    age_seconds = serializers.FloatField(allow_null=True)
    stale = serializers.BooleanField()
    monitor_running = serializers.BooleanField()
    pressure_level = serializers.ChoiceField(LEVELS)
    thermal_state = serializers.ChoiceField(THERMAL)
    policy = PolicyNowSerializer()
    gpus = GpuSerializer(many=True)
    backends = SystemBackendSerializer(many=True)
    queue = SystemQueueSerializer()
    stale_after_seconds = serializers.FloatField(help_text="A GPU sample older than this is stale.")
    health_interval_seconds = serializers.FloatField()


class SystemStatusView(APIView):
    """``GET /v1/system/status``: GPU state and policy, the models allowed now, queue depth by
    priority (the caller's organization's, and their own) and each backend's health and circuit.
    Needs ``gpu:read`` (every role has it)."""

    permission_classes = [CanReadGpu]

    @extend_schema(
        responses={200: SystemStatusSerializer, 401: ErrorSerializer, 403: ErrorSerializer},
        operation_id="system_status",
    )
    def get(self, request: Request) -> Response:
        return Response(system_status.system_status(principal_of(request)))
