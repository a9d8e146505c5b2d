"""A dump of every table holds no prompt, result or echoed error text in clear, and no API secret:
a prompt with a canary word goes through a sync chat that a backend answers with an error echoing
it, an async task that completes, and one that fails the same way; then every column of every
table is searched for the canary and the secret."""

from __future__ import annotations

import json

import httpx
import pytest
from django.db import connection

from apps.accounts.services import authenticate_header
from apps.inference import queue
from tests.conftest import records_written, register_model

pytestmark = pytest.mark.django_db(transaction=True)

CANARY = "Xylocanary"
PROMPT = f"{CANARY} note: Mrs. Quillfeather, MRN 99887766, chest pain since Tuesday"


def _dump() -> str:
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            parts.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(parts)


def _mode(stub: str, **mode: object) -> None:
    httpx.post(stub.removesuffix("/v1") + "/_mode", json=mode, timeout=10).raise_for_status()


def test_a_database_dump_holds_no_prompt_echoed_error_or_api_secret_in_clear(
    live_medai, stub_backend, alice, api_key_for
):
    register_model("stub", stub_backend)
    secret = api_key_for(alice)
    headers = {"Authorization": f"Bearer {secret}"}
    chat = {"model": "Chat", "max_tokens": 8, "messages": [{"role": "user", "content": PROMPT}]}

    echo = {"error": {"message": f"cannot tokenize: {PROMPT}", "type": "invalid_request_error"}}
    _mode(stub_backend, mode="error", status=400, body=echo)
    sync = httpx.post(f"{live_medai}/v1/chat/completions", json=chat, headers=headers, timeout=30)
    assert sync.status_code == 400 and CANARY in sync.text  # the caller still reads its error

    records_written()  # the sync chat's record is in before the queue writes
    principal = authenticate_header(f"Bearer {secret}")
    failed = queue.submit_task(principal, {**chat, "max_tokens": 9}).task
    queue.run_task(str(failed.id))
    _mode(stub_backend, mode="ok")
    done = queue.submit_task(principal, {**chat, "max_tokens": 10}).task
    queue.run_task(str(done.id))
    failed.refresh_from_db()
    done.refresh_from_db()
    assert failed.status == "failed" and CANARY in failed.error_message  # readable through the model
    assert done.status == "completed" and CANARY in json.dumps(done.request)

    records_written()
    dump = _dump()
    assert CANARY not in dump, "a prompt or an error text echoing it is stored in clear"
    assert "Quillfeather" not in dump and "99887766" not in dump
    assert secret not in dump and secret.split("_", 2)[2] not in dump, "an API secret is stored in clear"
