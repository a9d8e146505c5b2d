"""The Batch API's verbs: create a batch from an uploaded file, read and list batches, cancel one;
and what moves a batch along once created: its feed to the queue, its expiry and its write-out.

Each line of the input file becomes a task of the priority queue, submitted through the queue's
own batch submit (``queue.submit_batch``: authorize, validate, rate limit, quota reserve, route,
admission, one audit event per part), into the batch's ``TaskBatch``, without de-duplication,
at the batch's priority (``metadata.priority``, LOW by default) and with the batch's expiry as
each line's deadline. The caller is authenticated once, at create; every later part is submitted
as that principal (kept on the row, no secret), after checking that its user may still act there
(active, still a member of the location or under the same break-glass grant, the same token
generation, the API key still usable): if not, the feed stops and the rest of the file is
answered with that refusal.

The feed is gradual, never a refusal: the queue holds at most MEDAI_QUEUE_MAX tasks and a submit
at most MEDAI_BATCH_MAX, so a batch keeps at most MEDAI_BATCH_MAX of its lines in the queue
(``window``), tops that up when half of them have ended, and never brings the queue's depth above
half of MEDAI_QUEUE_MAX (the rest is headroom for interactive work: a night's batch must not put
the queue into emergency mode). It is topped up from the after-commit hook of the transitions
that end its tasks (apps.inference.queue.hooks: finish, fail, cancel, expire), in the process that
ended them, and by the minute schedule (``sweep``), which also catches what a dead process left.
A part the governance refuses for now (a rate limit, a quota, the queue's store) is tried again
later, in smaller parts; a line refused for itself (a model gone since) is answered in the error
file. The lines' results are kept past the queue's retention until the output file is written
(``TaskBatch.holds_results``).

A batch is written out when its last line ended: ``finalizing`` (committed, so it shows), then the
output file (the answers, in file order) and the error file (failures, expirations, cancellations,
refusals) as OpenAI writes them, stored encrypted like uploads, and the final status with the
counts and the token usage, in one transaction; then the websocket hears it (``batch.update``).
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.accounts.models import SCOPE_SUBMIT, User
from apps.accounts.services import Principal, audit_marks
from apps.audit import actions
from apps.audit.services import record_event
from apps.inference import queue
from apps.inference.errors import ApiError
from apps.inference.filebatch import feed, files, jsonl
from apps.inference.filebatch.shapes import push_on_commit, with_files
from apps.inference.filebatch_models import BATCH_PREFIX, FileBatch, StoredFile
from apps.inference.models import InferenceTask, Priority, TaskBatch
from apps.inference.pipeline import gate

logger = logging.getLogger("medai.queue")
S = FileBatch.Status
T = InferenceTask.Status
WINDOWS = {"24h": 86_400}
CREATE_FIELDS = ("input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after")
METADATA_KEYS, METADATA_KEY_MAX, METADATA_VALUE_MAX = 16, 64, 512
LIST_DEFAULT, LIST_MAX = 20, 100


# --- ids and reads ---------------------------------------------------------------------------------


def parse_id(batch_id: Any) -> uuid.UUID | None:
    if not isinstance(batch_id, str) or not batch_id.startswith(BATCH_PREFIX):
        return None
    try:
        return uuid.UUID(hex=batch_id.removeprefix(BATCH_PREFIX))
    except ValueError:
        return None


def not_found(batch_id: Any) -> ApiError:
    shown = batch_id if isinstance(batch_id, str) and len(batch_id) <= 80 and batch_id.isprintable() else "that id"
    return ApiError(404, "batch_not_found", f"No such batch: '{shown}'.", "batch_id")


def get_batch(principal: Principal, batch_id: Any) -> FileBatch:
    """The caller's batch, or 404 ``batch_not_found``."""
    pk = parse_id(batch_id)
    found = with_files(FileBatch.objects.visible_to(principal)).filter(pk=pk).first() if pk else None
    if found is None:
        raise not_found(batch_id)
    return found


