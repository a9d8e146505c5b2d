"""``manage.py audit_verify``: recompute the audit trail's hash chain (exit status 1 if broken)."""

from apps.audit.management.commands.verify_audit_chain import Command as VerifyAuditChain


class Command(VerifyAuditChain):
    pass
