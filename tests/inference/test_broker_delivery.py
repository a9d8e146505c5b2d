"""A delivery (``QueueEntry.objects.deliver``, behind ``PriorityBroker._claim``) leases the head of the
queue in rank order and counts the delivery; a leased entry is not delivered again until its lease
ends. On PostgreSQL it is one statement (``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)
RETURNING``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.inference import broker
from apps.inference.models import QueueEntry

pytestmark = pytest.mark.django_db

KEY = "delivery-test"


def put(payload: str, priority: int, when, key: str = KEY):
    return QueueEntry.objects.create(
        key=key,
        priority=priority,
        rank=broker.rank_for(priority, when),
        enqueued_at=when,
        locked_until=when,
        payload=payload,
    )


def test_the_head_is_delivered_in_rank_order_leased_and_counted() -> None:
    now = timezone.now()
    put("low", 0, now)
    put("normal", 1, now + timedelta(seconds=1))
    put("critical", 3, now + timedelta(seconds=2))
    put("high", 2, now + timedelta(seconds=3))
    put("another queue's", 3, now, key="elsewhere")
    until = now + timedelta(seconds=60)

    delivered = QueueEntry.objects.deliver(KEY, now + timedelta(seconds=4), 3, until)

    assert [payload for _, payload in delivered] == ["critical", "high", "normal"]
    leased = QueueEntry.objects.filter(id__in=[pk for pk, _ in delivered])
    assert {(e.locked_until, e.deliveries) for e in leased} == {(until, 1)}
    rest = QueueEntry.objects.deliver(KEY, now + timedelta(seconds=4), 3, until)
    assert [payload for _, payload in rest] == ["low"]  # the leased ones are not handed out again
    assert QueueEntry.objects.deliver(KEY, now + timedelta(seconds=4), 3, until) == []


def test_an_entry_whose_lease_ended_is_delivered_again_and_counted_again() -> None:
    now = timezone.now()
    entry = put("once", 1, now)
    until = now + timedelta(seconds=60)
    assert QueueEntry.objects.deliver(KEY, now, 1, until) == [(entry.pk, "once")]
    assert QueueEntry.objects.deliver(KEY, until - timedelta(seconds=1), 1, until) == []
    assert QueueEntry.objects.deliver(KEY, until, 1, until + timedelta(seconds=60)) == [(entry.pk, "once")]
    entry.refresh_from_db()
    assert entry.deliveries == 2


def test_a_delivery_is_one_statement() -> None:
    now = timezone.now()
    put("only", 1, now)
    with CaptureQueriesContext(connection) as queries:
        [(_, payload)] = QueueEntry.objects.deliver(KEY, now, 1, now + timedelta(seconds=60))
    assert payload == "only"
    [query] = queries.captured_queries
    sql = query["sql"].upper()
    assert sql.startswith("UPDATE") and "RETURNING" in sql
    if connection.vendor == "postgresql":  # SQLite: the statement holds the database's write lock
        assert "FOR UPDATE SKIP LOCKED" in sql
