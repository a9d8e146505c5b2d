"""``manage.py rotate_encryption_key [--batch-size N] [--dry-run]``: re-encrypt every encrypted
column under the newest key of MEDAI_ENCRYPTION_KEYS.

Rotation: put a new key in front of MEDAI_ENCRYPTION_KEYS (``NEW,OLD``) and restart (new values
are written under it, old ones still read), run this command, then drop the old key once it says
that nothing is left under it. Values no configured key opens are counted and left unchanged."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.fields import rotate_keys
from apps.audit.services import record_event


class Command(BaseCommand):
    help = "Re-encrypt every encrypted column under the newest MEDAI_ENCRYPTION_KEYS key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--dry-run", action="store_true", help="count what would be re-encrypted, write nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        report = rotate_keys(batch_size=options["batch_size"], dry_run=options["dry_run"])
        for label, counts in report.columns.items():
            self.stdout.write(
                f"{label}: {counts['rotated']} re-encrypted, {counts['current']} already under the newest key, "
                f"{counts['undecryptable']} undecryptable (left as they are)"
            )
        verb = "would re-encrypt" if options["dry_run"] else "re-encrypted"
        self.stdout.write(f"{verb} {report.total('rotated')} value(s) in {len(report.columns)} column(s)")
        if not options["dry_run"]:
            record_event("encryption.rotate", details={"columns": report.columns})
