"""Fixtures of the accounts tests: a Principal per persona, a quota set through the service (the
governance tests); what a credential may do right now, and moving the clock (the identity tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.governance import quotas
from apps.accounts.models import Location, User
from apps.accounts.services import Principal, authenticate_header, issue_tokens


@pytest.fixture
def principal_of() -> Callable[..., Principal]:
    """The Principal a JWT of the user at a location authenticates as (their first location by default)."""

    def make(user: User, location: Location | None = None) -> Principal:
        token = issue_tokens(user, location or user.locations.first()).access_token
        return authenticate_header(f"Bearer {token}")

    return make


@pytest.fixture
def quota() -> Callable[..., None]:
    """Set a quota as IT does (``quota set``) and publish it to Redis now (not on a commit that a
    test's transaction never makes)."""

    def make(**kwargs: object) -> None:
        quotas.set_quota(**kwargs)  # type: ignore[arg-type]
        quotas.publish()

    return make


def me(credential: str) -> int:
    """The status of ``GET /v1/auth/me`` with this bearer credential (200: it works; 401: it does not)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {credential}")
    return client.get("/v1/auth/me").status_code


def login(username: str, password: str, location_id: str = "demo", ip: str = "10.0.0.1") -> object:
    return APIClient(REMOTE_ADDR=ip).post(
        "/v1/auth/login", {"username": username, "password": password, "location_id": location_id}, format="json"
    )


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[timedelta], datetime]]:
    """``later(delta)`` moves Django's clock (``timezone.now``, what expiry checks read) forward."""
    real = timezone.now
    offset = [timedelta(0)]

    def now() -> datetime:
        return real() + offset[0]

    monkeypatch.setattr(timezone, "now", now)

    def move(delta: timedelta) -> datetime:
        offset[0] += delta
        return now()

    yield move
