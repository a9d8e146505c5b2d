"""Audit fixtures: the events of a test, read back."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from apps.audit.models import AuditEvent
from tests.conftest import records_written


@pytest.fixture
def events() -> Callable[..., list[AuditEvent]]:
    """The events written so far (buffered ones included), optionally of one action, in order."""

    def read(action: str | None = None) -> list[AuditEvent]:
        records_written()
        qs = AuditEvent.objects.order_by("seq")
        return list(qs.filter(action=action) if action else qs)

    return read
