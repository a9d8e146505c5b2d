from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import CanReadGpu
from apps.gpu import services
from apps.gpu.api.serializers import GpuStatusSerializer


class GpuStatusView(APIView):
    """``GET /v1/gpu/status``: per GPU memory, temperature, power, utilization, pressure level,
    thermal state, the models on it, and whether the data is simulated; plus the policy in force
    and each backend's health, circuit and latency."""

    permission_classes = [CanReadGpu]

    @extend_schema(responses=GpuStatusSerializer, operation_id="gpu_status")
    def get(self, request: Request) -> Response:
        return Response(services.status_payload())
