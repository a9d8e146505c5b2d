"""Request priorities: CRITICAL > HIGH > NORMAL > LOW.

Admission (apps/gpu: the policy's limits, the slots' priority-ordered lines) and the queue
(apps/inference) both order work by them, so they live in the lowest layer that needs them and
apps.inference uses this same class (``apps.inference.models.Priority`` is this one).
"""

from __future__ import annotations

from django.db import models


class Priority(models.IntegerChoices):
    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3
