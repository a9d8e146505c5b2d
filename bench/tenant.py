"""What every bench sets up the same way: its throw-away environment, and one tenant to send work as.

``environment`` fills ``os.environ`` before ``django.setup()`` (a test environment in a var dir of
the bench's own, so its keys are generated there and every child process shares them); ``tenant``
makes, in a migrated database, one organization with one location and an integrator who may use
it, with an API key (and, if asked, a JWT access token).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def environment(var_dir: Path, prefix: str, database_url: str, redis_url: str, **extra: str) -> None:
    """The bench's settings, from the environment as in production: ``extra`` adds or overrides."""
    os.environ.update(
        DJANGO_SETTINGS_MODULE="medai.settings",
        MEDAI_VAR_DIR=str(var_dir),
        MEDAI_ENV="test",  # a throwaway var dir: its keys are generated there
        LOG_LEVEL="WARNING",
        DEBUG="0",
        MEDAI_CACHE_PREFIX=f"{prefix}-{uuid.uuid4().hex[:6]}",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **extra,
    )


@dataclass
class Tenant:
    organization: Any
    location: Any
    user: Any
    api_key: str  # the secret, as a client sends it
    jwt: str = ""


def tenant(organization: str = "Bench", location: str = "Bench", *, jwt: bool = False) -> Tenant:
    """One organization, location (code ``bench``) and integrator ``bench`` with an API key there."""
    from apps.accounts.models import Location, Organization, User
    from apps.accounts.services import create_api_key, issue_tokens

    org = Organization.objects.create(name=organization)
    loc = Location.objects.create(organization=org, code="bench", name=location)
    user = User.objects.create_user("bench", password="bench-password-123", role=User.Role.INTEGRATOR, organization=org)
    user.locations.add(loc)
    _, secret = create_api_key(user, name="bench", location=loc)
    token = issue_tokens(user, loc).access_token if jwt else ""
    return Tenant(org, loc, user, secret, token)
