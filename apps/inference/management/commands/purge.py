"""``manage.py purge [--dry-run]``: remove the content of tasks past their retention now (the
worker's minute schedule does the same); legal holds are respected."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.inference import retention


class Command(BaseCommand):
    help = "Purge prompts, results and error texts past retention (metadata kept; legal holds respected)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count what would be purged, change nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        report = retention.purge(dry_run=options["dry_run"])
        verb = "would purge" if options["dry_run"] else "purged"
        self.stdout.write(
            f"{verb} {report.purged} task(s) and {report.runs} workflow run(s); "
            f"{report.held} past retention kept by a legal hold"
        )
