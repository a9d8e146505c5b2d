"""The demo tenant of the embedded default (its users); ``manage.py bootstrap_demo`` (apps/inference/demo.py)
adds the bundled model, so that a new user of ``make run`` can log in and chat."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings

from apps.accounts.models import Location, Organization, User

DEMO_ORG = "Demo"
DEMO_LOCATION = "demo"
DEMO_USERS = (("admin", User.Role.ADMIN, True), ("clinician", User.Role.CLINICIAN, False))


def demo_password(var_dir: Path | None = None) -> tuple[str, str]:
    """``MEDAI_DEMO_PASSWORD``, else the one stored in ``var/demo-password``, else a new one (stored 0600)."""
    from_env = os.environ.get("MEDAI_DEMO_PASSWORD", "")
    if from_env:
        return from_env, "env"
    path = Path(var_dir or settings.VAR_DIR) / "demo-password"
    if path.is_file():
        stored = path.read_text().strip()
        if stored:
            return stored, "file"
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    os.chmod(path, 0o600)
    return password, "generated"


def ensure_demo_users(password: str) -> Location:
    """The Demo organization, its ``demo`` location and the ``admin`` and ``clinician`` users with
    this password (created or reset; idempotent). The bundled model is added by the layer that owns
    models (apps/inference/demo.py)."""
    org, _ = Organization.objects.get_or_create(name=DEMO_ORG)
    location, _ = Location.objects.get_or_create(
        code=DEMO_LOCATION, defaults={"organization": org, "name": "Demo ward"}
    )
    for username, role, superuser in DEMO_USERS:
        user, _ = User.objects.get_or_create(username=username)
        user.role = role
        user.organization = org
        user.is_active = True
        user.is_staff = superuser
        user.is_superuser = superuser
        if not user.check_password(password):
            user.set_password(password)
        user.save()
        user.locations.add(location)
    return location
