"""The audit trail is append-only through the ORM and keyed-hash-chained: events (one by one or in
bulk) extend one chain that verifies; details are redacted. (Tampering: test_audit_verify_catches_tampering.py.)"""

from __future__ import annotations

import pytest
from django.core.management import call_command

from apps.audit.models import AuditEvent
from apps.audit.services import record_event, verify_chain

pytestmark = pytest.mark.django_db


def test_events_chain_and_verify(alice):
    first = record_event("auth.login", actor=alice, location="demo", ip="10.0.0.1")
    second = record_event("auth.logout", actor=alice, location="demo")
    assert second.prev_hash == first.hash
    assert first.key_id and second.key_id == first.key_id  # keyed under MEDAI_AUDIT_KEYS' first key
    report = verify_chain()
    assert report.ok and report.checked == 2
    call_command("audit_verify")


def test_details_are_redacted(alice):
    event = record_event("note", actor=alice, details={"text": "Patient John Smith, SSN 123-45-6789, a@b.org"})
    assert event.details == {"text": "Patient [NAME], SSN [SSN], [EMAIL]"}


def test_update_and_delete_are_refused(alice):
    event = record_event("auth.login", actor=alice)
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.update(action="x")


def test_events_written_in_bulk_extend_one_valid_chain(alice):
    from apps.audit.services import new_event, record_events

    before = record_event("auth.login", actor=alice, location="demo")
    bulk = record_events(
        [
            new_event("inference.complete", actor=alice, object_id=str(i), details={"note": "Dr. John Smith asked"})
            for i in range(5)
        ]
    )
    after = record_event("auth.logout", actor=alice)
    chain = list(AuditEvent.objects.order_by("seq"))
    assert [e.seq for e in chain] == [before.seq, *(e.seq for e in bulk), after.seq]
    assert [e.prev_hash for e in chain[1:]] == [e.hash for e in chain[:-1]]
    assert "Smith" not in str(bulk[0].details)  # redacted like record_event
    assert verify_chain().ok and verify_chain().checked == 7
    call_command("audit_verify")
