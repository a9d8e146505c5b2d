from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

from apps.audit.fields import EncryptedJSONField, EncryptedTextField
from apps.gpu.priority import Priority  # admission orders by it too, so it lives below (apps/gpu)


def validate_backend_url(value: str) -> None:
    """http(s) URL with a host; unlike URLValidator, single-label hosts (``gpu1``) are fine."""
    from urllib.parse import urlsplit

    from django.core.exceptions import ValidationError

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
    supports_embeddings = models.BooleanField(default=False)
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
    description = models.CharField(max_length=300, blank=True)
    system_prompt = models.TextField(blank=True, help_text="Prepended as a system message when the request has none.")
    enabled = models.BooleanField(default=True)
    endpoints: models.ManyToManyField[ModelEndpoint, AgentRouteEntry] = models.ManyToManyField(
        ModelEndpoint, through="AgentRouteEntry", related_name="routes"
    )

    class Meta:
        ordering = ["agent_type"]

    def __str__(self) -> str:
        return self.agent_type


class AgentRouteEntry(models.Model):
    route = models.ForeignKey(AgentRoute, on_delete=models.CASCADE, related_name="entries")
    endpoint = models.ForeignKey(ModelEndpoint, on_delete=models.CASCADE, related_name="route_entries")
    position = models.PositiveSmallIntegerField(default=0, help_text="0 is tried first.")

    class Meta:
        ordering = ["route", "position"]
        constraints = [models.UniqueConstraint(fields=["route", "endpoint"], name="route_endpoint_once")]
        verbose_name = "route model"

    def __str__(self) -> str:
        return f"{self.route} #{self.position}: {self.endpoint}"


class InferenceTaskQuerySet(models.QuerySet["InferenceTask"]):
    def visible_to(self, principal) -> InferenceTaskQuerySet:  # type: ignore[no-untyped-def]
        """What a caller may see: their own tasks at their current location."""
        return self.filter(user_id=principal.user_id, location_id=principal.location_pk)


class InferenceTask(models.Model):
    """One inference, sync or async: who asked, where, which model answered, tokens, timings.

    Prompts and results are PHI: they live only in the encrypted ``request``/``result`` columns,
    and sync requests do not keep them at all.
    """

    class Mode(models.TextChoices):
        SYNC = "sync"
        ASYNC = "async"

    class Status(models.TextChoices):
        QUEUED = "queued"
        PROCESSING = "processing"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.ASYNC)
    kind = models.CharField(max_length=16, default="chat")  # chat | embeddings
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    priority = models.SmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="tasks")
    location = models.ForeignKey("accounts.Location", on_delete=models.PROTECT, related_name="tasks")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    agent_type = models.CharField(max_length=64, blank=True)
    requested_model = models.CharField(max_length=100, blank=True)
    endpoint = models.ForeignKey(ModelEndpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    model_name = models.CharField(max_length=100, blank=True, help_text="The model that answered.")
    stream = models.BooleanField(default=False)
    request = EncryptedJSONField(null=True, blank=True)
    result = EncryptedJSONField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    tools_offered = models.PositiveSmallIntegerField(default=0, help_text="Tools the model was offered (0: none).")
    tool_calls = models.PositiveSmallIntegerField(default=0, help_text="Tool calls the model answered with.")
    end_user = models.CharField(
        max_length=256,
        blank=True,
        help_text="The caller's end user, as it named them (OpenAI's user / safety_identifier).",
    )
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(db_index=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    queue_wait_ms = models.PositiveIntegerField(null=True, blank=True)
    inference_ms = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Total time medai spent, end to end.")
    # async queue (issue 3)
    batch = models.ForeignKey("TaskBatch", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    dedup_key = models.CharField(max_length=64, blank=True, db_index=True)
    deadline = models.DateTimeField(null=True, blank=True, help_text="A task still queued then expires.")
    result_expires_at = models.DateTimeField(null=True, blank=True, help_text="When the result's content is purged.")
    # The outcome (status) stays when retention ends; this says that the prompt and result are gone, and since when.
    content_purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When the prompt and result were purged (retention, cancel, expiry)."
    )

    objects = InferenceTaskQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "location", "-created_at"], name="task_owner_recent"),
            models.Index(fields=["status", "-priority", "created_at"], name="task_status_prio"),
            # the retention sweep: tasks whose content is still kept, by the end of their retention
            models.Index(
                fields=["result_expires_at"], condition=models.Q(content_purged_at__isnull=True), name="task_purge_due"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.mode} {self.status}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# --- the async task queue (issue 3) ------------------------------------------------------------


class TaskBatch(models.Model):
    """A batch of async tasks submitted together; progress is counted from its tasks."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="batches")
    location = models.ForeignKey("accounts.Location", on_delete=models.PROTECT, related_name="batches")
    total = models.PositiveIntegerField(default=0)
    # De-duplication per item: tasks of earlier requests that items of this batch were answered
    # with (their ``batch`` is another one, or none); progress counts them with the batch's own.
    reused_task_ids = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"batch {self.id} ({self.total})"


class QueueEntry(models.Model):
    """One pending delivery in the priority broker (apps.inference.broker).

    ``rank`` is the enqueue time (epoch seconds) minus ``priority × MEDAI_QUEUE_AGING_SECONDS``:
    ordering by rank gives strict priority order within the aging window and FIFO within a level,
    and a task that waited one aging period counts as one level higher (anti-starvation).
    ``locked_until`` is the lease: a delivered entry is invisible until then and is deleted on ack.
    """

    key = models.CharField(max_length=100)
    priority = models.SmallIntegerField(default=1)
    rank = models.FloatField()
    enqueued_at = models.DateTimeField()
    locked_until = models.DateTimeField()
    deliveries = models.PositiveIntegerField(default=0)
    task_id = models.UUIDField(null=True, blank=True, db_index=True)
    payload = models.TextField()

    class Meta:
        indexes = [models.Index(fields=["key", "rank"], name="queue_entry_next")]

    def __str__(self) -> str:
        return f"{self.key}#{self.pk} p{self.priority}"
