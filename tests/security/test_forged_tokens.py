"""Nobody can mint medai tokens: not with the key that used to be in the source, and not with
Django's SECRET_KEY (the JWT signing key is a secret of its own)."""

from __future__ import annotations

import jwt
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from apps.accounts.models import User
from apps.accounts.services import issue_tokens
from tests.conftest import PASSWORD
from tests.support.django_process import FORMER_DEV_SECRET_KEY


@pytest.fixture
def admin(org, demo) -> User:
    user = User.objects.create_user(
        "root", password=PASSWORD, role=User.Role.ADMIN, organization=org, is_staff=True, is_superuser=True
    )
    user.locations.add(demo)
    return user


def _resigned(token: str, key: str) -> str:
    """The claims of a genuine token (what an attacker knows the shape of), signed with ``key``."""
    claims = jwt.decode(token, options={"verify_signature": False})
    return jwt.encode(claims, key, algorithm="HS256")


KEYS = {"the former development key": FORMER_DEV_SECRET_KEY, "SECRET_KEY": None}


def _me(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/v1/auth/me").status_code


@pytest.mark.parametrize("key_name", KEYS)
def test_an_admin_access_token_signed_with_a_known_key_is_refused(admin, demo, key_name) -> None:
    genuine = issue_tokens(admin, demo).access_token
    assert _me(genuine) == 200
    assert _me(_resigned(genuine, KEYS[key_name] or settings.SECRET_KEY)) == 401


@pytest.mark.parametrize("key_name", KEYS)
def test_a_refresh_token_signed_with_a_known_key_gets_no_token_pair(admin, demo, key_name) -> None:
    genuine = issue_tokens(admin, demo).refresh_token
    forged = _resigned(genuine, KEYS[key_name] or settings.SECRET_KEY)
    response = APIClient().post("/v1/auth/refresh", {"refresh_token": forged}, format="json")
    assert response.status_code == 401, response.content
    assert "access_token" not in response.json()
    # the genuine one still rotates
    response = APIClient().post("/v1/auth/refresh", {"refresh_token": genuine}, format="json")
    assert response.status_code == 200 and response.json()["access_token"]
