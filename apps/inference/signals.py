from typing import Any

from django.db.models.signals import post_delete, post_save

from apps.inference import router
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint


def _invalidate(**kwargs: Any) -> None:
    router.invalidate()


for _model in (ModelEndpoint, AgentRoute, AgentRouteEntry):
    post_save.connect(_invalidate, sender=_model, dispatch_uid=f"route-invalidate-save-{_model.__name__}")
    post_delete.connect(_invalidate, sender=_model, dispatch_uid=f"route-invalidate-delete-{_model.__name__}")
