"""What a client sees of a file batch: OpenAI's ``Batch`` object (``batch_object``), its
``request_counts`` and ``usage`` (counted from its tasks while it runs, as written out once it
ended), and the ``batch.update`` websocket frame sent when it changes state (``push_on_commit``:
to its owner's sockets and its subscribers, after the commit, as task updates are)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import Count, Sum

from apps.inference import push
from apps.inference.filebatch_models import FileBatch
from apps.inference.models import InferenceTask

logger = logging.getLogger("medai.queue")
T = InferenceTask.Status


def with_files(qs: Any) -> Any:
    return qs.select_related("input_file", "output_file", "error_file")


def request_counts(batch: FileBatch) -> dict[str, int]:
    """OpenAI's ``request_counts``: the lines, those answered, those that failed (as counted when
    written out; live from its tasks before)."""
    if batch.is_final:
        return {"total": batch.total, "completed": batch.completed_count, "failed": batch.failed_count}
    counts = dict(
        InferenceTask.objects.filter(batch_id=batch.pk, status__in=(T.COMPLETED, T.FAILED, T.EXPIRED))
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    failed = counts.get(T.FAILED, 0) + counts.get(T.EXPIRED, 0) + len(batch.rejected or [])
    return {"total": batch.total, "completed": counts.get(T.COMPLETED, 0), "failed": failed}


def _usage(batch: FileBatch) -> dict[str, Any]:
    if batch.is_final:
        used = (batch.input_tokens, batch.output_tokens)
    else:
        sums = InferenceTask.objects.filter(batch_id=batch.pk).aggregate(
            p=Sum("prompt_tokens"), c=Sum("completion_tokens")
        )
        used = (sums["p"] or 0, sums["c"] or 0)
    return {
        "input_tokens": used[0],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": used[1],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": used[0] + used[1],
    }


def _ts(when: Any) -> int | None:
    return int(when.timestamp()) if when else None


TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def batch_object(batch: FileBatch) -> dict[str, Any]:
    """OpenAI's ``Batch`` (a field with no value is left out, as the spec types them non-null)."""
    body: dict[str, Any] = {
        "id": batch.public_id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": batch.errors or None,
        "input_file_id": batch.input_file.public_id,
        "completion_window": batch.completion_window,
        "status": batch.status,
        "output_file_id": batch.output_file.public_id if batch.output_file else None,
        "error_file_id": batch.error_file.public_id if batch.error_file else None,
        **{name: _ts(getattr(batch, name)) for name in TIMESTAMPS},
        "request_counts": request_counts(batch),
        "usage": _usage(batch),
    }
    body = {k: v for k, v in body.items() if v is not None}
    body["metadata"] = batch.metadata or None
    return body


def push_on_commit(batch: FileBatch) -> None:
    """``batch.update`` to the owner's sockets and the batch's subscribers, once committed."""
    pk, user_id = batch.pk, batch.user_id

    def send() -> None:
        try:
            found = with_files(FileBatch.objects.filter(pk=pk)).first()
            if found is None:
                return
            body = batch_object(found)
            data = {
                "id": body["id"],
                "batch_id": str(pk),
                "status": body["status"],
                "request_counts": body["request_counts"],
                "output_file_id": body.get("output_file_id"),
                "error_file_id": body.get("error_file_id"),
                "changed_at": push.now_iso(),
            }
            groups = [push.batch_group(pk)] + ([push.user_group(user_id)] if user_id else [])
            push.send_event(groups, {"type": "batch.update", "data": data})
        except Exception as exc:  # noqa: BLE001 - a missed push must not fail the batch
            logger.warning("batch push failed: %s", type(exc).__name__)

    transaction.on_commit(send)
