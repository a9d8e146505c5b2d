"""What an attacker who can write the database does: raw SQL past the ORM and, on PostgreSQL, past
the append-only trigger (as a superuser can, with ``session_replication_role = replica``)."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction


def attack(sql: str, params: list[Any] | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(sql, params or [])
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL session_replication_role = origin")


def audit_verify() -> str:
    """``manage.py audit_verify``: its error message (the test fails if it passes)."""
    try:
        call_command("audit_verify")
    except CommandError as exc:
        return str(exc)
    raise AssertionError("audit_verify passed a tampered chain")


def audit_verify_ok() -> str:
    from io import StringIO

    out = StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()
