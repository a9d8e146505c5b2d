"""Multi-agent workflows' rows (imported by apps.inference.models, so nothing of the app is imported
here): a workflow defined in admin as steps over agent types, and a run of one.

A workflow's steps are grouped by ``stage``: the steps of one stage run in parallel, each a task of
the priority queue on its agent type's route; a later stage's prompts are made of the earlier
stages' outputs (placeholders: ``{document}``, ``{outputs}``, ``{<step name>}``). A run copies its
workflow's steps when it starts (``WorkflowRunStep``), so that an admin's edit never changes a run
that is under way, and what a run did stays readable after its workflow changed.

A run is one-to-one with the ``TaskBatch`` its steps' tasks belong to (the same id), as a file
batch is: the queue's after-commit hook of the transitions that end tasks (apps.inference.queue.hooks)
names the batch, which is the run to advance, and the websocket's batch subscription follows its
steps' task updates unchanged.

The document and the result are PHI: encrypted at rest like a task's prompt and result
(apps.audit.fields), purged ``MEDAI_RESULT_TTL`` after the run ended (``result_expires_at``; a
legal hold on its user or location keeps them), the outcome kept (``content_purged_at``). So is
the error text (a backend's error may echo the prompt).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import connections, models

from apps.audit.fields import EncryptedJSONField, EncryptedTextField
from apps.gpu.priority import Priority

RUN_OBJECT = "workflow.run"
RESERVED_NAMES = ("runs",)  # /v1/workflows/runs/{id} is a run


def validate_workflow_name(value: str) -> None:
    if value in RESERVED_NAMES:
        raise ValidationError(f"'{value}' is reserved (/v1/workflows/{value}/... names runs).")


class WorkflowQuerySet(models.QuerySet["Workflow"]):
    def active(self) -> WorkflowQuerySet:
        return self.filter(active=True)


class Workflow(models.Model):
    """A named workflow: its steps over agent types, by stage (``WorkflowStep``)."""

    name = models.SlugField(
        max_length=64,
        unique=True,
        validators=[validate_workflow_name],
        help_text="The name clients run: POST /v1/workflows/{name}/runs.",
    )
    description = models.CharField(max_length=300, blank=True)
    active = models.BooleanField(default=True, help_text="Inactive: not listed and not runnable (runs made stay).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WorkflowQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WorkflowStep(models.Model):
    """One step of a workflow: a prompt sent to an agent type. Steps of the same stage run in
    parallel; a stage starts once every step of the one before has completed."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    name = models.SlugField(max_length=64, help_text="Unique in the workflow; later steps name its output {name}.")
    agent_type = models.ForeignKey("inference.AgentRoute", on_delete=models.PROTECT, related_name="+")
    stage = models.PositiveSmallIntegerField(
        default=0, help_text="Steps of one stage run in parallel; a later stage consumes the earlier outputs."
    )
    prompt = models.TextField(
        blank=True,
        help_text="The user message: {document} is the run's document, {outputs} every earlier step's "
        "output (headed by its name), {<step name>} one earlier step's output. Empty: {document} "
        "(and {outputs} after the first stage).",
    )
    max_tokens = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="The step's max_tokens (the model's own)."
    )

    class Meta:
        ordering = ["workflow", "stage", "name"]
        constraints = [models.UniqueConstraint(fields=["workflow", "name"], name="workflow_step_name_once")]

    def __str__(self) -> str:
        return f"{self.workflow_id}:{self.name}"


class WorkflowRunQuerySet(models.QuerySet["WorkflowRun"]):
    def locked(self) -> WorkflowRunQuerySet:
        """Row locks where the database has them (SQLite's IMMEDIATE transaction holds the write lock)."""
        if connections[self.db].features.has_select_for_update:
            return self.select_for_update()
        return self

    def visible_to(self, principal: Any) -> WorkflowRunQuerySet:
        """What a caller may see, as for tasks: a location admin every run of their current location,
        anyone else their own there (another user's or location's run is not found: 404)."""
        if principal.role == "admin":
            return self.filter(location_id=principal.location_pk)
        return self.filter(user_id=principal.user_id, location_id=principal.location_pk)

    def open(self) -> WorkflowRunQuerySet:
        return self.filter(status__in=WorkflowRun.OPEN)


