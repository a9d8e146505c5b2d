"""On PostgreSQL the audit table refuses UPDATE, DELETE and TRUNCATE from anyone, raw SQL included
(a trigger; the ORM refuses them before they are sent, on every database)."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditEvent
from apps.audit.services import record_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the trigger exists on PostgreSQL only (run with DATABASE_URL=postgres://...)")


def _refused(sql: str, *params: object) -> str:
    with pytest.raises(DatabaseError) as caught, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, list(params))
    return str(caught.value)


def test_raw_update_is_refused(postgres, alice):
    event = record_event("auth.login", actor=alice)
    message = _refused("UPDATE audit_auditevent SET outcome = 'failure' WHERE seq = %s", event.seq)
    assert "append-only: UPDATE refused" in message
    assert AuditEvent.objects.get(seq=event.seq).outcome == "success"


def test_raw_delete_is_refused(postgres, alice):
    event = record_event("auth.login", actor=alice)
    assert "append-only: DELETE refused" in _refused("DELETE FROM audit_auditevent WHERE seq = %s", event.seq)
    assert AuditEvent.objects.filter(seq=event.seq).exists()


def test_truncate_is_refused(postgres, alice):
    record_event("auth.login", actor=alice)
    assert "append-only: TRUNCATE refused" in _refused("TRUNCATE audit_auditevent")
    assert AuditEvent.objects.count() == 1


def test_appending_still_works_and_the_orm_refuses_before_the_database(alice):
    first = record_event("auth.login", actor=alice)
    record_event("auth.logout", actor=alice)
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(seq=first.seq).update(outcome="failure")
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 2
