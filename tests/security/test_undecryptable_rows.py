"""A row encrypted under a key this installation no longer has (a developer's var/ from before the
encryption key stopped being derived from SECRET_KEY, or a key dropped during rotation) never
causes a 500: it reads as empty, the API says the result is unavailable, saving the row keeps the
ciphertext, and putting the key back recovers it."""

from __future__ import annotations

import json
from datetime import timedelta

from cryptography.fernet import Fernet
from django.db import connection
from django.utils import timezone

from apps.inference.models import InferenceTask, ModelEndpoint

FORMER_DERIVED_FERNET_KEY = "kJRglT2RyXVhiuNha64I81oXeGtiObhjBZgMdKD8c7o="
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Sepsis is…"}}],
}


def _raw(table: str, column: str, pk: object) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def _write_raw(table: str, column: str, pk: object, value: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE id = %s", [value, pk])


def _completed_task(alice, demo) -> InferenceTask:
    now = timezone.now()
    return InferenceTask.objects.create(
        user=alice,
        location=demo,
        status=InferenceTask.Status.COMPLETED,
        request={"messages": [{"role": "user", "content": "What is sepsis?"}]},
        result=ANSWER,
        created_at=now,
        finished_at=now,
        result_expires_at=now + timedelta(hours=1),
    )


def test_a_result_encrypted_under_a_former_key_answers_410_and_is_kept(alice, demo, client_for, settings) -> None:
    task = _completed_task(alice, demo)
    table, pk = InferenceTask._meta.db_table, task.pk.hex
    ciphertext = Fernet(FORMER_DERIVED_FERNET_KEY.encode()).encrypt(json.dumps(ANSWER).encode()).decode()
    _write_raw(table, "result", pk, ciphertext)

    client = client_for(alice)
    response = client.get(f"/v1/async/result/{task.id}")
    assert response.status_code == 410, response.content
    assert response.json()["error"]["code"] == "task_result_unavailable"
    assert client.get(f"/v1/async/status/{task.id}").status_code == 200
    assert client.get("/v1/async/tasks").status_code == 200

    reloaded = InferenceTask.objects.get(pk=task.pk)
    assert not reloaded.result
    assert reloaded.request["messages"][0]["content"] == "What is sepsis?"  # the readable column still reads
    reloaded.save()
    assert _raw(table, "result", pk) == ciphertext  # not overwritten by the save

    # With the former key back (after the current one), the result reads again.
    settings.MEDAI_ENCRYPTION_KEYS = [*settings.MEDAI_ENCRYPTION_KEYS, FORMER_DERIVED_FERNET_KEY]
    response = client.get(f"/v1/async/result/{task.id}")
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "Sepsis is…"


def test_a_backend_api_key_encrypted_under_a_former_key_reads_as_unset_and_is_kept(admin_client, db) -> None:
    endpoint = ModelEndpoint.objects.create(
        name="gpu1", base_url="http://127.0.0.1:9/v1", api_key="sk-backend", context_length=2048
    )
    ciphertext = Fernet(FORMER_DERIVED_FERNET_KEY.encode()).encrypt(b"sk-backend").decode()
    _write_raw(ModelEndpoint._meta.db_table, "api_key", endpoint.pk, ciphertext)

    reloaded = ModelEndpoint.objects.get(pk=endpoint.pk)
    assert reloaded.api_key == "" and not reloaded.api_key
    assert admin_client.get("/admin/inference/modelendpoint/").status_code == 200
    assert admin_client.get(f"/admin/inference/modelendpoint/{endpoint.pk}/change/").status_code == 200
    reloaded.rank = 3
    reloaded.save()
    assert _raw(ModelEndpoint._meta.db_table, "api_key", endpoint.pk) == ciphertext
