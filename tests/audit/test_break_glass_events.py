"""The break-glass hook (for the identity helper's emergency access): each step of a grant is an
audit event with its reason, and every action under a grant is marked on its own event."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.services import authenticate_bearer
from apps.audit.services import record_break_glass, record_event

pytestmark = pytest.mark.django_db


def test_a_grant_and_its_use_are_audited_with_the_reason(alice, charlie, org):
    from apps.accounts.models import User

    root = User.objects.create_superuser("root", password="root-password-for-tests-7781", organization=org)
    until = timezone.now() + timedelta(hours=4)
    granted = record_break_glass(
        root,
        step="grant",
        grant_id=17,
        user=charlie,
        location="demo",
        reason="ED overflow: Dr. House covers",
        expires_at=until,
    )
    assert granted.action == "break_glass.grant" and granted.location == "demo"
    assert granted.details["break_glass_id"] == "17" and granted.details["username"] == "charlie"
    assert "House" not in granted.details["reason"] and granted.details["reason"].startswith("ED overflow")
    assert granted.details["expires_at"] == until.isoformat()


def test_every_action_under_a_grant_is_marked(alice, api_key_for):
    _, principal = authenticate_bearer(api_key_for(alice))
    fields = {f: getattr(principal, f) for f in principal.__dataclass_fields__}
    under_grant = type("GrantedPrincipal", (), {**fields, "break_glass_id": 17})()  # a Principal with a grant
    event = record_event("inference.read_result", actor=under_grant)
    assert event.details["break_glass_id"] == 17 and event.actor == "alice"


def test_an_unknown_step_is_refused(alice):
    with pytest.raises(ValueError, match="break-glass step"):
        record_break_glass(alice, step="smash")
