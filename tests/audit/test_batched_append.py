"""Events appended in one batch (``record_events``: the background writers' path) take consecutive
``seq`` in list order, leave the head naming the last one and its count, and the chain verifies;
the compiled-once INSERT (apps/audit/rows.py) writes exactly the columns ``bulk_create`` writes."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.audit import rows
from apps.audit.models import AuditChainHead, AuditEvent
from apps.audit.services import new_event, record_event, record_events, verify_chain

pytestmark = pytest.mark.django_db


def _events(alice, n: int, tag: str) -> list[AuditEvent]:
    at = timezone.now().replace(microsecond=123456)
    return [
        new_event(
            "note",
            actor=alice,
            location="demo",
            ip="10.0.0.7" if i % 2 else None,
            user_agent=f"agent {i}",
            api_key_id=i or None,
            organization_id=None,
            object_type="inference.inferencetask",
            object_id=f"{tag}-{i}",
            details={"i": i, "unicode": "ünï", "none": None},
            created_at=at,
        )
        for i in range(n)
    ]


def test_a_batch_is_numbered_in_order_and_the_head_names_its_last(alice):
    first = record_event("auth.login", actor=alice)
    batch = record_events(_events(alice, 5, "a"))
    seqs = [e.seq for e in batch]
    assert seqs == list(range(first.seq + 1, first.seq + 6))
    stored = list(AuditEvent.objects.filter(seq__in=seqs).order_by("seq").values_list("seq", "object_id", "hash"))
    assert stored == [(e.seq, e.object_id, e.hash) for e in batch]
    assert batch[0].prev_hash == first.hash
    assert all(b.prev_hash == a.hash for a, b in zip(batch, batch[1:], strict=False))
    head = AuditChainHead.objects.get(id=1)
    assert (head.last_seq, head.last_hash, head.count) == (batch[-1].seq, batch[-1].hash, 6)
    again = record_events(_events(alice, 3, "b"))
    assert again[0].seq == batch[-1].seq + 1 and again[0].prev_hash == batch[-1].hash
    report = verify_chain()
    assert report.ok and report.checked == 9


def test_compiled_insert_writes_what_bulk_create_writes(alice):
    fast, stock = _events(alice, 3, "x"), _events(alice, 3, "x")
    for i, (a, b) in enumerate(zip(fast, stock, strict=True)):
        a.prev_hash = b.prev_hash = "0" * 64
        a.hash, b.hash, a.key_id, b.key_id = f"fast{i}", f"stock{i}", "k", "k"
    with transaction.atomic():
        assert rows.insert(AuditEvent, fast, connection.alias, with_pk=False)
    AuditEvent.objects.bulk_create(stock)
    got = {e["hash"]: e for e in AuditEvent.objects.values()}
    for i in range(3):
        a, b = dict(got[f"fast{i}"]), dict(got[f"stock{i}"])
        for name in ("seq", "hash"):
            a.pop(name), b.pop(name)
        assert a == b
