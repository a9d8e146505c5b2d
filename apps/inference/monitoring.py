"""What the monitor (apps/gpu/monitor.py) is handed about the models, which are inference's:
their inventory, their health checks and their metrics (apps/gpu/inventory.py). Registered by
``InferenceConfig.ready()``, so a monitor started any way (``manage.py monitor``, the launcher,
a test) has it."""

from __future__ import annotations

from apps.gpu.inventory import ModelSource
from apps.gpu.policy import ModelInfo
from apps.inference.backend_health import check_health
from apps.inference.model_metrics import aggregate_metrics
from apps.inference.models import ModelEndpoint


def model_infos() -> list[ModelInfo]:
    """Every model endpoint, enabled or not (the monitor adds the GPU of its supervised server)."""
    return [
        ModelInfo(pk, name, rank, vram, None, enabled)
        for pk, name, rank, vram, enabled in ModelEndpoint.objects.values_list(
            "pk", "name", "rank", "vram_mb", "enabled"
        )
    ]


SOURCE = ModelSource(models=model_infos, check_health=check_health, aggregate_metrics=aggregate_metrics)
