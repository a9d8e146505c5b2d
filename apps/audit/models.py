from __future__ import annotations

from typing import Any, NoReturn

from django.db import models


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def visible_to(self, principal: Any) -> AuditEventQuerySet:
        """The events a caller allowed to read the audit (the permission checks the scope) may see:
        those of its own organization. Events that name no organization (a failed login with an
        unknown username, a change by a superuser of none) are for the admin's audit view only."""
        org = getattr(principal, "organization_id", None)
        if org is None:
            return self.none()
        return self.filter(organization_id=org)

    def update(self, **kwargs: Any) -> NoReturn:
        raise PermissionError("audit events are append-only")

    def delete(self) -> NoReturn:
        raise PermissionError("audit events are append-only")


class AuditEvent(models.Model):
    """One append-only, chained record: ``hash = HMAC-SHA256(key, prev_hash || canonical fields)``
    under the audit key ``key_id`` names (apps/audit/chain.py); events written before the chain was
    keyed have an empty ``key_id`` and ``hash = sha256(prev_hash || fields)`` (the legacy segment)."""

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        FAILURE = "failure"
        DENIED = "denied"
        CANCELLED = "cancelled"  # the client withdrew (a clinician pressing Stop): neither success nor fault

    seq = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.SUCCESS)
    # Identity is copied, not foreign-keyed: deleting a user must not rewrite history.
    actor_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    actor = models.CharField(max_length=150, blank=True)
    api_key_id = models.BigIntegerField(null=True, blank=True, db_index=True, help_text="The API key used, if any.")
    location = models.CharField(max_length=32, blank=True, db_index=True)
    organization_id = models.BigIntegerField(null=True, blank=True, help_text="The actor's organization, if any.")
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True)
    purpose_of_use = models.CharField(
        max_length=64, blank=True, db_index=True, help_text="The caller's X-Purpose-Of-Use (e.g. TREAT, ETREAT)."
    )
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    key_id = models.CharField(max_length=16, blank=True, help_text="The audit key that chained it; empty: legacy.")

    objects = AuditEventQuerySet.as_manager()

    # What an event says, in this order: the auditor's search reads these columns, the CSV export
    # writes them.
    RECORD_FIELDS = (
        "seq",
        "created_at",
        "action",
        "outcome",
        "actor_id",
        "actor",
        "api_key_id",
        "location",
        "object_type",
        "object_id",
        "ip",
        "user_agent",
        "purpose_of_use",
        "correlation_id",
        "details",
        "hash",
    )

    class Meta:
        ordering = ["seq"]
        indexes = [models.Index(fields=["organization_id", "seq"], name="audit_event_org_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.outcome} by {self.actor or '-'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise PermissionError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise PermissionError("audit events are append-only")


class AuditChainHead(models.Model):
    """A single row locked while appending, so concurrent writers extend the chain in order. It names
    the last event (seq and hash) and how many there are, under a MAC (``mac``) with the audit key:
    cutting the tail off the table and rewinding this row to match is detected unless the attacker
    kept an older copy of it; the exported checkpoints (apps/audit/checkpoints.py) catch even that."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    last_hash = models.CharField(max_length=64)
    last_seq = models.BigIntegerField(null=True, blank=True)
    count = models.BigIntegerField(null=True, blank=True)
    mac = models.CharField(max_length=96, blank=True)  # "<key id>:<HMAC-SHA256 hex>"

    def __str__(self) -> str:
        return self.last_hash
