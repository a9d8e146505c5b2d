"""A revocation in one process takes effect in another at once, not after the other's cache TTL:
a separate web process (uvicorn, its own database) with a 10-minute authentication cache stops
accepting a key as soon as a second process (``manage.py shell``) revokes it."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.own_database import manage_shell, own_database
from tests.support.servers import Process, free_port

pytestmark = pytest.mark.django_db(transaction=True)

SETUP = """
from apps.accounts.models import Location, Organization, User
from apps.accounts.services import create_api_key
org = Organization.objects.create(name="Far Hospital")
ward = Location.objects.create(organization=org, code="far", name="Far ward")
user = User.objects.create_user("faye", password="x-x-x-x-x-x", role="clinician", organization=org)
user.locations.add(ward)
print(create_api_key(user, name="ehr", location=ward)[1])
"""


def status(url: str, secret: str) -> int:
    return httpx.get(url + "/v1/auth/me", headers={"Authorization": f"Bearer {secret}"}, timeout=10).status_code


def first_status_within(url: str, secret: str, wanted: int, seconds: float) -> int:
    """Ask until ``wanted`` or ``seconds`` pass (pub/sub delivery is asynchronous: milliseconds);
    the last status seen."""
    deadline = time.monotonic() + seconds
    code = status(url, secret)
    while code != wanted and time.monotonic() < deadline:
        time.sleep(0.02)
        code = status(url, secret)
    return code


@pytest.mark.parametrize(
    "revoke",
    [
        "from apps.accounts.models import ApiKey\nfrom apps.accounts.services import revoke_api_key\n"
        "revoke_api_key(ApiKey.objects.get())",
        "from apps.accounts.models import Location, User\nUser.objects.get(username='faye').locations.clear()",
    ],
    ids=["key revoked", "user removed from the location"],
)
def test_another_process_s_revocation_answers_401_at_once(tmp_path: Path, revoke: str):
    with own_database(tmp_path, MEDAI_AUTH_CACHE_SECONDS="600") as env:
        secret = manage_shell(env, SETUP).strip().splitlines()[-1]
        port = free_port()
        web = Process(
            [sys.executable, "-m", "uvicorn", "medai.asgi:application", "--port", str(port), "--log-level", "warning"],
            f"http://127.0.0.1:{port}/healthz",
            f"identity-web-{port}",
            env=env,
        )
        try:
            web.wait(90)
            url = f"http://127.0.0.1:{port}"
            assert status(url, secret) == 200
            assert status(url, secret) == 200  # served from the web process's cache now
            manage_shell(env, revoke)
            # Within 5 s, where the cache alone would keep answering 200 for 10 minutes.
            assert first_status_within(url, secret, 401, 5.0) == 401
        finally:
            web.stop()
