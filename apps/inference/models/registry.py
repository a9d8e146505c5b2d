"""The model registry: the servers medai may call (``ModelEndpoint``) and the agent routes that
order them (``AgentRoute`` and its entries, with their A/B weights)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from apps.audit.fields import EncryptedTextField


def validate_backend_url(value: str) -> None:
    """http(s) URL with a host; unlike URLValidator, single-label hosts (``gpu1``) are fine."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Enter an http(s) URL with a host, e.g. http://gpu1:8080/v1")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValidationError("The port in this URL is not a number between 0 and 65535.") from None


class ModelEndpoint(models.Model):
    """A model served by an OpenAI-compatible server (llama.cpp, vLLM, TGI, Ollama, ...)."""

    class Kind(models.TextChoices):
        LLAMACPP = "llamacpp", "llama.cpp server"
        VLLM = "vllm", "vLLM"
        TGI = "tgi", "Text Generation Inference"
        OLLAMA = "ollama", "Ollama"
        OPENAI = "openai", "Other OpenAI-compatible"

    name = models.CharField(
        max_length=100,
        unique=True,
        validators=[RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$", "letters, digits and . _ : / -")],
        help_text="The public model name clients send as `model`.",
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.LLAMACPP)
    base_url = models.CharField(
        max_length=300,
        validators=[validate_backend_url],
        help_text="OpenAI base URL of the server, e.g. http://gpu1:8080/v1",
    )
    served_model_id = models.CharField(
        max_length=200, blank=True, help_text="Model id the backend expects; empty sends the public name."
    )
    api_key = EncryptedTextField(blank=True, default="", help_text="The backend's own API key (stored encrypted).")
    context_length = models.PositiveIntegerField(default=4096, validators=[MinValueValidator(128)])
    vram_mb = models.PositiveIntegerField(default=0, help_text="Estimated GPU memory when loaded (MiB).")
    rank = models.PositiveSmallIntegerField(default=100, help_text="Lower ranks first when GPU pressure limits models.")
    enabled = models.BooleanField(default=True)
    supports_embeddings = models.BooleanField(
        default=False, help_text="It answers POST /v1/embeddings (llama.cpp: started with --embeddings)."
    )
    rerank = models.CharField(
        max_length=10,
        choices=[
            ("", "no rerank"),
            ("native", "its own /rerank (llama.cpp --reranking, vLLM)"),
            ("embeddings", "medai ranks by cosine similarity of its embeddings"),
        ],
        blank=True,
        default="",
        help_text="How it answers POST /v1/rerank: a reranker's own /rerank, or by its embeddings.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["rank", "name"]

    def __str__(self) -> str:
        return self.name

    @property
    def backend_model(self) -> str:
        return self.served_model_id or self.name

    @property
    def server_root(self) -> str:
        """The server's root URL (where llama.cpp and vLLM answer /health)."""
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url


class AgentRoute(models.Model):
    """An agent type (MedicalQA, Billing, ...) and the models that serve it, best first."""

    agent_type = models.CharField(max_length=64, unique=True, validators=[RegexValidator(r"^[A-Za-z][A-Za-z0-9_-]*$")])
    description = models.CharField(
        max_length=300, blank=True, help_text="What this agent is for, shown to clinicians on the Ask page."
    )
    is_default = models.BooleanField(
        default=False, help_text="The agent type the Ask page selects first (one route at most; else MedicalQA)."
    )
    system_prompt = models.TextField(blank=True, help_text="Prepended as a system message when the request has none.")
    enabled = models.BooleanField(default=True)

    class Sticky(models.TextChoices):
        USER = "user", "per user"
        CONVERSATION = "conversation", "per conversation (per user without one)"

    split_sticky = models.CharField(
        max_length=16,
        choices=Sticky.choices,
        default=Sticky.USER,
        help_text="A/B split: what keeps a caller on one arm (apps/inference/experiments.py).",
    )
    endpoints: models.ManyToManyField[ModelEndpoint, AgentRouteEntry] = models.ManyToManyField(
        ModelEndpoint, through="AgentRouteEntry", related_name="routes"
    )

    class Meta:
        ordering = ["agent_type"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="agent_route_one_default",
                violation_error_message="Another agent type is the default already: untick it there first.",
            )
        ]

    def __str__(self) -> str:
        return self.agent_type


class AgentRouteEntry(models.Model):
    route = models.ForeignKey(AgentRoute, on_delete=models.CASCADE, related_name="entries")
    endpoint = models.ForeignKey(ModelEndpoint, on_delete=models.CASCADE, related_name="route_entries")
    position = models.PositiveSmallIntegerField(default=0, help_text="0 is tried first.")
    weight = models.PositiveSmallIntegerField(
        default=0,
        help_text="A/B split: the models of a route with a weight share its traffic in proportion "
        "(sticky); 0: not an arm (tried in position order, as a fallback).",
    )

    class Meta:
        ordering = ["route", "position"]
        constraints = [models.UniqueConstraint(fields=["route", "endpoint"], name="route_endpoint_once")]
        verbose_name = "route model"

    def __str__(self) -> str:
        return f"{self.route} #{self.position}: {self.endpoint}"
