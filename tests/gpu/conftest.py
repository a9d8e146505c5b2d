"""GPU test helpers: readings, publishing a policy decision as the monitor would."""

from __future__ import annotations

from typing import Any

import pytest

from apps.gpu import policy, shared
from apps.gpu.providers import GpuReading


def reading(percent: float, temp: float = 40.0, index: int = 0, total: int = 10_000) -> GpuReading:
    return GpuReading(
        index=index,
        name=f"test GPU {index}",
        memory_total_mb=total,
        memory_used_mb=int(total * percent / 100),
        temperature_c=temp,
        simulated=True,
    )


def publish_decision(
    readings: list[GpuReading],
    models: list[policy.ModelInfo] | None = None,
    table: dict[str, Any] | None = None,
    **override: Any,
) -> dict[str, Any]:
    """Publish the decision for these readings, as the monitor does, and drop this process's view."""
    decision = policy.evaluate(table or policy.DEFAULT_TABLE, readings, models or [], policy.GpuTrackers())
    decision.update(override)
    shared.publish(
        "state",
        {"ts": 0, "provider": "test", "simulated": True, "gpus": [r.as_dict() for r in readings], "policy": decision},
        ttl=60,
    )
    shared.invalidate()
    return decision


@pytest.fixture
def fresh_view(settings):
    """Every read goes to Redis (no per-process caching), so a test sees its own writes at once."""
    settings.MEDAI_GPU_STATE_CACHE_SECONDS = 0.0
    yield
