"""The record writer's INSERT (apps/inference/recorder.py ``_insert_tasks``: compiled once, run
for every row) writes exactly what ``bulk_create`` would: every field, encrypted ones included,
nulls and defaults as they are."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from apps.inference.models import InferenceTask
from apps.inference.recorder import _insert_tasks

pytestmark = pytest.mark.django_db

FIELDS = [f.attname for f in InferenceTask._meta.concrete_fields]


def _tasks(alice, demo, n: int, now) -> list[InferenceTask]:
    return [
        InferenceTask(
            mode=InferenceTask.Mode.SYNC,
            status=InferenceTask.Status.FAILED if i % 2 else InferenceTask.Status.COMPLETED,
            priority=i % 4,
            user_id=alice.pk,
            location_id=demo.pk,
            requested_model=f"model-{i}",
            stream=bool(i % 2),
            request={"messages": [{"role": "user", "content": f"question {i} ünïcode"}]} if i % 3 else None,
            result={"choices": [{"message": {"content": "answer"}}]} if i == 1 else None,
            error_code="backend_error" if i % 2 else "",
            error_message="It broke: 'quotes' and a backslash \\" if i % 2 else "",
            http_status=200 + i,
            prompt_tokens=5 * i,
            completion_tokens=i,
            correlation_id=uuid.uuid4().hex,
            created_at=now - timedelta(seconds=i),
            finished_at=now if i % 2 == 0 else None,
            latency_ms=None if i == 2 else i * 10,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [1, 7])
def test_rows_read_back_as_bulk_create_writes_them(alice, demo, n):
    now = timezone.now()
    fast, stock = _tasks(alice, demo, n, now), _tasks(alice, demo, n, now)
    with transaction.atomic():
        _insert_tasks(fast)
    InferenceTask.objects.bulk_create(stock)
    for a, b in zip(fast, stock, strict=True):
        assert not a._state.adding
        read_a = InferenceTask.objects.get(pk=a.pk)
        read_b = InferenceTask.objects.get(pk=b.pk)
        for name in FIELDS:
            if name in ("id", "correlation_id"):
                continue
            assert getattr(read_a, name) == getattr(read_b, name) == getattr(a, name), name
        assert read_a.correlation_id == a.correlation_id


def test_nothing_to_insert_writes_nothing():
    _insert_tasks([])
    assert not InferenceTask.objects.exists()
