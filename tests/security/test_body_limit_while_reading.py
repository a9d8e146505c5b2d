"""The body size limit acts while the body is read: a 300 MB chunked upload to a real uvicorn is cut
off at the limit with an OpenAI-shaped 413 (most of it is never sent, nothing is spooled to disk
and the server's memory does not grow by the upload), a declared length over the limit is refused
before a byte is read, and every endpoint answers 413 the same way."""

from __future__ import annotations

import json
import os
import select
import socket
import tempfile
import time
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 1_048_576  # MEDAI_MAX_BODY_BYTES' default
UPLOAD = 300 * 1024 * 1024
CHUNK = 256 * 1024


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _files_in(path: str) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


@pytest.fixture
def private_tmp(monkeypatch, tmp_path) -> Iterator[str]:
    """The server runs in this process: every temporary file it would spool lands here."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    yield str(tmp_path)


def _response(sock: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    sock.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _stream_chunked(url: str, path: str, total: int) -> tuple[int, int, dict, bytes]:
    """Send ``total`` bytes as a chunked body until the server answers; (bytes sent, status, headers, body)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Authorization: Bearer nobody\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    )
    chunk = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
    sent = 0
    deadline = time.monotonic() + 60
    try:
        while sent < total and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break  # the server answered
            sock.sendall(chunk)
            sent += CHUNK
    except (BrokenPipeError, ConnectionResetError):
        pass
    status, headers, body = _response(sock)
    sock.close()
    return sent, status, headers, body


def test_a_300_mb_chunked_upload_is_cut_off_at_the_limit_and_never_spooled(live_medai, private_tmp):
    before_rss, before_files = _rss_kib(), _files_in(private_tmp)
    sent, status, headers, body = _stream_chunked(live_medai, "/v1/chat/completions", UPLOAD)
    assert status == 413
    error = json.loads(body)["error"]
    assert error["code"] == "request_too_large" and str(LIMIT) in error["message"]
    assert headers["content-type"] == "application/json"
    assert sent < UPLOAD // 10, f"{sent} bytes went out before the answer: the server kept reading"
    assert _files_in(private_tmp) == before_files, "the body was spooled to a temporary file"
    assert _rss_kib() - before_rss < 64 * 1024, "the server's memory grew by the upload"


def test_a_declared_length_over_the_limit_is_refused_before_reading(live_medai):
    host, port = live_medai.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        f"POST /v1/async/submit HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {UPLOAD}\r\n\r\n".encode()
    )  # and not one byte of the body
    status, _, body = _response(sock)
    sock.close()
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",
        "/v1/async/submit",
        "/v1/async/submit-batch",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/models",
        "/admin/login/",
        "/",
        "/no/such/page",
    ],
)
def test_every_endpoint_answers_413_openai_shaped(live_medai, path):
    sent, status, _, body = _stream_chunked(live_medai, path, 4 * LIMIT)
    assert status == 413, path
    assert json.loads(body)["error"]["code"] == "request_too_large"
