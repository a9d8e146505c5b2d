from __future__ import annotations

import uuid
import weakref
from typing import Any, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import connections, models
from django.db.models import Exists, F, OuterRef

from apps.audit.fields import EncryptedJSONField, EncryptedTextField
from apps.gpu.priority import Priority  # admission orders by it too, so it lives below (apps/gpu)


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


_M = TypeVar("_M", bound=models.Model)


class LockingQuerySet(models.QuerySet[_M]):
    def locked(self, skip: bool = False) -> LockingQuerySet[_M]:
        """Row locks where the database has them (PostgreSQL; with ``skip``, rows another transaction
        holds are skipped). SQLite's IMMEDIATE transaction already holds the write lock."""
        if connections[self.db].features.has_select_for_update_skip_locked:
            return self.select_for_update(skip_locked=skip)
        return self


def _concrete(model: type[models.Model], names: Any) -> list[models.Field[Any, Any]]:
    """The model's columns of these field names, in their order (for the statements written in SQL)."""
    by_name = {f.name: f for f in model._meta.concrete_fields}
    return [by_name[name] for name in names]


_readers: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], tuple[Any, list[Any]]]] = weakref.WeakKeyDictionary()


def _converted(model: type[models.Model], using: str, names: list[str], rows: list[Any]) -> list[list[Any]]:
    """The values of rows whose first columns are ``model``'s fields ``names`` (in order; the rest is
    ignored), each converted as the ORM's own read converts it: the backend's converters, then the
    field's (decryption of the encrypted fields; SQLite's dates, UUIDs and booleans). For the
    statements written in SQL; the converters are looked up once per connection (a thread's own)."""
    connection = connections[using]
    by_field = _readers.setdefault(connection, {})
    readers = []
    for name in names:
        reader = by_field.get((model._meta.label, name))
        if reader is None:
            col = model._meta.get_field(name).get_col(model._meta.db_table)  # type: ignore[union-attr]
            reader = by_field[(model._meta.label, name)] = (
                col,
                connection.ops.get_db_converters(col) + col.get_db_converters(connection),
            )
        readers.append(reader)
    found = []
    for row in rows:
        values = list(row[: len(names)])
        for i, (col, converters) in enumerate(readers):
            for convert in converters:
                values[i] = convert(values[i], col, connection)
        found.append(values)
    return found


def _from_rows(model: type[_M], using: str, rows: list[Any]) -> list[_M]:
    """Instances of ``model`` from rows whose first values are its concrete columns in order
    (``_converted``): the whole rows a ``RETURNING`` gives."""
    fields = model._meta.concrete_fields
    values = _converted(model, using, [f.name for f in fields], rows)
    names = [f.attname for f in fields]
    return [model.from_db(using, names, v) for v in values]


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

    def live_without_entry(self) -> InferenceTaskQuerySet:
        """Live async tasks (queued or processing) that have no queue entry: lost ones."""
        entry = QueueEntry.objects.filter(task_id=OuterRef("id"))
        return self.filter(mode=InferenceTask.Mode.ASYNC, status__in=LIVE_STATUSES).exclude(Exists(entry))

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

    def claim_delivered(self, task_id: Any, now: Any, key: str) -> tuple[InferenceTask, bool] | None:
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
        meta, entries = InferenceTask._meta, QueueEntry._meta
        status, attempts, started, wait, pk, deadline, queued, created = _concrete(
            InferenceTask,
            ["status", "attempts", "started_at", "queue_wait_ms", "id", "deadline", "queued_at", "created_at"],
        )
        e_id, e_key, e_locked, e_rank = (
            qn(f.column) for f in _concrete(QueueEntry, ["id", "key", "locked_until", "rank"])
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
            f"RETURNING {columns}, (SELECT {e_id} FROM {qn(entries.db_table)} WHERE {e_key} = %s "
            f"AND {e_locked} <= %s ORDER BY {e_rank} LIMIT 1) AS medai_next_ready"
        )
        stamp = started.get_db_prep_save(now, connection)
        params = [
            InferenceTask.Status.PROCESSING.value,
            stamp,
            stamp,
            pk.get_db_prep_value(pk.to_python(task_id), connection),
            InferenceTask.Status.QUEUED.value,
            deadline.get_db_prep_save(now, connection),
            key,
            _concrete(QueueEntry, ["locked_until"])[0].get_db_prep_save(now, connection),
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

    def not_on_hold(self) -> InferenceTaskQuerySet:
        """Tasks no active legal hold covers (on the task itself, its user or its location)."""
        holds = LegalHold.objects.active().filter(
            models.Q(task_id=OuterRef("id"))
            | models.Q(user_id=OuterRef("user_id"))
            | models.Q(location_id=OuterRef("location_id"))
        )
        return self.exclude(Exists(holds))

    def purge_due(self, now: Any, sync_before: Any = None) -> int:
        """Content past retention is removed, metadata kept: finished async tasks, stored sync
        exchanges (``store: true`` on chat completions) and stored responses
        (apps/inference/responses/store.py) past ``result_expires_at`` lose their prompt, result
        and error text (their outcome stays: a purged COMPLETED task is still COMPLETED;
        ``content_purged_at`` says since when); other sync records (which never keep a prompt) lose
        the error text a backend may have echoed once they finished before ``sync_before``. A task
        under an active legal hold keeps everything, and so does a task of a batch that holds its
        results (``TaskBatch.holds_results``)."""
        S = InferenceTask.Status
        purged = (
            self.filter(  # async tasks, stored exchanges and stored responses (sync records that keep content)
                result_expires_at__lte=now,
                content_purged_at__isnull=True,
                status__in=(S.COMPLETED, S.FAILED, S.CANCELLED, S.EXPIRED),
            )
            .exclude(batch__holds_results=True)
            .not_on_hold()
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
                .not_on_hold()
                .update(error_message="", content_purged_at=now)
            )
        # A comment on an answer goes with the answer (held exchanges are not purged, so theirs stay).
        Feedback.objects.filter(task__content_purged_at__isnull=False, comment_purged_at__isnull=True).exclude(
            comment=""
        ).update(comment="", comment_purged_at=now)
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
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="tasks")
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
    conversation_id = models.UUIDField(null=True, blank=True, db_index=True)
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


