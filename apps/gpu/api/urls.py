from django.urls import path

from apps.gpu.api import views

urlpatterns = [
    path("gpu/status", views.GpuStatusView.as_view(), name="gpu-status"),
]
