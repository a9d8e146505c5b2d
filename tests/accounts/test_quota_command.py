"""``manage.py quota set|list|clear``: IT sets, reads and removes quotas from a script; the change
reaches the request path at once (Redis), a wrong name is a clear error."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.accounts import governance
from apps.accounts.governance import Item
from apps.accounts.models import Quota

pytestmark = pytest.mark.django_db(transaction=True)  # the mirror is published on commit, as in production


def _quota(*args: str) -> str:
    out = StringIO()
    call_command("quota", *args, stdout=out)
    return out.getvalue()


def test_set_creates_a_location_quota_that_the_next_request_obeys(alice, demo, principal_of):
    assert "per day: 2 requests" in _quota("set", "--location", "demo", "--period", "day", "--requests", "2")
    p = principal_of(alice)
    for _ in range(2):
        governance.admit(p, items=[Item(1, 1)])
    with pytest.raises(governance.LimitExceeded):
        governance.admit(p, items=[Item(1, 1)])


def test_set_again_replaces_the_limits_of_that_period(demo):
    _quota("set", "--location", "demo", "--period", "day", "--requests", "2")
    _quota("set", "--location", "demo", "--period", "day", "--requests", "5", "--tokens", "900")
    assert list(Quota.objects.values_list("period", "max_requests", "max_tokens")) == [("day", 5, 900)]


def test_list_shows_each_quota_with_what_its_window_used(alice, demo, org, principal_of):
    _quota("set", "--location", "demo", "--period", "day", "--requests", "10", "--tokens", "1000")
    _quota("set", "--organization", org.name, "--period", "month", "--tokens", "50000")
    [r] = governance.admit(principal_of(alice), items=[Item(10, 10)]).reservations
    governance.reconcile(r, prompt_tokens=30, completion_tokens=12, completed=True)
    out = _quota("list")
    assert "location 'demo'" in out and "1/10" in out and "42/1000" in out
    assert "organization 'Demo Hospital'" in out and "42/50000" in out
    assert "organization" not in _quota("list", "--location", "demo")


def test_clear_removes_the_quota_and_the_limit_with_it(alice, demo, principal_of):
    _quota("set", "--location", "demo", "--period", "day", "--requests", "1")
    assert "cleared 1" in _quota("clear", "--location", "demo")
    p = principal_of(alice)
    for _ in range(3):
        governance.admit(p, items=[Item(1, 1)])
    assert _quota("list") == "no quotas\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("set", "--location", "nowhere", "--period", "day", "--requests", "1"), "No location with code 'nowhere'"),
        (("set", "--organization", "Nope", "--period", "day", "--requests", "1"), "No organization named 'Nope'"),
        (("set", "--location", "demo", "--period", "day"), "--requests N and/or --tokens T"),
        (("set", "--location", "demo", "--period", "day", "--requests", "-1"), "--requests must be >= 0"),
    ],
)
def test_a_wrong_name_or_no_limit_is_a_clear_error(demo, args, message):
    with pytest.raises(CommandError, match=message):
        _quota(*args)
