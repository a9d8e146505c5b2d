"""Inference tasks (every request's record, sync or async: its lifecycle, its fenced outcome
write, its visibility) and the batches of the async API."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import connections, models

from apps.audit.fields import EncryptedJSONField, EncryptedTextField
from apps.gpu.priority import Priority  # admission orders by it too, so it lives below (apps/gpu)
from apps.inference.models.base import LockingQuerySet, _concrete, _converted, _from_rows
from apps.inference.models.registry import ModelEndpoint

DEADLINE_EXCEEDED = "deadline_exceeded"
DEADLINE_MESSAGE = "The task was still queued at its deadline."
# The columns a finished task's outcome writes (``InferenceTaskQuerySet.write_outcomes``).
OUTCOME_FIELDS = (
    "status",
    "result",
    "http_status",
    "error_code",
    "error_message",
    "prompt_tokens",
    "completion_tokens",
    "tool_calls",
    "endpoint",
    "model_name",
    "finished_at",
    "inference_ms",
    "latency_ms",
    "result_expires_at",
    "answer_chars",
    "finish_reason",
    "refused",
)


class InferenceTaskQuerySet(LockingQuerySet["InferenceTask"]):
    """Who sees a task, and the async task's lifecycle, each transition written once:
    QUEUED → PROCESSING (``claim``) → COMPLETED | FAILED (``write_outcomes``, ``fail``), back to
    QUEUED (``requeue``); QUEUED → CANCELLED (``cancel``) or EXPIRED (``expire``, ``expire_due``);
    the content dropped at the end of retention (``purge_due``). The transitions update the rows of
    this queryset; the guards (status still QUEUED, the attempt read under the rows' locks) are the
    callers' (apps.inference.queue), as each knows what it holds."""

    def owned_by(self, principal: Any) -> InferenceTaskQuerySet:
        """The caller's own tasks at their current location, and no one else's: a clinician's
        history (not even the location admin sees it: ``apps.inference.conversations``)."""
        return self.filter(user_id=principal.user_id, location_id=principal.location_pk)

    def visible_to(self, principal: Any) -> InferenceTaskQuerySet:
        """What a caller may see, the one rule of every view and websocket: a location admin every
        task of their current location; anyone else their own tasks there (another user's task, a
        task of another location or organization, is not found: 404)."""
        if principal.role == "admin":
            return self.filter(location_id=principal.location_pk)
        return self.filter(user_id=principal.user_id, location_id=principal.location_pk)

    def usage_visible_to(self, principal: Any) -> InferenceTaskQuerySet:
        """Whose usage a caller may see (``GET /v1/usage``): an admin or auditor their whole
        organization's, anyone else their own (at every location: it is their own use)."""
        if principal.role in ("admin", "auditor") and principal.organization_id is not None:
            return self.filter(location__organization_id=principal.organization_id)
        return self.filter(user_id=principal.user_id)

    def by_pk(self, ids: Any) -> InferenceTaskQuerySet:
        """Tasks by primary key alone, unordered. Filters on status here would let SQLite's planner
        pick the status index and scan every queued task: a cost growing with the queue's depth."""
        return self.filter(id__in=ids).order_by()

    def dedup_candidates(self, keys: list[str]) -> list[tuple[Any, ...]]:
        """``(dedup_key, user_id, location_id, mode, status, result_expires_at, created_at, id)`` of
        every task with one of these de-duplication keys (its index), read for every submit: written
        once as SQL (each column converted as the ORM would), as the ORM's filter cost more to build
        and compile than the read."""
        if not keys:
            return []
        connection = connections[self.db]
        qn = connection.ops.quote_name
        names = ["dedup_key", "user", "location", "mode", "status", "result_expires_at", "created_at", "id"]
        fields = _concrete(InferenceTask, names)
        sql = (
            f"SELECT {', '.join(qn(f.column) for f in fields)} FROM {qn(InferenceTask._meta.db_table)} "
            f"WHERE {qn(fields[0].column)} IN ({', '.join(['%s'] * len(keys))})"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, keys)
            rows = cursor.fetchall()
        return [tuple(values) for values in _converted(InferenceTask, self.db, names, rows)]

    def queued(self) -> InferenceTaskQuerySet:
        """Async tasks waiting in the queue (the depth that admission and health count)."""
        return self.filter(status=InferenceTask.Status.QUEUED, mode=InferenceTask.Mode.ASYNC)

    def processing(self) -> InferenceTaskQuerySet:
        return self.filter(status=InferenceTask.Status.PROCESSING, mode=InferenceTask.Mode.ASYNC)

    def live(self) -> InferenceTaskQuerySet:
        """Live async tasks (queued or processing)."""
        return self.filter(mode=InferenceTask.Mode.ASYNC, status__in=LIVE_STATUSES)

    # --- transitions ----------------------------------------------------------------------------

    def claim(self, now: Any, waits: dict[Any, int]) -> None:
        """QUEUED → PROCESSING for the tasks of ``waits`` (ms in the queue by task id): ``attempts`` + 1
        (the fencing token), started now. Under the rows' locks: the caller read them QUEUED.

        One parametrised UPDATE run for every task (``executemany``), as ``write_outcomes``: the
        ORM's ``Case(When(...))`` for per-row waits cost more to build than the claim's other
        statements together."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        status, attempts, started, wait, pk = _concrete(
            InferenceTask, ["status", "attempts", "started_at", "queue_wait_ms", "id"]
        )
        sql = (
            f"UPDATE {qn(InferenceTask._meta.db_table)} SET {qn(status.column)} = %s, "
            f"{qn(attempts.column)} = {qn(attempts.column)} + 1, {qn(started.column)} = %s, "
            f"{qn(wait.column)} = %s WHERE {qn(pk.column)} = %s"
        )
        stamp = started.get_db_prep_save(now, connection)
        params = [
            [InferenceTask.Status.PROCESSING.value, stamp, ms, pk.get_db_prep_value(task_id, connection)]
            for task_id, ms in waits.items()
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)

    def claim_delivered(self, task_id: Any, now: Any, peek: tuple[str, list[Any]]) -> tuple[InferenceTask, bool] | None:
        """QUEUED → PROCESSING for the task the broker delivered, in ONE statement: ``UPDATE … WHERE
        id = … AND status = 'queued' AND (deadline IS NULL OR deadline > now) RETURNING`` the whole
        row (its request decrypted as a read would), attempts + 1 (the fencing token), started now,
        its ``queue_wait_ms`` computed by the database. The same statement peeks at the queue: the
        second value says whether queue ``key`` has any other entry ready now (no lock), so a claim
        that finds nothing there looks for no companions.

        None when the row was not QUEUED before its deadline (processing after a lost worker,
        finished, cancelled, expired or due, gone): the caller reads it under a lock to say which.
        On PostgreSQL the UPDATE waits for a concurrent writer of the row (a cancel) and re-reads it;
        SQLite's IMMEDIATE transaction already holds the write lock (SQLite ≥ 3.35 has RETURNING)."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        meta = InferenceTask._meta
        status, attempts, started, wait, pk, deadline, queued, created = _concrete(
            InferenceTask,
            ["status", "attempts", "started_at", "queue_wait_ms", "id", "deadline", "queued_at", "created_at"],
        )
        since = f"COALESCE({qn(queued.column)}, {qn(created.column)})"
        if connection.vendor == "postgresql":
            ms = f"FLOOR(EXTRACT(EPOCH FROM (CAST(%s AS timestamp with time zone) - {since})) * 1000)"
            waited = f"CAST(GREATEST({ms}, 0) AS integer)"
        else:  # SQLite: julianday() reads Django's 'YYYY-MM-DD HH:MM:SS.ffffff' (to the millisecond)
            waited = f"MAX(CAST(ROUND((julianday(%s) - julianday({since})) * 86400000.0) AS INTEGER), 0)"
        columns = ", ".join(qn(f.column) for f in meta.concrete_fields)
        table = qn(meta.db_table)
        sql = (
            f"UPDATE {table} SET {qn(status.column)} = %s, {qn(attempts.column)} = {qn(attempts.column)} + 1, "
            f"{qn(started.column)} = %s, {qn(wait.column)} = {waited} "
            f"WHERE {qn(pk.column)} = %s AND {qn(status.column)} = %s "
            f"AND ({qn(deadline.column)} IS NULL OR {qn(deadline.column)} > %s) "
            f"RETURNING {columns}, ({peek[0]}) AS medai_next_ready"
        )
        stamp = started.get_db_prep_save(now, connection)
        params = [
            InferenceTask.Status.PROCESSING.value,
            stamp,
            stamp,
            pk.get_db_prep_value(pk.to_python(task_id), connection),
            InferenceTask.Status.QUEUED.value,
            deadline.get_db_prep_save(now, connection),
            *peek[1],
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if not rows:
            return None
        [task] = _from_rows(InferenceTask, self.db, rows)
        return task, rows[0][-1] is not None

    def requeue(self) -> int:
        """Back to QUEUED, as if never started (admission turned it away, or its entry was lost)."""
        return self.update(status=InferenceTask.Status.QUEUED, started_at=None, queue_wait_ms=None)

    def fail(self, code: str, message: str, now: Any, expires: Any) -> int:
        """→ FAILED with ``code`` and ``message``, its content kept until ``expires``."""
        return self.update(
            status=InferenceTask.Status.FAILED,
            result=None,
            http_status=None,
            error_code=code,
            error_message=message,
            finished_at=now,
            result_expires_at=expires,
        )

    def cancel(self, now: Any, expires: Any) -> int:
        """QUEUED → CANCELLED (only tasks still queued; a running or finished one is left as it is).
        The prompt is kept until ``expires``, as a failed task's is, so that its owner may retry it
        (apps.inference.queue.retry); the retention sweep purges it then. The number cancelled."""
        return self.filter(status=InferenceTask.Status.QUEUED).update(
            status=InferenceTask.Status.CANCELLED, finished_at=now, result_expires_at=expires
        )

    def expire(self, now: Any, expires: Any) -> int:
        """→ EXPIRED (still queued at its deadline), the prompt kept until ``expires`` (a retry may
        resubmit it). The caller checked QUEUED."""
        return self.update(
            status=InferenceTask.Status.EXPIRED,
            finished_at=now,
            error_code=DEADLINE_EXCEEDED,
            error_message=DEADLINE_MESSAGE,
            result_expires_at=expires,
        )

    def expire_due(self, now: Any, expires: Any) -> tuple[list[Any], int]:
        """Every task still QUEUED past its deadline → EXPIRED: the ids found and how many expired."""
        overdue = list(self.filter(status=InferenceTask.Status.QUEUED, deadline__lte=now).values_list("id", flat=True))
        return overdue, self.filter(id__in=overdue, status=InferenceTask.Status.QUEUED).expire(now, expires)

    def purge_due(self, now: Any, held: Any, sync_before: Any = None) -> int:
        """Content past retention is removed, metadata kept: finished async tasks, stored sync
        exchanges (``store: true`` on chat completions) and stored responses
        (apps/inference/responses/store.py) past ``result_expires_at`` lose their prompt, result
        and error text (their outcome stays: a purged COMPLETED task is still COMPLETED;
        ``content_purged_at`` says since when); other sync records (which never keep a prompt) lose
        the error text a backend may have echoed once they finished before ``sync_before``. A task
        under an active legal hold keeps everything, and so does a task of a batch that holds its
        results (``TaskBatch.holds_results``). ``held``: the condition of a task under an active hold
        (``LegalHold.objects.covering_task()``)."""
        S = InferenceTask.Status
        purged = (
            self.filter(  # async tasks, stored exchanges and stored responses (sync records that keep content)
                result_expires_at__lte=now,
                content_purged_at__isnull=True,
                status__in=(S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED),
            )
            .exclude(batch__holds_results=True)
            .exclude(held)
            .update(request=None, result=None, error_message="", content_purged_at=now)
        )
        if sync_before is not None:
            purged += (
                self.filter(
                    mode=InferenceTask.Mode.SYNC,
                    finished_at__lte=sync_before,
                    content_purged_at__isnull=True,
                    result_expires_at__isnull=True,
                )
                .exclude(error_message="")
                .exclude(held)
                .update(error_message="", content_purged_at=now)
            )
        return purged

    def write_outcomes(self, tasks: list[InferenceTask], attempts: list[int] | None = None) -> int:
        """PROCESSING → COMPLETED | FAILED: each task's ``OUTCOME_FIELDS`` as set on the instance, by
        primary key (the caller read the fence under the rows' locks), or with ``attempts`` (each
        task's fencing token) fenced by the statement itself: a row is written only while it is
        still PROCESSING under that attempt. The number of rows written.

        One parametrised UPDATE run for every row (``executemany``). The ORM would compile an UPDATE
        per row (most of a finished task's cost), and ``bulk_update``'s CASE expressions cost more to
        build than the statements they replace. Values go through each field's own ``get_db_prep_save``
        (encryption of the result included), so this writes exactly what ``save()`` would."""
        connection = connections[self.db]
        meta = InferenceTask._meta
        fields = _concrete(InferenceTask, OUTCOME_FIELDS)
        [pk] = _concrete(InferenceTask, ["id"])
        qn = connection.ops.quote_name
        sql = (
            f"UPDATE {qn(meta.db_table)} SET {', '.join(f'{qn(f.column)} = %s' for f in fields)} "
            f"WHERE {qn(pk.column)} = %s"
        )
        params = [
            [f.get_db_prep_save(getattr(t, f.attname), connection) for f in fields]
            + [pk.get_db_prep_value(t.pk, connection)]
            for t in tasks
        ]
        if attempts is not None:
            status, attempt = _concrete(InferenceTask, ["status", "attempts"])
            sql += f" AND {qn(status.column)} = %s AND {qn(attempt.column)} = %s"
            processing = InferenceTask.Status.PROCESSING.value
            params = [row + [processing, n] for row, n in zip(params, attempts, strict=True)]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)
            return cursor.rowcount  # summed over the rows (sqlite3, psycopg)


class InferenceTask(models.Model):
    """One inference, sync or async: who asked, where, which model answered, tokens, timings.

    Prompts and results are PHI: they live only in the encrypted ``request``/``result`` columns,
    and sync requests keep them only when the caller asked (``store: true``: a stored exchange,
    ``apps.inference.conversations``), until the end of retention as an async task's.
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
    kind = models.CharField(max_length=16, default="chat")  # chat | completions | response | embeddings | rerank
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    priority = models.SmallIntegerField(choices=Priority.choices, default=Priority.NORMAL)
    # (indexed by task_owner_recent, which it leads)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="tasks", db_index=False
    )
    location = models.ForeignKey("accounts.Location", on_delete=models.PROTECT, related_name="tasks")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    agent_type = models.CharField(max_length=64, blank=True)
    requested_model = models.CharField(max_length=100, blank=True)
    endpoint = models.ForeignKey(ModelEndpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    model_name = models.CharField(max_length=100, blank=True, help_text="The model that answered.")
    stream = models.BooleanField(default=False)
    cached = models.BooleanField(default=False, help_text="Answered by the response cache: no model ran.")
    arm = models.CharField(max_length=100, blank=True, help_text="The A/B arm (model) the split assigned, if any.")
    request = EncryptedJSONField(null=True, blank=True)
    result = EncryptedJSONField(null=True, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    # Encrypted: a backend's error text may echo the prompt ("invalid input: <the note>").
    error_message = EncryptedTextField(blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    tools_offered = models.PositiveSmallIntegerField(default=0, help_text="Tools the model was offered (0: none).")
    tool_calls = models.PositiveSmallIntegerField(default=0, help_text="Tool calls the model answered with.")
    # What quality monitoring needs of the answer once its content is purged, taken when it is
    # recorded (apps/inference/answer_features.py): its length, why it ended, whether it refused.
    answer_chars = models.PositiveIntegerField(
        null=True, blank=True, help_text="Characters of the answer's text (none: no answer, or before this was kept)."
    )
    finish_reason = models.CharField(max_length=32, blank=True, help_text="The model's finish_reason.")
    refused = models.BooleanField(
        default=False, help_text="The answer was a refusal (apps/inference/answer_features.py)."
    )
    end_user = models.CharField(
        max_length=256,
        blank=True,
        help_text="The caller's end user, as it named them (OpenAI's user / safety_identifier).",
    )
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    # What the request's audit events carry, kept for the worker's: the break-glass grant it was made
    # under (its id; accounts.BreakGlassGrant) and its X-Purpose-Of-Use.
    break_glass = models.PositiveIntegerField(null=True, blank=True, help_text="The break-glass grant it ran under.")
    purpose_of_use = models.CharField(max_length=64, blank=True)
    # A stored exchange's conversation (``store: true``): the exchanges of one conversation share it.
    conversation_id = models.UUIDField(null=True, blank=True)  # (indexed where set: task_conversation)
    created_at = models.DateTimeField(db_index=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    queue_wait_ms = models.PositiveIntegerField(null=True, blank=True)
    inference_ms = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Total time medai spent, end to end.")
    # async queue (issue 3)
    # (indexed where set, with the status: task_batch_status)
    batch = models.ForeignKey(
        "TaskBatch", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks", db_index=False
    )
    dedup_key = models.CharField(max_length=64, blank=True, db_index=True)
    deadline = models.DateTimeField(null=True, blank=True, help_text="A task still queued then expires.")
    result_expires_at = models.DateTimeField(null=True, blank=True, help_text="When the result's content is purged.")
    # The outcome (status) stays when retention ends; this says that the prompt and result are gone, and since when.
    content_purged_at = models.DateTimeField(
        null=True, blank=True, help_text="When the prompt and result were purged (retention, cancel, expiry)."
    )

    objects = InferenceTaskQuerySet.as_manager()
    # Not a column: a queued task's place in line, set by the status views (queue.positions) for
    # the status serializer.
    position: int | None

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "location", "-created_at"], name="task_owner_recent"),
            models.Index(fields=["status", "-priority", "created_at"], name="task_status_prio"),
            # the retention sweep: tasks whose content is still kept, by the end of their retention
            models.Index(
                fields=["result_expires_at"], condition=models.Q(content_purged_at__isnull=True), name="task_purge_due"
            ),
            # Partial, so that the rows that leave them empty (every sync request's record) skip them: a
            # batch's tasks by status (its live count on every task's end, apps.inference.filebatch.feed)
            # and a conversation's exchanges.
            models.Index(fields=["batch", "status"], condition=models.Q(batch__isnull=False), name="task_batch_status"),
            models.Index(
                fields=["conversation_id"], condition=models.Q(conversation_id__isnull=False), name="task_conversation"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.mode} {self.status}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


LIVE_STATUSES = (InferenceTask.Status.QUEUED, InferenceTask.Status.PROCESSING)


# --- the async task queue (issue 3) ------------------------------------------------------------


class TaskBatchQuerySet(models.QuerySet["TaskBatch"]):
    def visible_to(self, principal: Any) -> TaskBatchQuerySet:
        """What a caller may see: the same rule as tasks (a location admin the location's batches,
        anyone else their own there)."""
        if principal.role == "admin":
            return self.filter(location_id=principal.location_pk)
        return self.filter(user_id=principal.user_id, location_id=principal.location_pk)


class TaskBatch(models.Model):
    """A batch of async tasks submitted together; progress is counted from its tasks."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="batches")
    location = models.ForeignKey("accounts.Location", on_delete=models.PROTECT, related_name="batches")
    total = models.PositiveIntegerField(default=0)
    # De-duplication per item: tasks of earlier requests that items of this batch were answered
    # with (their ``batch`` is another one, or none); progress counts them with the batch's own.
    reused_task_ids = models.JSONField(default=list, blank=True)
    # While set, retention purges nothing of the batch's tasks: a file batch's line results are
    # kept until its output file is written (apps.inference.filebatch), then cleared.
    holds_results = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TaskBatchQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"batch {self.id} ({self.total})"
