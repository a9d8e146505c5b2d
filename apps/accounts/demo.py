"""The demo tenant of the embedded default: what ``make run`` creates so a new user can log in."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from apps.accounts.models import Location, Organization, User

DEMO_ORG = "Demo"
DEMO_LOCATION = "demo"
DEMO_USERS = (("admin", User.Role.ADMIN, True), ("clinician", User.Role.CLINICIAN, False))
BUNDLED_ENDPOINT_NAME = "smollm2-135m"


@dataclass
class DemoResult:
    password: str
    password_source: str  # "env" | "file" | "generated"
    location: Location
    endpoint_name: str


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


@transaction.atomic
def bootstrap_demo(*, llama_port: int | None = None, var_dir: Path | None = None, autostart: bool = True) -> DemoResult:
    """Create (idempotently) the Demo organization, the ``demo`` location, the ``admin`` and
    ``clinician`` users with the demo password, the bundled SmolLM2 model on every agent route, and
    the supervised llama.cpp server that serves it (the monitor starts it when ``autostart``)."""
    from apps.gpu.services import ensure_bundled_server
    from apps.inference import router
    from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint

    password, source = demo_password(var_dir)
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

    port = llama_port or int(os.environ.get("MEDAI_LLAMA_PORT", "8081"))
    endpoint, _ = ModelEndpoint.objects.update_or_create(
        name=BUNDLED_ENDPOINT_NAME,
        defaults=dict(
            kind=ModelEndpoint.Kind.LLAMACPP,
            base_url=f"http://127.0.0.1:{port}/v1",
            served_model_id="smollm2-135m-instruct",
            context_length=2048,
            vram_mb=200,
            rank=10,
            enabled=True,
        ),
    )
    for route in AgentRoute.objects.all():
        if not AgentRouteEntry.objects.filter(route=route, endpoint=endpoint).exists():
            last = route.entries.aggregate(m=Max("position"))["m"]
            AgentRouteEntry.objects.create(route=route, endpoint=endpoint, position=0 if last is None else last + 1)
    ensure_bundled_server(port, endpoint_name=endpoint.name, parallel=4, vram_mb=endpoint.vram_mb, autostart=autostart)
    transaction.on_commit(router.invalidate)
    return DemoResult(password=password, password_source=source, location=location, endpoint_name=endpoint.name)
