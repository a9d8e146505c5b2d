"""The demo of the embedded default: what ``make run`` creates so a new user can log in and chat.

The demo tenant's users are accounts' (``apps.accounts.demo``); the bundled model on every agent
route, and the supervised llama.cpp server that serves it, are inference's and gpu's: seeding all of
them is the top layer's job, so it lives here (``manage.py bootstrap_demo``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from apps.accounts.demo import demo_password, ensure_demo_users
from apps.accounts.models import Location
from apps.inference import router
from apps.inference.bundled import ensure_bundled_server
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint

BUNDLED_ENDPOINT_NAME = "smollm2-135m"


@dataclass
class DemoResult:
    password: str
    password_source: str  # "env" | "file" | "generated"
    location: Location
    endpoint_name: str


@transaction.atomic
def bootstrap_demo(*, llama_port: int | None = None, var_dir: Path | None = None, autostart: bool = True) -> DemoResult:
    """Create (idempotently) the Demo organization, the ``demo`` location, the ``admin`` and
    ``clinician`` users with the demo password, the bundled SmolLM2 model on every agent route, and
    the supervised llama.cpp server that serves it (the monitor starts it when ``autostart``)."""
    password, source = demo_password(var_dir)
    location = ensure_demo_users(password)

    port = llama_port or settings.MEDAI_LLAMA_PORT
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
