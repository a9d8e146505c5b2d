"""What the GPU layer is handed about the models it serves.

apps.gpu knows GPUs, policy, slots and servers; the models themselves (their endpoints, their
health checks, the records of the requests they served) belong to apps.inference, the layer above,
which gpu never imports. The monitor needs three things from there, handed to it as a
``ModelSource``:

- ``models()``: every model endpoint, enabled or not, as a ``policy.ModelInfo`` (the monitor
  itself adds the GPU that each one's supervised server runs on);
- ``check_health()``: health-check every enabled backend and share the results;
- ``aggregate_metrics()``: write the per-model ModelMetric rows from the request records.

apps.inference registers its source in its ``AppConfig.ready()`` (so every process that runs a
monitor, whichever way it was started, has it); a ``Monitor`` takes the registered one unless it is
handed another. Until one is registered the monitor sees no models and checks nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from apps.gpu.policy import ModelInfo


@dataclass(frozen=True)
class ModelSource:
    models: Callable[[], list[ModelInfo]]
    check_health: Callable[[], object]
    aggregate_metrics: Callable[[], object]


NO_MODELS = ModelSource(models=list, check_health=dict, aggregate_metrics=int)

_registered: ModelSource = NO_MODELS


def register(source: ModelSource) -> None:
    """Hand the monitor its models (apps.inference does, in ``AppConfig.ready()``)."""
    global _registered
    _registered = source


def registered() -> ModelSource:
    return _registered
