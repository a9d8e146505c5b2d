"""Websocket routes of every app (apps add theirs here)."""

from django.urls import path

from apps.gpu.consumers import GpuConsumer
from apps.inference.consumers import StatusConsumer
from apps.inference.dashboard.consumer import DashboardConsumer

websocket_urlpatterns = [
    path("ws/tasks/", StatusConsumer.as_asgi()),
    path("ws/status/", StatusConsumer.as_asgi()),  # the older name of /ws/tasks/
    path("ws/gpu/", GpuConsumer.as_asgi()),
    path("ws/admin/dashboard/", DashboardConsumer.as_asgi()),  # staff admin pages, by the session
]
