"""django-q2 entry points of the audit trail (thin: they call a service)."""

from __future__ import annotations

from apps.audit import checkpoints


def export_checkpoint() -> str:
    """Schedule ("audit: checkpoint", every 5 minutes): verify the events since the newest
    checkpoint, then export a signed checkpoint of the head (apps/audit/checkpoints.py)."""
    outcome = checkpoints.verify_and_checkpoint(full=False)
    if not outcome.ok:
        return f"BROKEN at seq={outcome.report.first_bad_seq}: {outcome.report.reason}"
    cp = outcome.checkpoint
    return f"checkpoint seq={cp.seq} count={cp.count}" if cp else "no events"
