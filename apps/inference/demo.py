"""The demo of the embedded default: what ``make run`` creates so a new user can log in and chat.

The demo tenant's users are accounts' (``apps.accounts.demo``); the bundled model on every agent
route, and the supervised llama.cpp server that serves it, are inference's and gpu's: seeding all of
them is the top layer's job, so it lives here (``manage.py bootstrap_demo``).

Two llama.cpp servers run the one bundled GGUF: the chat server (on every agent route), and an
embeddings server (``--embeddings --pooling mean``, small slots, its own port) registered as a
model that declares embeddings and rerank by cosine. Two, so that each is sized for its work (chat
slots of 2048 tokens; embedding slots of 512 with a batch as large, since pooling takes an input's
every token in one batch), a burst of embeddings never holds chat's slots, and each is supervised
and health-checked, and fails, on its own (a llama-server without ``--embeddings`` refuses
``/v1/embeddings``; some builds with it refuse completions). The embeddings model is on no agent
route: clients name it (``model="smollm2-135m-embed"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from apps.accounts.demo import demo_password, ensure_demo_users
from apps.accounts.models import Location
from apps.gpu.llamacpp import (
    BUNDLED_CHAT_ENDPOINT,
    BUNDLED_EMBEDDINGS_ENDPOINT,
    BUNDLED_MODEL_ALIAS,
    EMBEDDINGS_CONTEXT,
    EMBEDDINGS_PARALLEL,
    EMBEDDINGS_SERVER_ARGS,
)
from apps.inference import router
from apps.inference.bundled import ensure_bundled_server
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint

BUNDLED_ENDPOINT_NAME = BUNDLED_CHAT_ENDPOINT


@dataclass
class DemoResult:
    password: str
    password_source: str  # "env" | "file" | "generated"
    location: Location
    endpoint_name: str
    embeddings_endpoint_name: str


@transaction.atomic
def bootstrap_demo(
    *,
    llama_port: int | None = None,
    embed_port: int | None = None,
    var_dir: Path | None = None,
    autostart: bool = True,
    embeddings: bool = True,
) -> DemoResult:
    """Create (idempotently) the Demo organization, the ``demo`` location, the ``admin`` and
    ``clinician`` users with the demo password, the bundled SmolLM2 model on every agent route, and
    the supervised llama.cpp server that serves it (the monitor starts it when ``autostart``);
    and the bundled embeddings model with its own supervised server (started when ``autostart``
    and ``embeddings``)."""
    password, source = demo_password(var_dir)
    location = ensure_demo_users(password)

    port = llama_port or settings.MEDAI_LLAMA_PORT
    endpoint, _ = ModelEndpoint.objects.update_or_create(
        name=BUNDLED_ENDPOINT_NAME,
        defaults=dict(
            kind=ModelEndpoint.Kind.LLAMACPP,
            base_url=f"http://127.0.0.1:{port}/v1",
            served_model_id=BUNDLED_MODEL_ALIAS,
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
    embedder = _bundled_embeddings(embed_port or settings.MEDAI_EMBED_PORT, autostart=autostart and embeddings)
    transaction.on_commit(router.invalidate)
    return DemoResult(
        password=password,
        password_source=source,
        location=location,
        endpoint_name=endpoint.name,
        embeddings_endpoint_name=embedder.name,
    )


def _bundled_embeddings(port: int, *, autostart: bool) -> ModelEndpoint:
    """The embeddings model (embeddings, and rerank by the cosine of its vectors: SmolLM2 has no
    ranking head for llama.cpp's ``--reranking``) and its supervised server: ``EMBEDDINGS_PARALLEL``
    slots of ``EMBEDDINGS_CONTEXT`` tokens, a batch as large as a slot (pooling needs an input's
    every token in one batch)."""
    endpoint, _ = ModelEndpoint.objects.update_or_create(
        name=BUNDLED_EMBEDDINGS_ENDPOINT,
        defaults=dict(
            kind=ModelEndpoint.Kind.LLAMACPP,
            base_url=f"http://127.0.0.1:{port}/v1",
            served_model_id=BUNDLED_MODEL_ALIAS,
            context_length=EMBEDDINGS_CONTEXT,
            vram_mb=150,
            rank=20,
            enabled=True,
            supports_embeddings=True,
            rerank="embeddings",
        ),
    )
    ensure_bundled_server(
        port,
        endpoint_name=endpoint.name,
        parallel=EMBEDDINGS_PARALLEL,
        ctx_size=EMBEDDINGS_PARALLEL * EMBEDDINGS_CONTEXT,
        vram_mb=endpoint.vram_mb,
        autostart=autostart,
        extra=EMBEDDINGS_SERVER_ARGS,
    )
    return endpoint
