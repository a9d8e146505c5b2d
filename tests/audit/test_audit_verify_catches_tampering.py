"""``manage.py audit_verify`` catches each way someone who can write the database (but does not
hold the audit key) can tamper with the trail, and names the seq where it happened: an edited,
deleted or inserted row, a truncated tail, a tail rewritten under another key, a wiped table,
and a reordered or forged chain. Each starts from a chain that verified and was checkpointed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.db import connection

from apps.audit import chain
from apps.audit.models import AuditEvent
from apps.audit.services import record_event
from tests.audit.tampering import attack, audit_verify, audit_verify_ok

pytestmark = pytest.mark.django_db


@pytest.fixture
def trail(alice) -> list[AuditEvent]:
    """Six events, verified and checkpointed (audit_verify exports a checkpoint of the head)."""
    events = [
        record_event("auth.login", actor=alice, location="demo", ip="10.0.0.1", details={"i": i}) for i in range(6)
    ]
    assert "audit chain OK: 6 events verified" in audit_verify_ok()
    return events


def test_an_edited_row_is_caught_at_its_seq(trail):
    victim = trail[2]
    attack("UPDATE audit_auditevent SET outcome = 'failure' WHERE seq = %s", [victim.seq])
    message = audit_verify()
    assert f"BROKEN at seq={victim.seq}" in message
    assert f"seq {victim.seq}: edited" in message


def test_a_deleted_row_is_caught_at_the_event_after_it(trail):
    victim, after = trail[3], trail[4]
    attack("DELETE FROM audit_auditevent WHERE seq = %s", [victim.seq])
    message = audit_verify()
    assert f"seq {after.seq}: deleted" in message
    assert f"between seq {trail[2].seq} and seq {after.seq}" in message
    assert "rewritten" in message  # the checkpoint counted one event more up to the head


def test_an_inserted_row_is_caught_between_the_events_it_was_slipped_between(trail, alice):
    last = trail[-1]
    forged = chain.legacy_digest(last.hash, trail[0])  # any hash: without the key none is right
    attack(
        "INSERT INTO audit_auditevent (seq, created_at, action, outcome, actor, location, correlation_id, "
        "user_agent, purpose_of_use, object_type, object_id, details, prev_hash, hash, key_id) "
        "VALUES (%s, %s, 'auth.login', 'success', 'mallory', 'demo', '', '', '', '', '', '{}', %s, %s, %s)",
        [last.seq + 1, last.created_at, last.hash, forged, last.key_id],
    )
    if connection.vendor == "postgresql":  # and moves the sequence past it, so that the application goes on
        attack("SELECT setval(pg_get_serial_sequence('audit_auditevent', 'seq'), %s)", [last.seq + 1])
    after = record_event("auth.logout", actor=alice)  # chained to its head, the last genuine event
    assert after.seq == last.seq + 2
    message = audit_verify()
    assert f"seq {last.seq + 1}: inserted" in message
    assert f"between seq {last.seq} and seq {after.seq}" in message


def test_a_truncated_tail_is_caught_by_the_head_row(trail, settings):
    Path(settings.MEDAI_AUDIT_CHECKPOINT_PATH).unlink()  # the head row alone, without any checkpoint
    attack("DELETE FROM audit_auditevent WHERE seq > %s", [trail[3].seq])
    message = audit_verify()
    assert f"seq {trail[-1].seq}: truncated: the chain head row names seq {trail[-1].seq}" in message
    assert f"the chain now ends at seq {trail[3].seq}" in message


def test_a_truncated_tail_is_caught_by_the_exported_checkpoint_when_the_head_row_goes_too(trail):
    attack("DELETE FROM audit_auditevent WHERE seq > %s", [trail[3].seq])
    attack("DELETE FROM audit_auditchainhead")
    message = audit_verify()
    assert f"seq {trail[-1].seq}: truncated: the checkpoint of" in message
    assert "the tail was cut off" in message


def test_a_tail_rewritten_under_another_key_is_caught_from_its_first_seq(trail):
    """The attacker rewrites the last three events consistently (each chained to the one before),
    with a key of their own and the real key's id, and points the head row at them."""
    wrong = b"not-the-audit-key-" + b"x" * 32
    prev = trail[2].hash
    for event in trail[3:]:
        event.details = {"rewritten": True}
        new_hash = chain.keyed_digest(wrong, prev, event)
        attack(
            "UPDATE audit_auditevent SET details = %s, prev_hash = %s, hash = %s WHERE seq = %s",
            ['{"rewritten": true}', prev, new_hash, event.seq],
        )
        prev = new_hash
    attack("UPDATE audit_auditchainhead SET last_hash = %s", [prev])
    message = audit_verify()
    assert f"BROKEN at seq={trail[3].seq}" in message
    assert f"seq {trail[3].seq}-{trail[5].seq} (3 events): edited" in message
    assert "chain head row does not match its MAC" in message
    assert f"seq {trail[5].seq}: rewritten: the checkpoint of" in message


def test_a_wiped_table_is_caught(trail):
    attack("DELETE FROM audit_auditevent")
    attack("DELETE FROM audit_auditchainhead")
    message = audit_verify()
    assert f"seq {trail[-1].seq}: wiped: the table holds no event, but the checkpoint of" in message
    assert "names 6 events" in message


def test_a_wiped_table_is_caught_by_the_head_row_alone(alice):
    record_event("auth.login", actor=alice)
    last = record_event("auth.logout", actor=alice)
    attack("DELETE FROM audit_auditevent")
    message = audit_verify()
    assert f"seq {last.seq}: wiped" in message


def test_a_reordered_chain_is_caught_at_the_first_moved_seq(trail):
    a, b = trail[2], trail[3]
    attack("UPDATE audit_auditevent SET seq = %s WHERE seq = %s", [-1, a.seq])
    attack("UPDATE audit_auditevent SET seq = %s WHERE seq = %s", [a.seq, b.seq])
    attack("UPDATE audit_auditevent SET seq = %s WHERE seq = -1", [b.seq])
    message = audit_verify()
    assert f"BROKEN at seq={a.seq}" in message
    assert f"seq {a.seq}: reordered: it is chained to seq {b.seq}" in message


def test_a_forged_chain_under_a_key_of_the_attackers_own_is_caught(trail):
    """Everything replaced by a chain the attacker built with their own key (and its own key id)."""
    forged_key = b"attacker-key-" + b"y" * 32
    forged_kid = hashlib.sha256(forged_key).hexdigest()[:16]
    prev = chain.GENESIS
    for event in trail:
        event.key_id = forged_kid
        new_hash = chain.keyed_digest(forged_key, prev, event)
        attack(
            "UPDATE audit_auditevent SET key_id = %s, prev_hash = %s, hash = %s WHERE seq = %s",
            [forged_kid, prev, new_hash, event.seq],
        )
        prev = new_hash
    message = audit_verify()
    assert f"BROKEN at seq={trail[0].seq}" in message
    assert f"seq {trail[0].seq}-{trail[-1].seq} (6 events): unknown_key" in message
