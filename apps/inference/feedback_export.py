"""Clinicians' feedback exported for a training or evaluation pipeline (``GET /v1/feedback/export``,
``manage.py export_feedback``).

**Without PHI by default.** A row is the rating and what it is stored against: rating, reason
codes, whether there is a comment, the model, route (agent type), A/B arm and location that
answered, and the answer's metadata kept past retention (its length, finish reason, refusal
flag, tokens, latency). Nothing a clinician or a patient wrote: no comment, no prompt, no answer;
no user either (a training set needs no author; ``feedback_id`` and ``exchange_id`` are medai's
own random ids).

**Content only when asked with a purpose.** ``include_content`` adds the comment, the question
(the last user message) and the answer, decrypted, and is refused without a purpose of use (the
request's ``X-Purpose-Of-Use``, or ``--purpose``): the export is audited (``feedback.export``)
with that purpose, the filters, the rows and whether content was in it. Content exists only while
retention keeps it: a purged exchange exports with empty ``question``/``answer`` and
``content_purged: true`` (its comment went with it), and a legal hold's content is exported as
held.

Who: an auditor or an admin (scope ``audit:read``, which only those roles carry), their own
organization's feedback only. Pages of at most ``LIMIT_MAX`` rows, oldest first, after a
``feedback_id`` (``after``), so a pipeline can take everything in turn.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from apps.audit import actions
from apps.audit.services import record_event
from apps.inference import conversations
from apps.inference.errors import ApiError
from apps.inference.models import Feedback

LIMIT_DEFAULT = 1000
LIMIT_MAX = 10_000
FORMATS = {"jsonl": "application/x-ndjson", "csv": "text/csv"}

COLUMNS = (
    "feedback_id",
    "exchange_id",
    "created_at",
    "updated_at",
    "rating",
    "reasons",
    "has_comment",
    "model",
    "agent_type",
    "arm",
    "location",
    "answered_at",
    "answer_chars",
    "finish_reason",
    "refused",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
)
CONTENT_COLUMNS = ("content_purged", "comment", "question", "answer")


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    model: str = ""
    agent_type: str = ""
    rating: str = ""
    after: int = 0
    limit: int = LIMIT_DEFAULT

    def described(self) -> dict[str, Any]:
        """What the audit event says was asked for (never content: these are ids, codes and times)."""
        out: dict[str, Any] = {"after": self.after, "limit": self.limit}
        for name in ("model", "agent_type", "rating"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        for name in ("since", "until"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name).isoformat()
        return out


@dataclass
class Export:
    rows: list[dict[str, Any]]
    include_content: bool
    next_after: int | None  # the last feedback_id, when there may be more

    def render(self, fmt: str) -> str:
        columns = COLUMNS + (CONTENT_COLUMNS if self.include_content else ())
        if fmt == "csv":
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ";".join(v) if isinstance(v, list) else v for k, v in row.items()})
            return out.getvalue()
        return "".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in self.rows)


def visible_to(principal: Any) -> QuerySet[Feedback]:
    """The feedback a caller may export: their organization's (auditors and admins only reach here)."""
    if principal is None:  # an operator's management command: every organization's
        return Feedback.objects.all()
    return Feedback.objects.filter(location__organization_id=principal.organization_id)


def _select(qs: QuerySet[Feedback], f: Filters) -> QuerySet[Feedback]:
    if f.since is not None:
        qs = qs.filter(created_at__gte=f.since)
    if f.until is not None:
        qs = qs.filter(created_at__lte=f.until)
    if f.model:
        qs = qs.filter(model_name=f.model)
    if f.agent_type:
        qs = qs.filter(agent_type=f.agent_type)
    if f.rating:
        qs = qs.filter(rating=f.rating)
    return qs.filter(id__gt=f.after).order_by("id")


def _row(fb: Feedback, include_content: bool) -> dict[str, Any]:
    task = fb.task
    row: dict[str, Any] = {
        "feedback_id": fb.id,
        "exchange_id": str(fb.task_id) if fb.task_id else None,
        "created_at": fb.created_at.isoformat(),
        "updated_at": fb.updated_at.isoformat(),
        "rating": fb.rating,
        "reasons": list(fb.reasons or []),
        "has_comment": bool(fb.comment),
        "model": fb.model_name,
        "agent_type": fb.agent_type,
        "arm": fb.arm,
        "location": fb.location.code,
        "answered_at": task.created_at.isoformat() if task else None,
        "answer_chars": task.answer_chars if task else None,
        "finish_reason": task.finish_reason if task else "",
        "refused": task.refused if task else None,
        "prompt_tokens": task.prompt_tokens if task else None,
        "completion_tokens": task.completion_tokens if task else None,
        "latency_ms": task.latency_ms if task else None,
    }
    if include_content:
        purged = task is None or task.content_purged_at is not None
        exchange = None if purged or task is None else conversations.read_exchange(task)
        row.update(
            {
                "content_purged": purged,
                "comment": fb.comment,
                "question": exchange.question if exchange else "",
                "answer": (exchange.answer or "") if exchange else "",
            }
        )
    return row


def export(principal: Any, filters: Filters, *, include_content: bool = False, purpose: str = "") -> Export:
    """One page of the feedback ``principal`` may export (None: an operator's command, every
    organization's), audited. ``include_content`` needs a ``purpose`` (ApiError 400 without one)."""
    if include_content and not purpose:
        raise ApiError(
            400,
            "purpose_of_use_required",
            "include_content exports the clinicians' comments and the exchanges (PHI): send the "
            "purpose of use in the X-Purpose-Of-Use header (e.g. HOPERAT, HRESCH).",
            "X-Purpose-Of-Use",
        )
    qs = _select(visible_to(principal), filters).select_related("location")
    if include_content:
        qs = qs.select_related("task")
    else:
        qs = qs.select_related("task").defer("task__request", "task__result", "task__error_message")
    page = list(qs[: filters.limit + 1])
    more = len(page) > filters.limit
    page = page[: filters.limit]
    rows = [_row(fb, include_content) for fb in page]
    record_event(
        actions.FEEDBACK_EXPORT,
        actor=principal,
        details={
            "rows": len(rows),
            "include_content": include_content,
            "filters": filters.described(),
            **({"purpose": purpose} if purpose else {}),
        },
        **({"purpose_of_use": purpose} if purpose else {}),
    )
    return Export(rows, include_content, rows[-1]["feedback_id"] if more and rows else None)
