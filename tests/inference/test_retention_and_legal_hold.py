"""Retention removes content (prompt, result, error text) past its time and keeps the metadata;
a legal hold on a task, a user or a location suspends that purge until it is released; placing
and releasing a hold are audited; ``manage.py purge`` and the minute schedule do the same, and the
admin places and releases holds through the same service."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.inference import retention, tasks
from apps.inference.models import InferenceTask, LegalHold


@pytest.fixture
def officer(django_user_model):
    return django_user_model.objects.create_superuser("officer", password="correct-horse-battery")


def _finished(user, location, *, past: bool = True, mode: str = "async") -> InferenceTask:
    now = timezone.now()
    ended = now - timedelta(hours=2) if past else now
    return InferenceTask.objects.create(
        user=user,
        location=location,
        mode=mode,
        status=InferenceTask.Status.FAILED,
        request={"messages": [{"role": "user", "content": "Mrs. Garcia, chest pain"}]} if mode == "async" else None,
        result={"partial": "…"} if mode == "async" else None,
        error_code="backend_error",
        error_message="backend echoed: Mrs. Garcia, chest pain",
        prompt_tokens=12,
        model_name="m",
        created_at=ended,
        finished_at=ended,
        result_expires_at=ended + timedelta(minutes=5) if mode == "async" else None,
    )


def _purged(task: InferenceTask) -> bool:
    task.refresh_from_db()
    return task.content_purged_at is not None and task.request is None and task.error_message == ""


def test_purge_removes_content_past_retention_and_keeps_the_metadata(alice, demo):
    old, fresh = _finished(alice, demo), _finished(alice, demo, past=False)
    out = StringIO()
    call_command("purge", stdout=out)
    assert "purged 1 task(s)" in out.getvalue()
    assert _purged(old) and old.result is None
    assert old.status == InferenceTask.Status.FAILED and old.error_code == "backend_error"
    assert old.prompt_tokens == 12 and old.model_name == "m" and old.user_id == alice.pk
    fresh.refresh_from_db()
    assert fresh.content_purged_at is None and fresh.error_message


def test_a_sync_record_loses_the_error_text_a_backend_echoed(alice, demo):
    sync = _finished(alice, demo, mode="sync")
    retention.purge()
    assert _purged(sync) and sync.status == InferenceTask.Status.FAILED


@pytest.mark.parametrize("target", ["task", "user", "location"])
def test_a_legal_hold_suspends_the_purge_until_it_is_released(alice, bob, demo, north, charlie, officer, target):
    held, other_user, other_location = _finished(alice, demo), _finished(bob, demo), _finished(charlie, north)
    kwargs = {"task": held, "user": alice, "location": demo}[target]
    hold = retention.place_hold(officer, reason="Case 2026-114, records request", **{target: kwargs})

    report = retention.purge(dry_run=True)
    assert report.held == (2 if target == "location" else 1)
    tasks.expire_tasks()  # the minute schedule
    assert not _purged(held)
    assert _purged(other_location)
    assert _purged(other_user) == (target != "location")

    assert retention.release_hold(officer, hold, reason="case closed")
    assert not retention.release_hold(officer, hold)  # once
    call_command("purge", stdout=StringIO())
    assert _purged(held)

    place = AuditEvent.objects.get(action="legal_hold.place")
    release = AuditEvent.objects.get(action="legal_hold.release")
    assert place.actor == "officer" and place.object_id == str(hold.pk)
    assert place.details["reason"] == "Case 2026-114, records request"
    assert release.details["reason"] == "case closed" and release.details["target"] == hold.target_label


def test_a_hold_needs_a_reason_and_exactly_one_target(alice, demo, officer):
    task = _finished(alice, demo)
    with pytest.raises(ValidationError):
        retention.place_hold(officer, reason="  ", task=task)
    with pytest.raises(ValidationError):
        retention.place_hold(officer, reason="case", task=task, user=alice)
    with pytest.raises(ValidationError):
        retention.place_hold(officer, reason="case")
    assert not LegalHold.objects.exists() and not AuditEvent.objects.filter(action__startswith="legal_hold").exists()


def test_the_admin_places_and_releases_holds_audited_and_never_deletes_them(alice, demo, officer, client):
    client.force_login(officer)
    task = _finished(alice, demo)
    response = client.post(
        "/admin/inference/legalhold/add/", {"task": str(task.pk), "reason": "subpoena 17"}, follow=True
    )
    assert response.status_code == 200
    hold = LegalHold.objects.get()
    assert hold.task_id == task.pk and hold.placed_by == officer
    assert AuditEvent.objects.filter(action="legal_hold.place", actor="officer").count() == 1
    bad = client.post("/admin/inference/legalhold/add/", {"reason": "no target"})
    assert bad.status_code == 200 and LegalHold.objects.count() == 1  # the form says what is wrong

    client.post("/admin/inference/legalhold/", {"action": "release", "_selected_action": [hold.pk]})
    hold.refresh_from_db()
    assert hold.released_at is not None and hold.released_by == officer
    assert AuditEvent.objects.filter(action="legal_hold.release").count() == 1
    assert client.post(f"/admin/inference/legalhold/{hold.pk}/delete/", {"post": "yes"}).status_code == 403
    assert LegalHold.objects.filter(pk=hold.pk).exists()
