"""``POST /v1/files`` takes a multipart upload larger than the JSON API's body limit, up to
MEDAI_FILE_MAX_BYTES (and its envelope): over a real uvicorn, a 3 MB file of requests is stored
without a byte of it spooled to a temporary file (it is PHI, and a temporary file is not
encrypted), a declared length over the file limit is refused before a byte is read, and the
other /v1/ paths keep MEDAI_MAX_BODY_BYTES and their JSON-only rule."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator

import httpx
import pytest

from apps.inference.filebatch_models import StoredFile

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def private_tmp(monkeypatch, tmp_path) -> Iterator[str]:
    """The server runs in this process: every temporary file it would spool lands here."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield str(tmp_path)


def _files_in(path: str) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def _jsonl(n: int, size: int) -> bytes:
    line = {
        "custom_id": "",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "Chat", "messages": [{"role": "user", "content": "x" * size}], "max_tokens": 4},
    }
    return "".join(json.dumps({**line, "custom_id": f"r{i}"}) + "\n" for i in range(n)).encode()


def test_a_3_mb_upload_is_taken_and_never_spooled(live_medai, alice, token_for, private_tmp):
    data = _jsonl(300, 10_000)
    assert 3_000_000 < len(data) < 16 * 1024 * 1024
    before = _files_in(private_tmp)
    response = httpx.post(
        f"{live_medai}/v1/files",
        headers={"Authorization": f"Bearer {token_for(alice)}"},
        files={"file": ("big.jsonl", data)},
        data={"purpose": "batch"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:300]
    assert response.json()["bytes"] == len(data) and StoredFile.objects.get().lines == 300
    assert _files_in(private_tmp) == before, "the upload was spooled to a temporary file"


def test_a_declared_length_over_the_file_limit_is_refused_before_reading(live_medai, settings):
    host, port = live_medai.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    length = settings.MEDAI_FILE_MAX_BYTES + 1024 * 1024
    sock.sendall(
        f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
    )  # and not one byte of the body
    answer = sock.recv(65536).decode("latin-1")
    sock.close()
    assert answer.startswith("HTTP/1.1 413") and "request_too_large" in answer


def test_other_paths_keep_the_json_limit_and_rule(live_medai, alice, token_for):
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    big = httpx.post(f"{live_medai}/v1/batches", headers=headers, content=b"{" + b" " * 2_000_000 + b"}")
    assert big.status_code == 413
    form = httpx.post(f"{live_medai}/v1/batches", headers=headers, files={"file": ("a", b"x")})
    assert form.status_code == 415 and form.json()["error"]["param"] == "Content-Type"
