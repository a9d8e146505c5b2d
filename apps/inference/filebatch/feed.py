"""How a file batch moves along once created: its lines fed to the queue in parts, its expiry, its
write-out. See apps.inference.filebatch.batches for the whole story; this module is the part that
runs outside a client's request (the queue's after-commit hook, the minute schedule), and the
create's first part.

The feed is gradual, never a refusal: a batch keeps at most ``window()`` (MEDAI_BATCH_MAX) of its
lines in the queue, tops them up when half have ended, and never brings the queue's depth above
half of MEDAI_QUEUE_MAX (``headroom``). Each part goes through the queue's own batch submit as the
batch's principal, re-checked first (``refusal``). A part refused for now (a rate limit, a quota,
the queue's store) is tried in halves, then left for the next turn, the reason shown in the batch's
``errors``; a line refused for itself is answered in the error file (``rejected``).

Written out when its last line ended: ``finalizing`` committed first (so it shows, and a process
that dies after it leaves work the schedule finishes), then both files and the outcome in one
transaction.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.accounts.services import Principal
from apps.audit import actions
from apps.inference import delegation, queue
from apps.inference.errors import ApiError, error_body
from apps.inference.filebatch import files, jsonl
from apps.inference.filebatch.shapes import push_on_commit
from apps.inference.filebatch_models import FileBatch, StoredFile
from apps.inference.models import LIVE_STATUSES, InferenceTask, Priority, TaskBatch
from apps.inference.pipeline import record
from apps.inference.queue import hooks

logger = logging.getLogger("medai.queue")
S = FileBatch.Status
T = InferenceTask.Status
EXPIRED = ("batch_expired", "This request could not be executed before the completion window expired.")
CANCELLED = ("batch_cancelled", "This request was not executed: the batch was cancelled.")


def window() -> int:
    """The most lines of one batch in the queue at once (MEDAI_BATCH_MAX)."""
    return queue.batch_max()


def headroom() -> int:
    """How many more tasks a batch may queue now without the queue passing half of MEDAI_QUEUE_MAX."""
    return max(queue.queue_max() // 2 - InferenceTask.objects.queued().count(), 0)


def _live(batch: FileBatch) -> int:
    return InferenceTask.objects.filter(batch_id=batch.pk, status__in=LIVE_STATUSES).count()


@contextmanager
def holds_released_on_rollback() -> Iterator[list[Any]]:
    """Around a transaction that feeds lines (yields the list ``feed`` puts its tasks' ids in): if
    it does not commit, the quota holds made for those tasks are released (the tasks are gone with
    the rollback; their holds would otherwise stay until their lease ends, a day for async work)."""
    made: list[Any] = []
    try:
        yield made
    except BaseException:
        if made:
            record.release_tasks(made)
        raise


def feed(
    batch: FileBatch,
    want: int,
    principal: Principal,
    client_ip: str | None,
    *,
    strict: bool,
    made_ids: list[Any] | None = None,
) -> int:
    """Queue up to ``want`` more lines of the batch (inside the caller's transaction, the batch row
    locked); the tasks made. A part refused for now (429, 503; 403: the principal's scope) is tried
    in halves down to one line; then, ``strict`` (the create) and nothing queued yet, the refusal is
    raised, else noted in the batch's ``errors`` (or, for a 403, the feed stopped) for a later try. A line refused for
    itself (400, 404, 413) is answered in the error file (``rejected``), the rest still queued.
    The new tasks' ids are appended to ``made_ids`` (``holds_released_on_rollback``)."""
    lines = list(files.lines_from(batch.input_file, batch.fed, want)) if want > 0 else []
    made = 0
    size = len(lines)
    while lines:
        chunk = lines[:size]
        try:
            ids = _submit(batch, principal, chunk, client_ip)
        except ApiError as exc:
            if exc.status_code in (401, 403, 429, 503):
                if exc.status_code == 429 and size > 1:
                    size = max(size // 2, 1)
                    continue
                if strict and not made:  # the create: refused if not even one line can be queued now
                    raise
                if exc.status_code in (401, 403):
                    stop(batch, exc.code, exc.message)
                else:
                    _note(batch, exc)
                break
            if size > 1:
                size = 1  # find the line at fault: one at a time
                continue
            _reject(batch, chunk[0], exc)
        else:
            made += len(chunk)
            if made_ids is not None:
                made_ids.extend(ids)
            if batch.errors:
                batch.errors = None  # what held it up has passed
        batch.fed += len(chunk)
        lines = lines[len(chunk) :]
    return made


def _submit(batch: FileBatch, principal: Principal, chunk: list[jsonl.Line], client_ip: str | None) -> list[Any]:
    remaining = (batch.expires_at - timezone.now()).total_seconds()
    priority = Priority(batch.priority).name.lower()
    items = [{**line.body, "priority": priority, "deadline_s": max(remaining, 1.0)} for line in chunk]
    extras = [{"batch_line": line.index, "custom_id": line.custom_id} for line in chunk]
    _, tasks = queue.submit_batch(
        principal,
        items,
        batch.correlation_id,
        client_ip=client_ip,
        into=batch.task_batch,
        dedup=False,
        extras=extras,
    )
    return [t.id for t in tasks]


def _note(batch: FileBatch, exc: ApiError) -> None:
    """Why the feed is held up (shown in the batch's ``errors`` until a part goes through)."""
    batch.errors = {
        "object": "list",
        "data": [{"code": exc.code, "message": f"Waiting to queue more lines: {exc.message}", "param": None}],
    }


def stop(batch: FileBatch, code: str, message: str) -> None:
    """No more lines will be fed: those left are answered in the error file with ``code``."""
    batch.unfed_code, batch.unfed_message = code[:64], message
    if code not in (EXPIRED[0], CANCELLED[0]):
        batch.errors = {"object": "list", "data": [{"code": code, "message": message, "param": None}]}


def _reject(batch: FileBatch, line: jsonl.Line, exc: ApiError) -> None:
    batch.rejected = [
        *(batch.rejected or []),
        {
            "line": line.index,
            "custom_id": line.custom_id,
            "status_code": exc.status_code,
            "code": exc.code,
            "message": exc.message,
            "param": exc.param,
        },
    ]


def principal_of(batch: FileBatch) -> Principal:
    """The principal the batch was created by (kept on its row), to submit its later parts as."""
    return delegation.principal_from(batch.principal, batch.user_id, batch.location_id)


def refusal(batch: FileBatch) -> tuple[str, str] | None:
    """Why the batch's owner may no longer queue its lines, or None (apps.inference.delegation)."""
    return delegation.refusal(batch.principal, batch.user_id, batch.location_id, "batch")


# --- advancing a batch: feed, expire, write out ----------------------------------------------------------


def advance(batch_ids: set[str]) -> None:
    """The queue's hook (tasks of these batches ended, committed): step each open file batch that
    has something to do now. It runs after every task's end (plain submit batches and workflow runs
    included), so what it reads is one statement per batch, compiled once (``hooks.RowById``): the batch if
    it is an open file batch, with its live task count, read without a lock (a finished line that
    needs nothing takes no write lock; ``step`` decides again under it)."""
    for pk in hooks.batch_pks(batch_ids):
        try:
            row = _open_with_live(pk)
            if row is not None and _due(row):
                step(pk)
        except Exception:  # one batch's trouble must not stop the others; the schedule retries
            logger.exception("file batch %s: step failed", pk)


_DUE_FIELDS = ("status", "fed", "total", "unfed_code", "expires_at", "live")  # (live: the annotation)


def _open_with_live_query(pk: uuid.UUID) -> Any:
    live = (
        InferenceTask.objects.filter(batch_id=OuterRef("pk"), status__in=LIVE_STATUSES)
        .order_by()
        .values("batch_id")
        .annotate(n=Count("*"))
        .values("n")
    )
    return (
        FileBatch.objects.open()
        .filter(pk=pk)
        .annotate(live=Coalesce(Subquery(live), 0))
        .only(*_DUE_FIELDS[:-1])
        .order_by()
    )


_open_batch = hooks.RowById(FileBatch, _open_with_live_query)


def _open_with_live(pk: uuid.UUID) -> dict[str, Any] | None:
    """The open file batch ``pk`` as ``_due`` reads it (its fields and ``live``, its tasks queued or
    running), or None: one statement, compiled once (hooks.RowById)."""
    batch = _open_batch.get(pk)
    return None if batch is None else {"pk": batch.pk, **{f: getattr(batch, f) for f in _DUE_FIELDS}}


def _due(row: dict[str, Any]) -> bool:
    """Whether ``step`` has something to do for an open batch now (its row's status, fed, total,
    unfed_code and expires_at, and ``live``: its tasks queued or running)."""
    if row["status"] == S.FINALIZING:
        return True
    live = row["live"]
    if not live and (row["fed"] >= row["total"] or row["unfed_code"]):
        return True
    if row["status"] != S.IN_PROGRESS or row["unfed_code"]:
        return False
    expiring = timezone.now() >= row["expires_at"] - timedelta(seconds=1)
    return expiring or (row["fed"] < row["total"] and live <= window() // 2)


def advance_on_commit(batch: FileBatch) -> None:
    pk = batch.pk
    transaction.on_commit(lambda: advance({str(pk)}))


def step(pk: Any) -> str | None:
    """Move one file batch along: stop it at its expiry, top up its lines in the queue, and once
    its last line ended, write it out. Its status after (None: no such batch)."""
    with holds_released_on_rollback() as made, transaction.atomic():
        batch = FileBatch.objects.select_related("input_file", "task_batch").locked().filter(pk=pk).first()
        if batch is None or batch.is_final:
            return batch.status if batch else None
        now = timezone.now()
        live = _live(batch)
        before = (batch.status, batch.fed, batch.unfed_code, batch.errors)
        if batch.status == S.IN_PROGRESS and not batch.unfed_code:
            if now >= batch.expires_at - timedelta(seconds=1):
                stop(batch, *EXPIRED)
            elif batch.fed < batch.total and live <= window() // 2:
                refused = refusal(batch)
                if refused is not None:
                    stop(batch, *refused)
                else:
                    want = min(window() - live, headroom(), batch.total - batch.fed)
                    live += feed(batch, want, principal_of(batch), None, strict=False, made_ids=made)
        if (
            batch.status in (S.IN_PROGRESS, S.CANCELLING)
            and not live
            and (batch.fed >= batch.total or batch.unfed_code)
        ):
            batch.status, batch.finalizing_at = S.FINALIZING, now
        if (batch.status, batch.fed, batch.unfed_code, batch.errors) != before:
            batch.save()
            if batch.status != before[0]:
                push_on_commit(batch)
    if batch.status == S.FINALIZING:
        return finalize(pk)
    return batch.status


def finalize(pk: Any) -> str | None:
    """Write a finalizing batch's output and error files and its outcome, in one transaction."""
    with transaction.atomic():
        batch = FileBatch.objects.select_related("input_file", "task_batch").locked().filter(pk=pk).first()
        if batch is None or batch.status != S.FINALIZING:
            return batch.status if batch else None
        if _live(batch):  # cannot be (nothing is fed once it finalizes): wait for them
            return batch.status
        good, bad, failed, (prompt_tokens, completion_tokens) = _outcomes(batch)
        now = timezone.now()
        name = batch.public_id
        if good:
            batch.output_file = _write(batch, f"{name}_output.jsonl", good)
        if bad:
            batch.error_file = _write(batch, f"{name}_error.jsonl", bad)
        if batch.cancelling_at is not None:
            batch.status, batch.cancelled_at = S.CANCELLED, now
        elif batch.unfed_code == EXPIRED[0]:
            batch.status, batch.expired_at = S.EXPIRED, now
        elif batch.unfed_code:
            batch.status, batch.failed_at = S.FAILED, now
        else:
            batch.status, batch.completed_at = S.COMPLETED, now
        batch.completed_count, batch.failed_count = len(good), failed
        batch.input_tokens, batch.output_tokens = prompt_tokens, completion_tokens
        batch.save()
        TaskBatch.objects.filter(pk=batch.pk).update(holds_results=False)  # retention takes them now
        delegation.record_as_owner(
            actions.BATCH_FINISH,
            batch,
            {
                "status": batch.status,
                "total": batch.total,
                "completed": len(good),
                "failed": failed,
                "output_file": batch.output_file.public_id if batch.output_file else None,
                "error_file": batch.error_file.public_id if batch.error_file else None,
            },
        )
        push_on_commit(batch)
    return batch.status


def _write(batch: FileBatch, filename: str, lines: list[str]) -> StoredFile:
    text = "".join(lines)
    return files.store(
        user_id=batch.user_id,
        location_id=batch.location_id,
        purpose=StoredFile.Purpose.BATCH_OUTPUT,
        filename=filename,
        text=text,
        size=len(text.encode("utf-8")),
        lines=len(lines),
        expires_seconds=batch.output_ttl,
    )


def _line(request_id: str, custom_id: str, response: Any, error: Any) -> str:
    body = {"id": request_id, "custom_id": custom_id, "response": response, "error": error}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n"


def _line_id(batch: FileBatch, index: int, task_id: Any = None) -> str:
    return f"batch_req_{(task_id or uuid.uuid5(batch.pk, str(index))).hex}"


def _outcomes(batch: FileBatch) -> tuple[list[str], list[str], int, tuple[int, int]]:
    """The output file's lines and the error file's, each in file order; how many failed (every
    error line but the cancelled ones); the tokens used."""
    good: dict[int, str] = {}
    bad: dict[int, str] = {}
    failed = 0
    tasks = (
        InferenceTask.objects.filter(batch_id=batch.pk)
        .only(
            "id",
            "status",
            "request",
            "result",
            "error_code",
            "error_message",
            "http_status",
            "prompt_tokens",
            "completion_tokens",
            "batch_id",
        )
        .order_by()
    )
    for task in tasks.iterator(chunk_size=200):
        spec = task.request or {}
        index, custom_id = spec.get("batch_line"), spec.get("custom_id")
        if not isinstance(index, int) or not isinstance(custom_id, str):
            logger.warning("file batch %s: task %s names no line of the file", batch.pk, task.id)
            continue
        request_id = _line_id(batch, index, task.id)
        if task.status == T.COMPLETED and task.result:
            response = {"status_code": 200, "request_id": str(task.id), "body": dict(task.result)}
            good[index] = _line(request_id, custom_id, response, None)
            continue
        if task.status == T.CANCELLED:
            bad[index] = _line(request_id, custom_id, None, {"code": CANCELLED[0], "message": CANCELLED[1]})
            continue
        failed += 1
        if task.status == T.EXPIRED:
            bad[index] = _line(request_id, custom_id, None, {"code": EXPIRED[0], "message": EXPIRED[1]})
        elif task.status == T.COMPLETED:  # its result unreadable (encrypted under a key no longer configured)
            error = {"code": "result_unavailable", "message": "The answer to this request can no longer be read."}
            bad[index] = _line(request_id, custom_id, None, error)
        else:
            status = task.http_status if task.http_status and task.http_status >= 400 else 502
            body = error_body(status, task.error_code or "task_failed", task.error_message or "The request failed.")
            bad[index] = _line(
                request_id, custom_id, {"status_code": status, "request_id": str(task.id), "body": body}, None
            )
    for entry in batch.rejected or []:
        index = entry["line"]
        body = error_body(entry["status_code"], entry["code"], entry["message"], entry.get("param"))
        response = {"status_code": entry["status_code"], "request_id": None, "body": body}
        bad[index] = _line(_line_id(batch, index), entry["custom_id"], response, None)
        failed += 1
    if batch.fed < batch.total:
        code, message = batch.unfed_code or EXPIRED[0], batch.unfed_message or EXPIRED[1]
        for line in files.lines_from(batch.input_file, batch.fed):
            bad[line.index] = _line(
                _line_id(batch, line.index), line.custom_id, None, {"code": code, "message": message}
            )
            failed += code != CANCELLED[0]
    usage = tasks.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
    return (
        [good[i] for i in sorted(good)],
        [bad[i] for i in sorted(bad)],
        failed,
        (usage["p"] or 0, usage["c"] or 0),
    )


# --- the minute schedule -----------------------------------------------------------------------------


def sweep() -> dict[str, int]:
    """Step every open batch (top up, expire, write out what a dead process left), then purge files
    past their retention. Run every minute by the worker cluster (apps.inference.tasks)."""
    stepped = 0
    for pk in FileBatch.objects.open().order_by("created_at").values_list("pk", flat=True):
        try:
            step(pk)
            stepped += 1
        except Exception:  # the next batch still gets its turn; the next run retries this one
            logger.exception("file batch %s: step failed", pk)
    return {"batches": stepped, "files_purged": files.purge_due()}


hooks.on_batch_tasks_ended(advance)