class QueueEntryQuerySet(LockingQuerySet["QueueEntry"]):
    """The broker's table, each query written once: the ready head of a queue (``ready``), the
    leased entries (``leased``), those ahead of a rank, the entries of some tasks; leases
    (``lease``, ``release``). The statements of every submit, delivery and run are written once
    as SQL (the ORM's compiler cost more than the statements): the broker's one-statement delivery
    (``deliver``) and acknowledgement (``delete_unless_live``), a location's fair-turn tail
    (``tail_rank``), the places of new tasks (``places``), the peek at the head (``head_priority``)."""

    def in_queue(self, key: str) -> QueueEntryQuerySet:
        return self.filter(key=key)

    def ready(self, key: str, now: Any) -> QueueEntryQuerySet:
        """The entries of queue ``key`` that may be delivered now (not leased), head first: the
        ``(key, rank)`` index read in order, whatever the queue's depth."""
        return self.filter(key=key, locked_until__lte=now).order_by("rank")

    def leased(self, key: str, now: Any) -> QueueEntryQuerySet:
        """The entries of queue ``key`` handed out and not yet acknowledged (their lease running)."""
        return self.filter(key=key, locked_until__gt=now)

    def ahead_of(self, rank: Any) -> QueueEntryQuerySet:
        """Entries that the broker delivers before one of ``rank`` (a value or an ``OuterRef``)."""
        return self.filter(rank__lt=rank)

    def of_tasks(self, task_ids: Any) -> QueueEntryQuerySet:
        return self.filter(task_id__in=task_ids)

    def tail_rank(self, key: str, location_id: int, priority: int) -> float | None:
        """The rank of the last entry of queue ``key`` that this location has at this priority
        (waiting or running), None without any: one read of the ``queue_entry_turns`` index, written
        once as SQL (read for every submit: the ORM's compiler cost more than the read)."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        e_key, e_location, e_priority, e_rank = (
            qn(f.column) for f in _concrete(QueueEntry, ["key", "location_id", "priority", "rank"])
        )
        sql = (
            f"SELECT {e_rank} FROM {qn(QueueEntry._meta.db_table)} WHERE {e_key} = %s AND {e_location} = %s "
            f"AND {e_priority} = %s ORDER BY {e_rank} DESC LIMIT 1"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [key, location_id, priority])
            found = cursor.fetchone()
        return found[0] if found else None

    def places(self, key: str, location_id: int, task_ids: list[Any]) -> dict[Any, int]:
        """For each of ``task_ids`` with an entry in queue ``key``: its 1-based place among the entries
        of queued tasks of ``location_id``'s organization (those ranking before it, + 1), by task id.
        One statement, written once as SQL: the ORM took ~3 ms to build and compile it for each
        submit, where the database answers in microseconds (each place is counted from the
        ``(key, rank)`` index by a correlated subquery)."""
        if not task_ids:
            return {}
        connection = connections[self.db]
        qn = connection.ops.quote_name
        e_key, e_rank, e_task = (qn(f.column) for f in _concrete(QueueEntry, ["key", "rank", "task_id"]))
        t_id, t_status, t_location = (qn(f.column) for f in _concrete(InferenceTask, ["id", "status", "location"]))
        location: type[models.Model] = InferenceTask._meta.get_field("location").related_model  # type: ignore[assignment]
        l_id, l_org = (qn(f.column) for f in _concrete(location, ["id", "organization"]))
        entries, tasks, locations = (
            qn(QueueEntry._meta.db_table),
            qn(InferenceTask._meta.db_table),
            qn(location._meta.db_table),
        )
        sql = (
            f"SELECT e.{e_task}, (SELECT COUNT(*) FROM {entries} w WHERE w.{e_key} = %s AND w.{e_rank} < e.{e_rank} "
            f"AND w.{e_task} IN (SELECT t.{t_id} FROM {tasks} t INNER JOIN {locations} l ON t.{t_location} = l.{l_id} "
            f"WHERE l.{l_org} = (SELECT o.{l_org} FROM {locations} o WHERE o.{l_id} = %s) AND t.{t_status} = %s)) "
            f"FROM {entries} e WHERE e.{e_task} IN ({', '.join(['%s'] * len(task_ids))})"
        )
        [field] = _concrete(QueueEntry, ["task_id"])
        params: list[Any] = [key, location_id, InferenceTask.Status.QUEUED.value]
        params += [field.get_db_prep_value(t, connection) for t in task_ids]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return {field.to_python(task_id): ahead + 1 for task_id, ahead in cursor.fetchall()}

    def delete_unless_live(self, entry_id: int) -> int:
        """Delete the entry ``entry_id`` unless its task is still queued or processing: one statement
        (``DELETE … WHERE id = … AND NOT EXISTS (the live task)``), so a concurrent claim or requeue
        is seen or waited for; the number of rows deleted. Written once as SQL: the broker's
        acknowledgement of every delivery, where the ORM's ``Exists`` cost more to compile than the
        delete."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        e_id, e_task = (qn(f.column) for f in _concrete(QueueEntry, ["id", "task_id"]))
        t_id, t_status = (qn(f.column) for f in _concrete(InferenceTask, ["id", "status"]))
        entries = qn(QueueEntry._meta.db_table)
        sql = (
            f"DELETE FROM {entries} WHERE {e_id} = %s AND NOT EXISTS (SELECT 1 FROM "
            f"{qn(InferenceTask._meta.db_table)} t WHERE t.{t_id} = {entries}.{e_task} AND t.{t_status} IN (%s, %s))"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [entry_id, *(str(s) for s in LIVE_STATUSES)])
            return cursor.rowcount

    def head_priority(self, key: str, now: Any) -> int | None:
        """The priority of the entry of queue ``key`` that would be delivered next, None if none is
        ready: one read of the head of the ``(key, rank)`` index, no lock. Written once as SQL (a
        running worker peeks after each write)."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        e_key, e_locked, e_rank, e_priority = (
            qn(f.column) for f in _concrete(QueueEntry, ["key", "locked_until", "rank", "priority"])
        )
        [stamp] = _concrete(QueueEntry, ["locked_until"])
        sql = (
            f"SELECT {e_priority} FROM {qn(QueueEntry._meta.db_table)} WHERE {e_key} = %s AND {e_locked} <= %s "
            f"ORDER BY {e_rank} LIMIT 1"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [key, stamp.get_db_prep_value(now, connection)])
            found = cursor.fetchone()
        return found[0] if found else None

    def handed_out_ahead(self, key: str, now: Any, rank: float) -> bool:
        """Whether queue ``key`` has an entry ahead of ``rank`` that was handed out (leased) while its
        task is still QUEUED: delivered to a cluster and waiting there for a free worker. One
        statement (an ``EXISTS`` over the leased entries ahead, few: running groups and prefetches),
        written once as SQL."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        e_key, e_locked, e_rank, e_task = (
            qn(f.column) for f in _concrete(QueueEntry, ["key", "locked_until", "rank", "task_id"])
        )
        t_id, t_status = (qn(f.column) for f in _concrete(InferenceTask, ["id", "status"]))
        [stamp] = _concrete(QueueEntry, ["locked_until"])
        sql = (
            f"SELECT 1 FROM {qn(QueueEntry._meta.db_table)} e INNER JOIN {qn(InferenceTask._meta.db_table)} t "
            f"ON t.{t_id} = e.{e_task} WHERE e.{e_key} = %s AND e.{e_locked} > %s AND e.{e_rank} < %s "
            f"AND t.{t_status} = %s LIMIT 1"
        )
        with connection.cursor() as cursor:
            cursor.execute(
                sql, [key, stamp.get_db_prep_value(now, connection), rank, InferenceTask.Status.QUEUED.value]
            )
            return cursor.fetchone() is not None

    def deliveries(self, task_id: Any) -> int:
        """How many times the task's entry was handed out (0 without an entry)."""
        return max(self.filter(task_id=task_id).values_list("deliveries", flat=True), default=0)

    def lease(self, until: Any, *, delivery: bool = False) -> int:
        """Lease these entries until ``until`` (invisible to deliveries meanwhile); ``delivery``: it
        is a delivery, counted in ``deliveries`` (a re-delivery after a lease ends counts again)."""
        if delivery:
            return self.update(locked_until=until, deliveries=F("deliveries") + 1)
        return self.update(locked_until=until)

    def release(self, now: Any) -> int:
        """End these entries' leases now and reset their delivery count (their task goes back to the
        queue in its old place: it did not fail)."""
        return self.update(locked_until=now, deliveries=0)

    def deliver(self, key: str, now: Any, n: int, until: Any) -> list[tuple[int, str]]:
        """Lease the first ``n`` ready entries of queue ``key`` as a delivery: ``(id, payload)``, head
        first, in one statement (``UPDATE … WHERE id IN (SELECT … [FOR UPDATE SKIP LOCKED])
        RETURNING``). On PostgreSQL concurrent deliveries never take the same entry nor wait for
        each other; on SQLite (RETURNING since 3.35) the statement holds the write lock, which
        serialises them."""
        connection = connections[self.db]
        skip = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
        meta = QueueEntry._meta
        qn = connection.ops.quote_name
        names = ("id", "key", "locked_until", "deliveries", "rank", "payload")
        col = {name: qn(f.column) for name, f in zip(names, _concrete(QueueEntry, names), strict=True)}
        table = qn(meta.db_table)
        sql = (
            f"UPDATE {table} SET {col['locked_until']} = %s, {col['deliveries']} = {col['deliveries']} + 1 "
            f"WHERE {col['id']} IN (SELECT {col['id']} FROM {table} "
            f"WHERE {col['key']} = %s AND {col['locked_until']} <= %s "
            f"ORDER BY {col['rank']} LIMIT %s{skip}) "
            f"RETURNING {col['id']}, {col['payload']}, {col['rank']}"
        )
        [stamp] = _concrete(QueueEntry, ["locked_until"])
        with connection.cursor() as cursor:
            cursor.execute(
                sql, [stamp.get_db_prep_value(until, connection), key, stamp.get_db_prep_value(now, connection), n]
            )
            rows = cursor.fetchall()
        return [(pk, payload) for pk, payload, _ in sorted(rows, key=lambda r: r[2])]


