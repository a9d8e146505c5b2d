"""The admin's trail: sign-ins, sign-outs and failed sign-ins, and every add, change and delete
made in the Django admin, whichever app's model it is.

Changes come from Django's own ``LogEntry`` (written by every ModelAdmin after it saved), so no
ModelAdmin has to opt in. The event names the fields that changed and their new values, except
what must never reach a log: a field whose name says it holds a secret (password, secret, token,
key, hash...) and every encrypted field (PHI and backend credentials, apps/audit/fields.py) are
named without a value; every value passes through PHI redaction. A change carries the fields'
old values too (``old``): while an admin POST runs (``admin_request``, set by the audit
middleware), a ``pre_save`` of an existing row reads that row as it was, once, before it is written.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import models
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.text import capfirst

from apps.audit import actions
from apps.audit.fields import EncryptedJSONField, EncryptedTextField
from apps.audit.models import AuditEvent
from apps.audit.services import record_event

SECRET_NAME = re.compile(r"(?i)pass|secret|token|key|hash|salt|credential|otp|signature")
ACTIONS = {ADDITION: actions.ADMIN_ADD, CHANGE: actions.ADMIN_CHANGE, DELETION: actions.ADMIN_DELETE}
MAX_VALUE = 200


def is_secret(field: models.Field[Any, Any]) -> bool:
    return isinstance(field, (EncryptedTextField, EncryptedJSONField)) or bool(SECRET_NAME.search(field.name))


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value[:50]]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in list(value.items())[:50]}
    return str(value)[:MAX_VALUE]


def _value(obj: models.Model, field: Any) -> Any:
    if field.many_to_many:
        return sorted(str(pk) for pk in getattr(obj, field.name).values_list("pk", flat=True)[:50])
    if field.is_relation:
        return _plain(getattr(obj, field.attname, None))
    return _plain(getattr(obj, field.attname, None))


def _by_label(model: type[models.Model]) -> dict[str, Any]:
    """Model fields by the label the admin's change message uses (capfirst of verbose_name)."""
    out: dict[str, Any] = {}
    for f in model._meta.get_fields():
        if getattr(f, "concrete", False) or getattr(f, "many_to_many", False):
            if hasattr(f, "verbose_name"):
                out[str(capfirst(f.verbose_name))] = f
                out[f.name] = f
    return out


# (model label, pk) → the row's values before this admin request changed it; None: not in one
_before: contextvars.ContextVar[dict[tuple[str, str], dict[str, Any]] | None] = contextvars.ContextVar(
    "medai_admin_before", default=None
)


@contextmanager
def admin_request() -> Iterator[None]:
    """Keep the old values of the rows saved meanwhile (an admin POST), for their change events."""
    token = _before.set({})
    try:
        yield
    finally:
        _before.reset(token)


@receiver(pre_save, dispatch_uid="audit-admin-before")
def _remember_before(sender: type[models.Model], instance: models.Model, raw: bool = False, **kwargs: Any) -> None:
    before = _before.get()
    if before is None or raw or instance._state.adding or instance.pk is None or sender is LogEntry:
        return
    key = (sender._meta.label_lower, str(instance.pk))
    if key in before:
        return
    old = sender._default_manager.filter(pk=instance.pk).first()
    if old is None:
        return
    fields = [*old._meta.concrete_fields, *old._meta.many_to_many]
    before[key] = {f.name: _value(old, f) for f in fields if not is_secret(f)}


def changes(entry: LogEntry) -> dict[str, Any]:
    """The details of a LogEntry's event: the object, the fields named, the non-secret values."""
    ct: Any = entry.content_type if entry.content_type_id else None
    model = ct.model_class() if ct is not None else None
    try:
        message = json.loads(entry.change_message or "[]")
    except ValueError:
        message = []
    details: dict[str, Any] = {"object": str(entry.object_repr)[:MAX_VALUE]}
    obj = None
    if model is not None and entry.action_flag != DELETION:
        obj = model._default_manager.filter(pk=entry.object_id).first()
    labels = _by_label(model) if model is not None else {}
    fields: list[str] = []
    values: dict[str, Any] = {}
    secret: list[str] = []
    related: list[dict[str, Any]] = []

    def named(field: Any, label: str) -> None:
        name = field.name if field is not None else label
        if name not in fields:
            fields.append(name)
        if field is None or obj is None:
            return
        if is_secret(field):
            secret.append(name)
        else:
            values[name] = _value(obj, field)

    if entry.action_flag == ADDITION and obj is not None:
        for f in obj._meta.concrete_fields:
            if f.editable and not f.primary_key:
                named(f, f.name)
    for part in message if isinstance(message, list) else []:
        for kind in ("changed", "added", "deleted"):
            body = part.get(kind) if isinstance(part, dict) else None
            if body is None:
                continue
            if body.get("name"):  # an inline object: named, with its fields, never its values
                related.append(
                    {
                        "change": kind,
                        "model": str(body["name"])[:100],
                        "object": str(body.get("object", ""))[:MAX_VALUE],
                        "fields": [str(x)[:100] for x in body.get("fields", [])],
                    }
                )
            elif kind == "changed":
                for label in body.get("fields", []):
                    named(labels.get(str(label)), str(label))
    if fields:
        details["fields"] = fields
    if values:
        details["values"] = values
        remembered = (_before.get() or {}).get((model._meta.label_lower, str(entry.object_id))) if model else None
        if entry.action_flag == CHANGE and remembered is not None:
            details["old"] = {name: remembered.get(name) for name in values}
    if secret:
        details["secret_fields"] = secret  # changed, value withheld
    if related:
        details["related"] = related
    return details


@receiver(post_save, sender=LogEntry, dispatch_uid="audit-admin-log-entry")
def _log_entry_saved(sender: type[LogEntry], instance: LogEntry, created: bool, **kwargs: Any) -> None:
    if not created or instance.action_flag not in ACTIONS:
        return
    ct: Any = instance.content_type if instance.content_type_id else None
    record_event(
        ACTIONS[instance.action_flag],
        actor=instance.user,
        object_type=f"{ct.app_label}.{ct.model}" if ct is not None else "",
        object_id=str(instance.object_id or ""),
        details=changes(instance),
    )


# --- sign-in and sign-out: only the admin signs in with a Django session ----------------------------


_root: list[str] = []


def admin_root() -> str:
    """The admin's URL prefix ("/admin/"); a prefix no path has when the admin is not installed."""
    if not _root:
        try:
            _root.append(reverse("admin:index"))
        except NoReverseMatch:
            _root.append("\0")
    return _root[0]


def _in_admin(request: HttpRequest | None) -> bool:
    return request is not None and request.path.startswith(admin_root())


@receiver(user_logged_in, dispatch_uid="audit-admin-login")
def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if _in_admin(request):
        record_event(actions.ADMIN_LOGIN, actor=user)


@receiver(user_logged_out, dispatch_uid="audit-admin-logout")
def _logged_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None and _in_admin(request):
        record_event(actions.ADMIN_LOGOUT, actor=user)


@receiver(user_login_failed, dispatch_uid="audit-admin-login-failed")
def _login_failed(sender: str, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any) -> None:
    # The API's login writes its own event (whether or not it hands authenticate() the request).
    if not _in_admin(request):
        return
    record_event(
        actions.ADMIN_LOGIN,
        outcome=AuditEvent.Outcome.FAILURE,
        details={"username": str(credentials.get("username", ""))[:150], "reason": "bad credentials"},
    )
