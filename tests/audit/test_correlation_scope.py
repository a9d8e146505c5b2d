"""The correlation id covers the whole of a request, not only Django's middleware: a line logged
after the middleware returned (django.request's "Not Found", the server's access log, a streamed
body) names the same id the response's X-Request-ID header gives the caller; a well-formed
X-Request-ID of the caller's is kept, a malformed one replaced."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from channels.testing import HttpCommunicator

from apps.audit.context import get_correlation_id
from apps.audit.logging import CorrelationFilter
from medai.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(CorrelationFilter())
        self.lines: list[tuple[str, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, record.getMessage(), record.correlation_id))  # type: ignore[attr-defined]


@pytest.fixture
def logged() -> Iterator[Collect]:
    handler = Collect()
    log = logging.getLogger("django.request")
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)


async def _get(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    headers = [(b"host", b"testserver"), *headers]
    return await HttpCommunicator(application, "GET", path, headers=headers).get_response(timeout=30)


def _header(response: dict, name: bytes) -> str:
    return next(v for k, v in response["headers"] if k.lower() == name).decode()


async def test_a_line_logged_after_the_middleware_names_the_callers_id(logged):
    response = await _get("/v1/nowhere", [(b"x-request-id", b"trace-abc.123")])
    assert response["status"] == 404
    assert _header(response, b"x-request-id") == "trace-abc.123"
    [(name, msg, cid)] = [line for line in logged.lines if line[1].startswith("Not Found")]
    assert cid == "trace-abc.123"
    assert get_correlation_id() == ""  # reset when the request ended


async def test_without_a_well_formed_id_one_is_minted_and_used_throughout(logged):
    response = await _get("/v1/nowhere", [(b"x-request-id", b"not ok; has spaces")])
    minted = _header(response, b"x-request-id")
    assert minted != "not ok; has spaces" and len(minted) == 32
    [(_, _, cid)] = [line for line in logged.lines if line[1].startswith("Not Found")]
    assert cid == minted
