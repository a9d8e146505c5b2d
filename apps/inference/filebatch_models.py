"""The Files and Batch API's rows (imported by apps.inference.models, so nothing of the app is
imported here): a stored file (its content in encrypted parts) and a file batch
(OpenAI's Batch, on a ``TaskBatch`` of the queue).

A file's content is PHI (prompts in, answers out): it is kept only in ``FilePart.data``, encrypted
at rest like every prompt and result (apps.audit.fields), in parts of whole lines of at most
``PART_BYTES`` each, so that a download streams part by part and a key rotation re-encrypts
rows of bounded size. Its filename is encrypted too (a clinician's "garcia-notes.jsonl").

A deleted or purged file keeps its row (the batches that name it still do) and loses its parts:
``deleted_at`` says since when; to the API it no longer exists (404).

A file batch is one-to-one with the ``TaskBatch`` its lines' tasks belong to (the same id), so
the queue's batch progress and the websocket's per-batch subscription apply to it unchanged.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import connections, models

from apps.audit.fields import EncryptedJSONField, EncryptedTextField
from apps.gpu.priority import Priority

PART_BYTES = 64 * 1024  # a part holds whole lines up to this size (one longer line: a part of its own)
FILE_PREFIX = "file-"
BATCH_PREFIX = "batch_"


def _owned(qs: Any, principal: Any) -> Any:
    return qs.filter(user_id=principal.user_id, location_id=principal.location_pk)


class StoredFileQuerySet(models.QuerySet["StoredFile"]):
    def visible_to(self, principal: Any) -> StoredFileQuerySet:
        """What a caller may see: their own files at their current location (not a colleague's,
        not a location admin's view of others': a file is its owner's alone), not deleted."""
        return _owned(self, principal).filter(deleted_at__isnull=True)

    def live(self) -> StoredFileQuerySet:
        return self.filter(deleted_at__isnull=True)


class StoredFile(models.Model):
    """An uploaded file (purpose ``batch``) or one a batch wrote (``batch_output``)."""

    class Purpose(models.TextChoices):
        BATCH = "batch"
        BATCH_OUTPUT = "batch_output"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    location = models.ForeignKey("accounts.Location", on_delete=models.PROTECT, related_name="+")
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    filename = EncryptedTextField(blank=True)
    bytes = models.PositiveBigIntegerField(default=0)
    lines = models.PositiveIntegerField(default=0, help_text="Requests (non-blank lines) in the file.")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True, help_text="When its content is purged.")
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Deleted by its owner, or purged.")

    objects = StoredFileQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "location", "-created_at"], name="file_owner_recent"),
            models.Index(fields=["expires_at"], condition=models.Q(deleted_at__isnull=True), name="file_purge_due"),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def public_id(self) -> str:
        return f"{FILE_PREFIX}{self.id.hex}"


class FilePart(models.Model):
    """Consecutive whole lines of a file, as uploaded (blank ones too), encrypted: ``first_request``
    is the 0-based index of the first request in it (blank lines are no request), ``first_number``
    the file's 1-based number of its first line."""

    file = models.ForeignKey(StoredFile, on_delete=models.CASCADE, related_name="parts")
    index = models.PositiveIntegerField()
    first_request = models.PositiveIntegerField()
    first_number = models.PositiveIntegerField()
    data = EncryptedTextField()

    class Meta:
        ordering = ["file", "index"]
        constraints = [models.UniqueConstraint(fields=["file", "index"], name="file_part_once")]

    def __str__(self) -> str:
        return f"{self.file_id}#{self.index}"


class FileBatchQuerySet(models.QuerySet["FileBatch"]):
    def locked(self) -> FileBatchQuerySet:
        """Row locks where the database has them (``LockingQuerySet.locked`` of apps.inference.models,
        which this module cannot import: that module imports this one)."""
        if connections[self.db].features.has_select_for_update:
            return self.select_for_update()
        return self

    def visible_to(self, principal: Any) -> FileBatchQuerySet:
        """What a caller may see: their own batches at their current location (as their files)."""
        return _owned(self, principal)

    def open(self) -> FileBatchQuerySet:
        """Batches that are not final yet (being fed, run, cancelled or written out)."""
        return self.filter(status__in=FileBatch.OPEN)


class FileBatch(models.Model):
    """OpenAI's Batch: the lines of an input file run as tasks of the queue, fed in parts, their
    answers written to an output file (and an error file) when the last one ends.

    validating → in_progress → finalizing → completed; failed (nothing could be queued);
    in_progress → cancelling → cancelled (a cancel); in_progress → expired (the completion window
    ended first). The ``*_at`` columns are OpenAI's timestamps of each."""

    class Status(models.TextChoices):
        VALIDATING = "validating"
        FAILED = "failed"
        IN_PROGRESS = "in_progress"
        FINALIZING = "finalizing"
        COMPLETED = "completed"
        EXPIRED = "expired"
        CANCELLING = "cancelling"
        CANCELLED = "cancelled"

    OPEN = (Status.VALIDATING, Status.IN_PROGRESS, Status.FINALIZING, Status.CANCELLING)

    task_batch = models.OneToOneField(
        "inference.TaskBatch", primary_key=True, on_delete=models.CASCADE, related_name="file_batch"
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    location = models.ForeignKey("accounts.Location", on_delete=models.PROTECT, related_name="+")
    # Who created it, as authenticated then (role, scopes, key, break-glass grant; no secret): the
    # principal every later part of the file is submitted as (``feed``).
    principal = models.JSONField(default=dict)
    correlation_id = models.CharField(max_length=64, blank=True)
    input_file = models.ForeignKey(StoredFile, on_delete=models.PROTECT, related_name="+")
    output_file = models.ForeignKey(StoredFile, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    error_file = models.ForeignKey(StoredFile, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    endpoint = models.CharField(max_length=64)
    completion_window = models.CharField(max_length=8, default="24h")
    metadata = EncryptedJSONField(null=True, blank=True)  # the client's, may name a patient
    output_ttl = models.PositiveIntegerField(null=True, blank=True, help_text="output_expires_after, seconds.")
    priority = models.SmallIntegerField(choices=Priority.choices, default=Priority.LOW)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.VALIDATING)
    total = models.PositiveIntegerField(default=0)
    fed = models.PositiveIntegerField(default=0, help_text="Lines submitted to the queue so far (in file order).")
    # Lines that could not be queued ({line, custom_id, status_code, code, message}): the error file
    # has them. Encrypted: a validation message may quote the request.
    rejected = EncryptedJSONField(null=True, blank=True)
    # OpenAI's ``errors`` (batch-level: why a part could not be queued yet, or why the batch failed).
    errors = EncryptedJSONField(null=True, blank=True)
    # Why the lines not fed yet never will be (batch_cancelled, batch_expired, the owner's refusal):
    # set, it stops the feed; the error file then answers each of them with it.
    unfed_code = models.CharField(max_length=64, blank=True)
    unfed_message = models.TextField(blank=True)
    # The outcome, counted when the files are written (live counts are read from the tasks).
    completed_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField()
    in_progress_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    finalizing_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    objects = FileBatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "location", "-created_at"], name="file_batch_owner_recent"),
            models.Index(fields=["status"], name="file_batch_status"),
        ]

    def __str__(self) -> str:
        return self.public_id

    @property
    def public_id(self) -> str:
        return f"{BATCH_PREFIX}{self.task_batch_id.hex}"

    @property
    def is_final(self) -> bool:
        return self.status not in self.OPEN
