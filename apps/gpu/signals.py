"""Share an admin edit of the policy table with every process at once (no monitor needed)."""

import logging
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete, post_save

from apps.gpu import policy
from apps.gpu.models import PolicySettings, PressureLevel, ThermalRule


def _publish(**kwargs: Any) -> None:
    def publish() -> None:
        try:
            policy.publish_table()
        except Exception:  # the monitor republishes it within seconds
            logging.getLogger("medai.gpu").warning("could not publish the GPU policy table", exc_info=True)

    transaction.on_commit(publish)


for _model in (PressureLevel, ThermalRule, PolicySettings):
    post_save.connect(_publish, sender=_model, dispatch_uid=f"gpu-policy-save-{_model.__name__}")
    post_delete.connect(_publish, sender=_model, dispatch_uid=f"gpu-policy-delete-{_model.__name__}")
