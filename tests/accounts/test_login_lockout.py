"""Login throttling (django-axes): after MEDAI_LOGIN_FAILURE_LIMIT failures for one username from
one address, that pair is locked out (429, a clear message, Retry-After) whatever the password,
for the API login and the admin login alike; each failure and the lockout are audited."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client

from apps.audit.models import AuditEvent
from tests.accounts.conftest import login
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def fail(times: int, username: str = "alice", ip: str = "10.0.0.1") -> list[int]:
    return [login(username, "wrong-password", ip=ip).status_code for _ in range(times)]


def test_failures_up_to_the_limit_answer_401_then_the_pair_is_locked_429(alice):
    limit = settings.AXES_FAILURE_LIMIT
    codes = fail(limit)
    assert codes[:-1] == [401] * (limit - 1)
    assert codes[-1] == 429  # the failure that reaches the limit locks
    answer = login("alice", PASSWORD)  # even the right password
    assert answer.status_code == 429
    error = answer.json()["error"]
    assert error["code"] == "locked_out" and "Too many failed logins" in error["message"]
    assert int(answer["Retry-After"]) >= int(settings.AXES_COOLOFF_TIME.total_seconds())


def test_the_lockout_is_per_username_and_address(alice, bob):
    fail(settings.AXES_FAILURE_LIMIT)
    assert login("alice", PASSWORD, ip="10.0.0.2").status_code == 200  # alice elsewhere
    assert login("bob", PASSWORD).status_code == 200  # someone else from that address


def test_a_success_resets_the_count(alice):
    fail(settings.AXES_FAILURE_LIMIT - 1)
    assert login("alice", PASSWORD).status_code == 200
    assert fail(settings.AXES_FAILURE_LIMIT - 1) == [401] * (settings.AXES_FAILURE_LIMIT - 1)


def test_failures_and_the_lockout_are_audited(alice):
    fail(settings.AXES_FAILURE_LIMIT + 1)
    assert AuditEvent.objects.filter(action="auth.login", outcome="failure").count() >= settings.AXES_FAILURE_LIMIT - 1
    lockout = AuditEvent.objects.filter(action="auth.lockout", outcome="denied").first()
    assert lockout is not None and lockout.details["username"] == "alice"


def test_the_admin_login_locks_out_too(admin_user):
    client = Client(REMOTE_ADDR="10.0.0.9")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/?next=/admin/", {"username": admin_user.username, "password": "wrong"})
    locked = client.post("/admin/login/?next=/admin/", {"username": admin_user.username, "password": "password"})
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content
    assert AuditEvent.objects.filter(action="auth.lockout", details__where="admin").exists()
