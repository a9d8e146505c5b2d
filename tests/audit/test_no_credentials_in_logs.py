"""No log line carries a credential: uvicorn's access log (on) and websocket lines, Django's request
logging of a 4xx, and an error logged with a token in its exception text, for a JWT and an API key
sent the old way (``?token=``, ``?api_key=``). A whole JWT and a 90-day API key were in the web log.

The output checked is what the real handlers write: medai's JSON console handler and the handlers
uvicorn installs on its own loggers, their streams swapped for a buffer during the test.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from apps.audit.credentials import redact_credentials

pytestmark = pytest.mark.django_db(transaction=True)

LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "django.request")


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    """Everything the configured log handlers write while the test runs."""
    buffer = io.StringIO()
    swapped = []
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler not in [h for h, _ in swapped]:
                swapped.append((handler, handler.setStream(buffer)))
    assert swapped, "no log handler to watch"
    yield buffer
    for handler, stream in swapped:
        handler.setStream(stream)


@pytest.fixture
def web_with_access_log(transactional_db) -> Iterator[str]:
    from tests.support.servers import LiveASGIServer

    server = LiveASGIServer(access_log=True).start()
    yield server.url
    server.stop()


def test_tokens_and_keys_in_urls_and_errors_never_reach_a_log_line(
    web_with_access_log, logged, alice, token_for, api_key_for
):
    jwt, key = token_for(alice), api_key_for(alice)
    ws_base = web_with_access_log.replace("http://", "ws://")
    with connect(f"{ws_base}/ws/status/?token={jwt}", open_timeout=10) as ws:  # old clients still work
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
    with connect(f"{ws_base}/ws/gpu/?token={key}", open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "gpu.status"
    # failing requests carrying credentials in the query: 401 (the query is no way to authenticate
    # over HTTP) and 404, each logged by uvicorn's access log and by Django's request logger
    assert httpx.get(f"{web_with_access_log}/v1/models?token={jwt}", timeout=30).status_code == 401
    assert (
        httpx.get(f"{web_with_access_log}/v1/nowhere?api_key={key}&access_token={jwt}", timeout=30).status_code == 404
    )
    # an error whose message and exception both carry them
    try:
        raise RuntimeError(f"backend refused Bearer {jwt} for key {key}")
    except RuntimeError:
        logging.getLogger("medai.test").exception("request to /ws/status/?token=%s failed", jwt)

    text = logged.getvalue()
    assert "/ws/status/?token=[REDACTED]" in text and "/ws/gpu/?token=[REDACTED]" in text
    assert "/v1/models?token=[REDACTED]" in text  # the access log was on, and redacted
    assert "Not Found: /v1/nowhere" in text and "backend refused Bearer [REDACTED]" in text
    for secret, what in (
        (jwt, "JWT"),
        (key, "API key"),
        (key.split("_", 2)[2], "API key secret"),
        (jwt.split(".")[2], "JWT signature"),
    ):
        assert secret not in text, f"the {what} is in the log:\n{text[-3000:]}"


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "GET /ws/status/?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln HTTP/1.1",
            "GET /ws/status/?token=[REDACTED] HTTP/1.1",
        ),
        (
            '"WebSocket /ws/gpu/?x=1&api_key=mk_0123abcd_AbCdEfGhIjKlMnOp" [accepted]',
            '"WebSocket /ws/gpu/?x=1&api_key=[REDACTED]" [accepted]',
        ),
        ("/v1/a?access-token=zzz&password=hunter2#frag", "/v1/a?access-token=[REDACTED]&password=[REDACTED]#frag"),
        ("Authorization: Bearer sk-abcdefghijkl", "Authorization: Bearer [REDACTED]"),
        ("subprotocols bearer, mk_0123abcd_xyzxyzxyzxyz", "subprotocols bearer, [REDACTED]"),
        ("a bare eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln in a path", "a bare [REDACTED] in a path"),
        ("/v1/async/status/5b0c?page=2&monkey=1", "/v1/async/status/5b0c?page=2&monkey=1"),
    ],
)
def test_credentials_are_recognised_in_any_text(text: str, expected: str) -> None:
    assert redact_credentials(text) == expected