def list_batches(principal: Principal, *, after: Any = None, limit: Any = None) -> tuple[list[FileBatch], bool]:
    """A page of the caller's batches, newest first, after the cursor batch ``after``; and whether
    more follow."""
    size = files.page_size(limit, LIST_DEFAULT, LIST_MAX)
    qs = with_files(FileBatch.objects.visible_to(principal))
    if after:
        pk = parse_id(after)
        cursor = (
            FileBatch.objects.visible_to(principal).filter(pk=pk).values("created_at", "pk").first() if pk else None
        )
        if cursor is None:
            raise ApiError(400, "invalid_value", "after: names no batch of yours.", "after")
        qs = qs.filter(Q(created_at__lt=cursor["created_at"]) | Q(created_at=cursor["created_at"], pk__lt=cursor["pk"]))
    rows = list(qs.order_by("-created_at", "-pk")[: size + 1])
    return rows[:size], len(rows) > size


# --- create --------------------------------------------------------------------------------------------


def _bad(field: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, code, f"{field}: {message}", field)


def _metadata(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad("metadata", "must be an object of strings.")
    if len(value) > METADATA_KEYS:
        raise _bad("metadata", f"at most {METADATA_KEYS} keys.")
    for key, item in value.items():
        if len(key) > METADATA_KEY_MAX or jsonl._unencodable(key):
            raise _bad("metadata", f"keys are strings of at most {METADATA_KEY_MAX} characters.")
        if not isinstance(item, str) or len(item) > METADATA_VALUE_MAX or jsonl._unencodable(item):
            raise _bad(f"metadata.{key}", f"must be a string of at most {METADATA_VALUE_MAX} characters.")
    return dict(value)


def _priority(metadata: dict[str, str] | None) -> int:
    """``metadata.priority`` (low, normal, high, critical; LOW without it)."""
    given = (metadata or {}).get("priority")
    if given is None:
        return Priority.LOW
    name = given.strip().upper()
    if name not in Priority.names:
        names = ", ".join(n.lower() for n in Priority.names)
        raise _bad("metadata.priority", f"must be one of {names}.")
    return int(Priority[name])


def _check_lines(stored: StoredFile, endpoint: str) -> None:
    """Every line asks the batch's endpoint, and every model or agent type it names is routable
    now (a 400 or 404 naming the first line that fails)."""
    first: dict[tuple[str, str], int] = {}
    for line in files.lines_from(stored, 0):
        if line.url != endpoint:
            raise ApiError(
                400,
                "invalid_value",
                f"input file, line {line.number}: url {line.url} is not the batch's endpoint {endpoint}.",
                f"line[{line.number}].url",
            )
        first.setdefault((str(line.body.get("model") or ""), str(line.body.get("agent_type") or "")), line.number)
    for (model, agent_type), number in first.items():
        try:
            gate.route_sync(model, agent_type)
        except ApiError as exc:
            exc.message = f"input file, line {number}: {exc.message}"
            exc.param = f"line[{number}].body.{exc.param or ('model' if model else 'agent_type')}"
            raise


def _snapshot(principal: Principal) -> dict[str, Any]:
    generation = User.objects.filter(pk=principal.user_id).values_list("token_generation", flat=True).first()
    return {
        "username": principal.username,
        "role": principal.role,
        "location_code": principal.location_code,
        "organization_id": principal.organization_id,
        "scopes": sorted(principal.scopes),
        "method": principal.method,
        "api_key_id": principal.api_key_id,
        "break_glass_id": principal.break_glass_id,
        "token_generation": generation,
    }


def create_batch(
    principal: Principal, data: Any, correlation_id: str = "", *, client_ip: str | None = None
) -> FileBatch:
    """Create a batch of the caller's from their uploaded ``input_file_id`` and queue its first
    part (up to ``window()`` lines) at once: 400 naming the field (or the line) for bad input,
    404 for a file that is not theirs, the pipeline's 403/429/503 if not even one line can be
    queued now. Answers the batch ``in_progress``."""
    gate.authorize(principal, SCOPE_SUBMIT)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "Request body must be a JSON object.")
    for name in data:
        if name not in CREATE_FIELDS:
            raise ApiError(400, "unknown_parameter", f"{str(name)[:64]}: not a field of a batch.", str(name)[:64])
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise _bad(name, "this field is required (a string).")
    endpoint, completion_window = data["endpoint"], data["completion_window"]
    if endpoint not in jsonl.ENDPOINTS:
        served = ", ".join(jsonl.ENDPOINTS)
        raise _bad("endpoint", f"{endpoint[:100]!r} is not served in batches; use {served}.", "unsupported_value")
    if completion_window not in WINDOWS:
        raise _bad("completion_window", f"must be one of {', '.join(WINDOWS)}.", "unsupported_value")
    metadata = _metadata(data.get("metadata"))
    priority = _priority(metadata)
    output = data.get("output_expires_after")
    if output is not None and not isinstance(output, dict):
        raise _bad("output_expires_after", "must be an object {anchor, seconds}.")
    output_ttl = files.expires_after(
        (output or {}).get("anchor"), (output or {}).get("seconds"), "output_expires_after"
    )
    try:
        stored = files.get_file(principal, data["input_file_id"])
    except ApiError as exc:
        exc.param = "input_file_id"
        raise
    if stored.purpose != StoredFile.Purpose.BATCH:
        raise _bad(
            "input_file_id", f"{stored.public_id} is a {stored.purpose} file, not an input file (purpose batch)."
        )
    _check_lines(stored, endpoint)
    snapshot = _snapshot(principal)
    with feed.holds_released_on_rollback() as made, transaction.atomic():
        if not files.lock_live(stored):  # deleted since it was read: it exists no more
            gone = files.not_found(data["input_file_id"])
            gone.param = "input_file_id"
            raise gone
        now = timezone.now()
        task_batch = TaskBatch.objects.create(
            user_id=principal.user_id, location_id=principal.location_pk, total=stored.lines, holds_results=True
        )
        batch = FileBatch.objects.create(
            task_batch=task_batch,
            user_id=principal.user_id,
            location_id=principal.location_pk,
            principal=snapshot,
            correlation_id=correlation_id[:64],
            input_file=stored,
            endpoint=endpoint,
            completion_window=completion_window,
            metadata=metadata,
            output_ttl=output_ttl,
            priority=priority,
            total=stored.lines,
            created_at=now,
            expires_at=now + timedelta(seconds=WINDOWS[completion_window]),
        )
        record_event(
            actions.BATCH_CREATE,
            actor=principal,
            obj=batch,
            details={
                "lines": stored.lines,
                "endpoint": endpoint,
                "priority": Priority(priority).name.lower(),
                "input_file": stored.public_id,
                **(audit_marks(principal) or {}),
            },
        )
        want = min(feed.window(), feed.headroom(), batch.total)
        feed.feed(batch, want, principal, client_ip, strict=True, made_ids=made)
        batch.status, batch.in_progress_at = S.IN_PROGRESS, timezone.now()
        batch.save()
        push_on_commit(batch)
        feed.advance_on_commit(batch)  # every line refused at once: written out now
    return get_batch(principal, batch.public_id)


