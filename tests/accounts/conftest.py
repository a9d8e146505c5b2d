"""Fixtures of the governance tests: a Principal per persona, and a quota set through the service."""

from __future__ import annotations

from collections.abc import Callable

import pytest

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