class WorkflowRun(models.Model):
    """One run of a workflow on a document: queued → running → completed | failed | cancelled."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        CANCELLED = "cancelled"

    OPEN = (Status.QUEUED, Status.RUNNING)

    task_batch = models.OneToOneField(
        "inference.TaskBatch", primary_key=True, on_delete=models.CASCADE, related_name="workflow_run"
    )
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="runs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    location = models.ForeignKey("accounts.Location", on_delete=models.PROTECT, related_name="+")
    # Who started it, as authenticated then (apps.inference.delegation.snapshot; no secret): the
    # principal its later stages are submitted as.
    principal = models.JSONField(default=dict)
    correlation_id = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    priority = models.SmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    stage = models.PositiveSmallIntegerField(default=0, help_text="The stage running (or the last one run).")
    document = EncryptedTextField(blank=True)
    result = EncryptedJSONField(null=True, blank=True)  # {"content": the last stage's output}
    error_code = models.CharField(max_length=64, blank=True)
    error_message = EncryptedTextField(blank=True)
    # Why the next stage is not queued yet (a rate limit, a quota, a full queue): retried by the
    # minute schedule; empty while nothing holds it up.
    waiting = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField(
        null=True, blank=True, help_text="A step still queued then expires (the run fails)."
    )
    result_expires_at = models.DateTimeField(
        null=True, blank=True, help_text="When the document and result are purged."
    )
    content_purged_at = models.DateTimeField(null=True, blank=True)

    objects = WorkflowRunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "location", "-created_at"], name="workflow_run_owner_recent"),
            models.Index(fields=["status"], name="workflow_run_status"),
            models.Index(
                fields=["result_expires_at"],
                condition=models.Q(content_purged_at__isnull=True),
                name="workflow_run_purge_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} run {self.pk}"

    @property
    def is_final(self) -> bool:
        return self.status not in self.OPEN


class WorkflowRunStep(models.Model):
    """A step of a run, as its workflow defined it when the run started, and the task that ran it
    (none until its stage is queued). Its status and timings are its task's."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=64)
    agent_type = models.CharField(max_length=64)
    stage = models.PositiveSmallIntegerField()
    prompt = models.TextField(blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    task = models.ForeignKey(
        "inference.InferenceTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["run", "stage", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="workflow_run_step_once")]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.name}"


# The demo's workflow (apps.inference.workflows.ensure_discharge_summary): three drafts in
# parallel, then a merge. (name, agent type, stage, prompt, max_tokens)
DISCHARGE_SUMMARY = "discharge-summary"
DISCHARGE_SUMMARY_DESCRIPTION = (
    "Clinical, Documentation and Billing drafts of a discharge in parallel, merged by Documentation."
)
DISCHARGE_SUMMARY_STEPS: list[tuple[str, str, int, str, int]] = [
    (
        "clinical",
        "Clinical",
        0,
        "Summarise the hospital course in this clinical note: diagnoses, key findings, treatment and "
        "the condition at discharge.\n\nNote:\n{document}",
        200,
    ),
    (
        "documentation",
        "Documentation",
        0,
        "List the discharge medications, the follow-up appointments and the instructions for the "
        "patient found in this clinical note.\n\nNote:\n{document}",
        200,
    ),
    (
        "billing",
        "Billing",
        0,
        "List the billable diagnoses and procedures in this clinical note, each with a suggested "
        "ICD-10 or CPT code.\n\nNote:\n{document}",
        200,
    ),
    (
        "merge",
        "Documentation",
        1,
        "Write the discharge summary from these drafts, with the sections Hospital course, "
        "Medications and follow-up, and Coding. Keep every fact of the drafts and add none.\n\n{outputs}",
        400,
    ),
]
