"""What is kept about answers beside the task: legal holds that suspend a purge, and clinicians'
feedback against model, route and arm."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Exists, OuterRef

from apps.audit.fields import EncryptedTextField
from apps.inference.models.registry import ModelEndpoint
from apps.inference.models.tasks import InferenceTask


class LegalHoldQuerySet(models.QuerySet["LegalHold"]):
    def active(self) -> LegalHoldQuerySet:
        return self.filter(released_at__isnull=True)

    def covering_task(self) -> Exists:
        """In a query of tasks: an active hold covers the task (itself, its user or its location)."""
        return Exists(
            self.active().filter(
                models.Q(task_id=OuterRef("id"))
                | models.Q(user_id=OuterRef("user_id"))
                | models.Q(location_id=OuterRef("location_id"))
            )
        )


class LegalHold(models.Model):
    """A legal hold: while it is active, retention purges nothing of what it covers (one task, every
    task of a user, or every task of a location), so content stays for litigation or an inquiry.
    Placed and released through ``apps.inference.retention`` (each audited), never deleted."""

    task = models.ForeignKey(InferenceTask, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    location = models.ForeignKey("accounts.Location", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField(help_text="Why (case number, inquiry): required.")
    placed_at = models.DateTimeField()
    placed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    released_at = models.DateTimeField(null=True, blank=True, editable=False)
    released_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    release_reason = models.TextField(blank=True, editable=False)

    objects = LegalHoldQuerySet.as_manager()

    class Meta:
        ordering = ["-placed_at"]
        constraints = [
            models.CheckConstraint(
                name="legal_hold_one_target",
                condition=(
                    models.Q(task__isnull=False, user__isnull=True, location__isnull=True)
                    | models.Q(task__isnull=True, user__isnull=False, location__isnull=True)
                    | models.Q(task__isnull=True, user__isnull=True, location__isnull=False)
                ),
            )
        ]
        indexes = [
            models.Index(fields=["task"], condition=models.Q(released_at__isnull=True), name="hold_active_task"),
            models.Index(fields=["user"], condition=models.Q(released_at__isnull=True), name="hold_active_user"),
            models.Index(
                fields=["location"], condition=models.Q(released_at__isnull=True), name="hold_active_location"
            ),
        ]

    def __str__(self) -> str:
        state = "released" if self.released_at else "active"
        return f"hold on {self.target_label} ({state})"

    @property
    def target_label(self) -> str:
        if self.task_id:
            return f"task {self.task_id}"
        if self.user_id:
            return f"user #{self.user_id}"
        return f"location #{self.location_id}"


# --- feedback on answers ----------------------------------------------------------------------


class Feedback(models.Model):
    """A clinician's rating of one answer (an exchange of their history: a stored exchange or an
    async chat task), kept against the model, the route (agent type) and the A/B arm of the answer
    (copied from it: they stay when the exchange's content is purged), for quality monitoring
    (apps/inference/quality.py) and the arms' comparison (apps/inference/experiments.py). One per user per exchange: rating again changes it (``apps.inference.feedback``).

    The comment is free text a clinician typed and may name a patient: encrypted, never in the
    audit, and purged with the exchange's own content at the end of its retention (the rating, the
    reasons and the model stay)."""

    class Rating(models.TextChoices):
        UP = "up"
        DOWN = "down"

    class Reason(models.TextChoices):
        WRONG = "wrong"
        UNSAFE = "unsafe"
        INCOMPLETE = "incomplete"
        OUTDATED = "outdated"
        OTHER = "other"

    task = models.ForeignKey(
        InferenceTask, null=True, on_delete=models.SET_NULL, related_name="feedback", help_text="The exchange rated."
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    location = models.ForeignKey("accounts.Location", on_delete=models.PROTECT, related_name="+")
    endpoint = models.ForeignKey(ModelEndpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    model_name = models.CharField(max_length=100, blank=True, help_text="The model that answered.")
    agent_type = models.CharField(max_length=64, blank=True, help_text="The route asked (empty: a model was named).")
    arm = models.CharField(max_length=100, blank=True, help_text="The A/B arm the exchange was assigned, if any.")
    rating = models.CharField(max_length=4, choices=Rating.choices)
    reasons = models.JSONField(default=list, blank=True, help_text="Reason codes: " + ", ".join(Reason.values))
    comment = EncryptedTextField(blank=True, help_text="The clinician's words (stored encrypted).")
    comment_purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When the comment was purged with the exchange's content."
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["task", "user"], name="feedback_one_per_user_per_exchange")]
        indexes = [
            models.Index(fields=["model_name", "-created_at"], name="feedback_model_recent"),
            models.Index(fields=["agent_type", "-created_at"], name="feedback_route_recent"),
        ]
        verbose_name_plural = "feedback"

    def __str__(self) -> str:
        return f"{self.rating} on {self.task_id}"
