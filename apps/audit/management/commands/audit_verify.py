"""``manage.py audit_verify``: verify the whole audit chain against its head row and every signed
checkpoint exported so far, say where it breaks (exit status 1), and export a new checkpoint of
the head when it holds."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.audit import checkpoints


class Command(BaseCommand):
    help = (
        "Verify the audit trail's keyed hash chain from the first event to the last, against the "
        "signed checkpoints in MEDAI_AUDIT_CHECKPOINT_PATH; export a new checkpoint if it holds."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        outcome = checkpoints.verify_and_checkpoint(full=True)
        report = outcome.report
        if not outcome.ok:
            lines = [f"  {f.describe()}" for f in report.collapsed()] + [
                f"  checkpoint file: {p}" for p in outcome.problems
            ]
            raise CommandError(
                f"audit chain BROKEN at seq={report.first_bad_seq}: {len(lines)} problem(s) "
                f"({report.checked} events read, {report.marks_checked} checkpoints compared):\n" + "\n".join(lines)
            )
        if not report.checked:
            self.stdout.write(self.style.SUCCESS("audit chain OK: no events yet (nothing to checkpoint)"))
            return
        legacy = ""
        if report.legacy:
            first, last = report.legacy
            sealed = "sealed by the first keyed event" if report.legacy_sealed else "not sealed yet"
            legacy = f"; legacy segment seq {first}-{last} (unkeyed SHA-256, {sealed})"
        cp = outcome.checkpoint
        self.stdout.write(
            self.style.SUCCESS(
                f"audit chain OK: {report.checked} events verified (seq {report.first_seq}-{report.last_seq}), "
                f"{report.marks_checked} checkpoints compared{legacy}"
            )
        )
        if cp is not None:
            self.stdout.write(
                f"checkpoint seq={cp.seq} hash={cp.hash[:16]}... count={cp.count} written to "
                + ", ".join(outcome.reached or [])
            )