# --- cancel ------------------------------------------------------------------------------------------


def cancel_batch(principal: Principal, batch_id: Any) -> FileBatch:
    """Cancel the caller's batch: ``cancelling`` at once (nothing more is fed, its queued lines are
    cancelled, the running ones finish), then ``cancelled`` with the partial results once they
    have. 409 for a batch that already ended; a batch already cancelling is answered as it is."""
    gate.authorize(principal, SCOPE_SUBMIT)
    with transaction.atomic():
        batch = get_batch(principal, batch_id)
        batch = FileBatch.objects.select_related("input_file", "task_batch").locked().get(pk=batch.pk)
        if batch.status == S.CANCELLING:
            return get_batch(principal, batch_id)
        if batch.status not in (S.VALIDATING, S.IN_PROGRESS):
            raise ApiError(
                409,
                "batch_not_cancellable",
                f"Batch {batch.public_id} is {batch.status}; it can no longer be cancelled.",
            )
        batch.status, batch.cancelling_at = S.CANCELLING, timezone.now()
        if not batch.unfed_code:
            feed.stop(batch, *feed.CANCELLED)
        batch.save()
        cancelled = queue.cancel_queued_of_batch(principal, batch.pk)
        record_event(
            actions.BATCH_CANCEL,
            actor=principal,
            obj=batch,
            details={
                "cancelled": len(cancelled),
                "fed": batch.fed,
                "total": batch.total,
                **(audit_marks(principal) or {}),
            },
        )
        answer = get_batch(principal, batch_id)  # as it is now: cancelling
        push_on_commit(batch)
        if not cancelled:  # (their hook steps it otherwise) nothing queued: cancelled once none runs
            feed.advance_on_commit(batch)
    return answer
