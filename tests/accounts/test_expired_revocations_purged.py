"""Revocation rows of tokens that have expired anyway are purged (hourly, by django-q2)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Schedule

from apps.accounts.models import RevokedAccessToken
from apps.accounts.tasks import purge_expired_tokens

pytestmark = pytest.mark.django_db


def test_only_expired_revocations_are_purged():
    now = timezone.now()
    RevokedAccessToken.objects.create(jti="gone", expires_at=now - timedelta(minutes=1))
    RevokedAccessToken.objects.create(jti="live", expires_at=now + timedelta(minutes=10))
    assert purge_expired_tokens() == 1
    assert list(RevokedAccessToken.objects.values_list("jti", flat=True)) == ["live"]


def test_the_purge_is_scheduled_hourly():
    schedule = Schedule.objects.get(func="apps.accounts.tasks.purge_expired_tokens")
    assert schedule.schedule_type == Schedule.HOURLY and schedule.repeats == -1
