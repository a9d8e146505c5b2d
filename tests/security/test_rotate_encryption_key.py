"""``manage.py rotate_encryption_key`` re-encrypts every encrypted column (prompts, results, error
texts, backend API keys) under the newest key, in batches: afterwards the old key can be dropped
and everything still reads; a second run finds nothing to do; values no key opens are counted and
left as they are; ``--dry-run`` writes nothing; the rotation is audited."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from apps.audit.fields import encrypted_columns
from apps.audit.models import AuditEvent
from apps.inference.models import InferenceTask, ModelEndpoint

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def _raw(model, column: str, pk) -> str:
    prep = model._meta.pk.get_db_prep_value(pk, connection)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {model._meta.db_table} WHERE {model._meta.pk.column} = %s", [prep])
        return cursor.fetchone()[0]


def _rows(alice, demo, n: int) -> list[InferenceTask]:
    now = timezone.now()
    return [
        InferenceTask.objects.create(
            user=alice,
            location=demo,
            status=InferenceTask.Status.FAILED,
            request={"messages": [{"role": "user", "content": f"note {i}: Mrs. Garcia, MRN 00482913"}]},
            result={"answer": i},
            error_message=f"backend said: cannot parse 'note {i}: Mrs. Garcia'",
            created_at=now,
            finished_at=now,
            result_expires_at=now + timedelta(hours=1),
        )
        for i in range(n)
    ]


def test_every_encrypted_column_is_found():
    labels = {f"{m._meta.label}.{f.name}" for m, f in encrypted_columns()}
    assert {
        "inference.InferenceTask.request",
        "inference.InferenceTask.result",
        "inference.InferenceTask.error_message",
        "inference.ModelEndpoint.api_key",
    } <= labels


def test_rotation_moves_every_value_to_the_new_key_and_the_old_one_can_go(alice, demo, settings):
    settings.MEDAI_ENCRYPTION_KEYS = [OLD]
    tasks = _rows(alice, demo, 7)
    endpoint = ModelEndpoint.objects.create(
        name="gpu1", base_url="http://127.0.0.1:9/v1", api_key="sk-backend", context_length=2048
    )
    with_old = _raw(InferenceTask, "error_message", tasks[0].pk)
    assert Fernet(OLD).decrypt(with_old.encode())

    settings.MEDAI_ENCRYPTION_KEYS = [NEW, OLD]
    out = StringIO()
    call_command("rotate_encryption_key", "--batch-size", "3", stdout=out)
    assert "inference.InferenceTask.error_message: 7 re-encrypted" in out.getvalue()
    assert "inference.ModelEndpoint.api_key: 1 re-encrypted" in out.getvalue()
    for task in tasks:
        for column in ("request", "result", "error_message"):
            Fernet(NEW).decrypt(_raw(InferenceTask, column, task.pk).encode())  # raises if not under NEW
    try:
        Fernet(OLD).decrypt(_raw(InferenceTask, "request", tasks[0].pk).encode())
        raise AssertionError("still readable with the old key")
    except InvalidToken:
        pass

    settings.MEDAI_ENCRYPTION_KEYS = [NEW]  # the old key dropped: everything still reads
    reloaded = InferenceTask.objects.get(pk=tasks[3].pk)
    assert reloaded.error_message == "backend said: cannot parse 'note 3: Mrs. Garcia'"
    assert reloaded.request["messages"][0]["content"].startswith("note 3")
    assert ModelEndpoint.objects.get(pk=endpoint.pk).api_key == "sk-backend"

    again = StringIO()
    call_command("rotate_encryption_key", stdout=again)
    assert "re-encrypted 0 value(s)" in again.getvalue()
    assert "7 already under the newest key" in again.getvalue()
    assert AuditEvent.objects.filter(action="encryption.rotate").count() == 2


def test_values_no_key_opens_are_counted_and_left_unchanged(alice, demo, settings):
    stranger = Fernet.generate_key().decode()
    settings.MEDAI_ENCRYPTION_KEYS = [stranger]
    [task] = _rows(alice, demo, 1)
    before = _raw(InferenceTask, "result", task.pk)
    settings.MEDAI_ENCRYPTION_KEYS = [NEW, OLD]
    out = StringIO()
    call_command("rotate_encryption_key", stdout=out)
    assert (
        "inference.InferenceTask.result: 0 re-encrypted, 0 already under the newest key, 1 undecryptable"
        in out.getvalue()
    )
    assert _raw(InferenceTask, "result", task.pk) == before


def test_a_dry_run_writes_nothing(alice, demo, settings):
    settings.MEDAI_ENCRYPTION_KEYS = [OLD]
    [task] = _rows(alice, demo, 1)
    before = _raw(InferenceTask, "request", task.pk)
    settings.MEDAI_ENCRYPTION_KEYS = [NEW, OLD]
    out = StringIO()
    call_command("rotate_encryption_key", "--dry-run", stdout=out)
    assert "would re-encrypt 3 value(s)" in out.getvalue()
    assert _raw(InferenceTask, "request", task.pk) == before
    assert not AuditEvent.objects.filter(action="encryption.rotate").exists()
