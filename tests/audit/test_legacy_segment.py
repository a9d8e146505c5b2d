"""Events written before the chain was keyed (plain SHA-256, no key id) still verify, as the
legacy segment at the start of the chain: the first keyed event seals it (editing a legacy event
then breaks that link), and an unkeyed event after keyed ones is reported as a forgery."""

from __future__ import annotations

import pytest
from django.db import connection
from django.utils import timezone

from apps.audit import chain
from apps.audit.models import AuditChainHead, AuditEvent
from apps.audit.services import record_event
from tests.audit.tampering import attack, audit_verify, audit_verify_ok

pytestmark = pytest.mark.django_db


def write_legacy(n: int) -> list[AuditEvent]:
    """What the unkeyed code wrote: sha256 links, no key id, a head row with only the last hash."""
    prev, written = chain.GENESIS, []
    for i in range(n):
        event = AuditEvent(created_at=timezone.now(), action="auth.login", actor="alice", details={"i": i})
        event.prev_hash, event.hash = prev, chain.legacy_digest(prev, event)
        prev = event.hash
        event.save(force_insert=True)
        written.append(event)
    AuditChainHead.objects.create(id=1, last_hash=prev)
    return written


def test_a_legacy_segment_verifies_and_is_sealed_by_the_first_keyed_event(alice):
    legacy = write_legacy(3)
    keyed = record_event("auth.logout", actor=alice)
    assert keyed.prev_hash == legacy[-1].hash and keyed.key_id
    out = audit_verify_ok()
    assert (
        f"legacy segment seq {legacy[0].seq}-{legacy[-1].seq} (unkeyed SHA-256, sealed by the first keyed event)" in out
    )
    assert AuditChainHead.objects.get().count == 4


def test_an_edited_legacy_event_is_caught(alice):
    legacy = write_legacy(3)
    record_event("auth.logout", actor=alice)
    attack("UPDATE audit_auditevent SET actor = 'mallory' WHERE seq = %s", [legacy[1].seq])
    assert f"seq {legacy[1].seq}: edited" in audit_verify()


def test_an_unkeyed_event_after_keyed_ones_is_a_forgery(alice):
    keyed = record_event("auth.login", actor=alice)
    forged = AuditEvent(created_at=timezone.now(), action="auth.login", actor="mallory", details={})
    forged.prev_hash, forged.hash = keyed.hash, chain.legacy_digest(keyed.hash, forged)
    with connection.cursor():
        forged.save(force_insert=True)  # the ORM appends; only the chain can tell it is forged
    assert f"seq {forged.seq}: downgraded" in audit_verify()
