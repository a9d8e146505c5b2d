"""A task's error text is encrypted at rest like its prompt and result (a backend's error may
echo the prompt), still answers in the API, and error texts written before the column was
encrypted are encrypted in place by the migration."""

from __future__ import annotations

import importlib
from datetime import timedelta
from types import SimpleNamespace

from django.apps import apps as django_apps
from django.db import connection
from django.utils import timezone

from apps.audit.fields import decrypt
from apps.inference.models import InferenceTask

PHI = "backend error: could not tokenize 'Maria Lopez, MRN 00482913, chest pain'"


def _raw(pk) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT error_message FROM {InferenceTask._meta.db_table} WHERE id = %s",
            [InferenceTask._meta.pk.get_db_prep_value(pk, connection)],
        )
        return cursor.fetchone()[0]


def _failed(alice, demo) -> InferenceTask:
    now = timezone.now()
    return InferenceTask.objects.create(
        user=alice,
        location=demo,
        status=InferenceTask.Status.FAILED,
        error_code="backend_error",
        error_message=PHI,
        created_at=now,
        finished_at=now,
        result_expires_at=now + timedelta(hours=1),
    )


def test_the_error_text_is_ciphertext_in_the_database_and_plain_in_the_api(alice, demo, client_for):
    task = _failed(alice, demo)
    stored = _raw(task.pk)
    assert "Lopez" not in stored and "00482913" not in stored
    assert decrypt(stored) == PHI
    body = client_for(alice).get(f"/v1/async/status/{task.id}").json()
    assert body["error"]["message"] == PHI


def test_the_queue_s_bulk_failure_writes_it_encrypted_too(alice, demo):
    task = _failed(alice, demo)
    InferenceTask.objects.filter(pk=task.pk).fail("backend_error", "echo: Mrs. Garcia", timezone.now(), None)
    assert "Garcia" not in _raw(task.pk)
    assert InferenceTask.objects.get(pk=task.pk).error_message == "echo: Mrs. Garcia"


def test_the_migration_encrypts_plaintext_written_before_it(alice, demo):
    task = _failed(alice, demo)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {InferenceTask._meta.db_table} SET error_message = %s WHERE id = %s",
            [PHI, InferenceTask._meta.pk.get_db_prep_value(task.pk, connection)],
        )
    assert _raw(task.pk) == PHI
    migration = importlib.import_module("apps.inference.migrations.0008_encrypted_error_text_and_legal_holds")
    editor = SimpleNamespace(connection=connection)  # all the data step uses of a schema editor
    migration.encrypt_error_texts(django_apps, editor)
    assert decrypt(_raw(task.pk)) == PHI
    migration.encrypt_error_texts(django_apps, editor)  # idempotent: not encrypted twice
    assert decrypt(_raw(task.pk)) == PHI
