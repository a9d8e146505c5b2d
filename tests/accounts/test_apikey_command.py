"""``manage.py apikey``: create (the secret printed once, alone on stdout), list (never a
secret), rotate (a new secret; the old one in its grace), revoke (401 at once); bad input is a
CommandError naming the option."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from apps.accounts.models import ApiKey, hash_secret
from tests.accounts.conftest import me

pytestmark = pytest.mark.django_db


def apikey(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("apikey", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_prints_the_secret_once_and_it_works(alice, demo):
    out, err = apikey("create", "--user", "alice", "--location", "demo", "--scopes", "chat,read", "--expires-days", "7")
    secret = out.strip()
    assert secret.startswith("mk_") and "\n" not in secret
    key = ApiKey.objects.get()
    assert key.hashed_secret == hash_secret(secret) and key.scopes == ["chat", "read"]
    assert key.prefix in err and secret not in err
    assert me(secret) == 200


def test_list_shows_prefixes_and_states_never_secrets(alice, demo):
    secret = apikey("create", "--user", "alice", "--location", "demo")[0].strip()
    out, _ = apikey("list")
    key = ApiKey.objects.get()
    assert key.prefix in out and "alice" in out and "active" in out
    assert secret not in out


def test_rotate_prints_a_new_secret_and_the_old_one_keeps_its_grace(alice, demo):
    old = apikey("create", "--user", "alice", "--location", "demo")[0].strip()
    prefix = ApiKey.objects.get().prefix
    new, err = apikey("rotate", prefix, "--grace-hours", "1")
    assert me(new.strip()) == 200 and me(old) == 200
    assert "works until" in err


def test_rotate_with_no_grace_ends_the_old_secret_at_once(alice, demo):
    old = apikey("create", "--user", "alice", "--location", "demo")[0].strip()
    apikey("rotate", ApiKey.objects.get().prefix, "--grace-hours", "0")
    assert me(old) == 401


def test_revoke_ends_the_key_at_once(alice, demo):
    secret = apikey("create", "--user", "alice", "--location", "demo")[0].strip()
    assert me(secret) == 200
    out, _ = apikey("revoke", ApiKey.objects.get().prefix)
    assert "revoked" in out
    assert me(secret) == 401


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--user", "nobody", "--location", "demo"], "--user"),
        (["create", "--user", "alice", "--location", "mars"], "--location"),
        (["create", "--user", "alice", "--location", "demo", "--scopes", "chat,teleport"], "unknown scopes: teleport"),
        (["create", "--user", "alice", "--location", "demo", "--scopes", "audit:read"], "not allowed for role"),
        (["create", "--user", "alice", "--location", "north"], "does not work at north"),
        (["create", "--user", "alice", "--location", "demo", "--expires-days", "0"], "--expires-days"),
        (["revoke", "mk_00000000"], "no API key with prefix"),
    ],
)
def test_bad_input_names_what_is_wrong(alice, demo, north, args, message):
    with pytest.raises(CommandError, match=message):
        apikey(*args)