class QueueEntry(models.Model):
    """One pending delivery in the priority broker (apps.inference.broker).

    ``rank`` is the enqueue time (epoch seconds) minus ``priority × MEDAI_QUEUE_AGING_SECONDS``:
    ordering by rank gives strict priority order within the aging window and FIFO within a level,
    and a task that waited one aging period counts as one level higher (anti-starvation). Within a
    level, locations take turns: a location's task goes ``MEDAI_QUEUE_FAIR_TURN_SECONDS`` after
    the last one it has queued at that level (``broker.fair_ranks``; ``location_id`` and the
    ``queue_entry_turns`` index find that one).
    ``locked_until`` is the lease: a delivered entry is invisible until then and is deleted on ack.
    """

    key = models.CharField(max_length=100)
    priority = models.SmallIntegerField(default=1)
    rank = models.FloatField()
    enqueued_at = models.DateTimeField()
    locked_until = models.DateTimeField()
    deliveries = models.PositiveIntegerField(default=0)
    task_id = models.UUIDField(null=True, blank=True, db_index=True)
    location_id = models.IntegerField(null=True, blank=True, help_text="The task's location: its fair turn.")
    payload = models.TextField()

    objects = QueueEntryQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["key", "rank"], name="queue_entry_next"),
            models.Index(fields=["key", "location_id", "priority", "rank"], name="queue_entry_turns"),
        ]

    def __str__(self) -> str:
        return f"{self.key}#{self.pk} p{self.priority}"


class LegalHoldQuerySet(models.QuerySet["LegalHold"]):
    def active(self) -> LegalHoldQuerySet:
        return self.filter(released_at__isnull=True)


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


# The Files and Batch API's models live in a module of their own; imported here so the app registry loads them.
from apps.inference.filebatch_models import FileBatch, FilePart, StoredFile  # noqa: E402, F401
from apps.inference.quality_models import ModelDrift, ModelQualityWeek  # noqa: E402, F401
