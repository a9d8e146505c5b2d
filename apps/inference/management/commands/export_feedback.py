"""``manage.py export_feedback [--since D] [--until D] [--model M] [--format jsonl|csv]
[--include-content --purpose P] [--output FILE]``: every organization's feedback for a training
pipeline, all pages, without PHI unless ``--include-content`` with a ``--purpose`` (audited, as
``GET /v1/feedback/export``: apps/inference/feedback_export.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_date, parse_datetime

from apps.audit.context import PURPOSE_RE
from apps.inference import feedback_export
from apps.inference.errors import ApiError


def _moment(name: str, raw: str | None, end: bool = False) -> datetime | None:
    if not raw:
        return None
    value = parse_datetime(raw)
    if value is None and (day := parse_date(raw)) is not None:
        value = datetime.combine(day, time.max if end else time.min)
    if value is None:
        raise CommandError(f"--{name} must be an ISO 8601 date or date-time, got {raw!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Export clinicians' feedback (JSON lines or CSV); without PHI unless --include-content --purpose P."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="ISO 8601 date or date-time")
        parser.add_argument("--until", help="ISO 8601 date or date-time, inclusive")
        parser.add_argument("--model", default="")
        parser.add_argument("--format", choices=sorted(feedback_export.FORMATS), default="jsonl")
        parser.add_argument("--include-content", action="store_true", help="add comments, questions, answers (PHI)")
        parser.add_argument("--purpose", default="", help="the purpose of use (required with --include-content)")
        parser.add_argument("--output", help="a file to write (default: standard output)")

    def handle(self, *args: Any, **options: Any) -> None:
        purpose = options["purpose"].strip()
        if purpose and not PURPOSE_RE.match(purpose):
            raise CommandError("--purpose must be a short code (e.g. HOPERAT, HRESCH)")
        filters = feedback_export.Filters(
            since=_moment("since", options["since"]),
            until=_moment("until", options["until"], end=True),
            model=options["model"],
            limit=feedback_export.LIMIT_MAX,
        )
        out: Any = open(options["output"], "w", encoding="utf-8") if options["output"] else None
        rows = 0
        try:
            first = True
            while True:
                try:
                    page = feedback_export.export(
                        None, filters, include_content=options["include_content"], purpose=purpose
                    )
                except ApiError as exc:
                    raise CommandError("--include-content needs --purpose (the purpose of use, audited)") from exc
                text = page.render(options["format"])
                if options["format"] == "csv" and not first:
                    text = text.split("\n", 1)[1]  # the header once
                if out is None:
                    self.stdout.write(text, ending="")
                else:
                    out.write(text)
                rows += len(page.rows)
                first = False
                if page.next_after is None:
                    break
                filters = feedback_export.Filters(**{**filters.__dict__, "after": page.next_after})
        finally:
            if out is not None:
                out.close()
        self.stderr.write(f"exported {rows} rating(s)" + (" with content" if options["include_content"] else ""))
