"""Every log handler writes lines without PHI, credentials or request identifiers: the filter is on
each handler of ``settings.LOGGING`` and on uvicorn's own loggers, a record's arguments and
exception are cleaned before any formatter reads them, and a request's query values and a
username that reach uvicorn's access log and Django's request log come out redacted."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import httpx
import pytest
from django.conf import settings

from apps.audit.logging import RedactionFilter, redact_identifiers, redact_log_text

LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "django.request")


def test_every_configured_handler_has_the_redaction_filter():
    handlers = settings.LOGGING["handlers"]
    assert handlers
    for name, handler in handlers.items():
        assert "redaction" in handler.get("filters", []), name
    assert settings.LOGGING["filters"]["redaction"]["()"] == "apps.audit.logging.RedactionFilter"
    for handler in logging.getLogger().handlers:
        if type(handler).__module__.startswith("_pytest"):
            continue  # pytest's own capture
        assert any(isinstance(f, RedactionFilter) for f in handler.filters), handler


def test_uvicorn_and_django_request_loggers_carry_the_filter():
    import medai.asgi  # noqa: F401 - installs the filter on the servers' own loggers

    for name in ("uvicorn.access", "uvicorn.error", "daphne.server", "django.request"):
        assert any(type(f) is RedactionFilter for f in logging.getLogger(name).filters), name


@pytest.fixture
def logged() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    swapped = []
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and handler not in [h for h, _ in swapped]:
                swapped.append((handler, handler.setStream(buffer)))
    assert swapped
    yield buffer
    for handler, stream in swapped:
        handler.setStream(stream)


def test_phi_in_a_message_its_arguments_and_its_exception_never_reaches_the_handler(logged):
    log = logging.getLogger("medai.test")
    try:
        raise ValueError("backend echoed: Patient: Maria Lopez, MRN 00482913, DOB 03/14/1956")
    except ValueError:
        log.exception("task failed for %s (%s) at %s", "Mrs. Garcia", "garcia@example.org", "555-201-3344")
    log.warning("login failed: username: 'alice' from /admin/accounts/user/?q=lopez&limit=20")
    text = logged.getvalue()
    for planted in ("Maria", "Lopez", "00482913", "03/14/1956", "Garcia", "garcia@example.org", "555-201-3344"):
        assert planted not in text, planted
    assert "'alice'" not in text and "q=lopez" not in text
    assert "?q=[REDACTED]&limit=20" in text and "username: '[REDACTED]'" in text
    assert "task failed for Mrs. [NAME]" in text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("GET /admin/accounts/user/?q=smith&o=1 HTTP/1.1", "GET /admin/accounts/user/?q=[REDACTED]&o=1 HTTP/1.1"),
        ("/v1/async/tasks?limit=50&status=queued", "/v1/async/tasks?limit=50&status=[REDACTED]"),
        (
            "AXES: login failed, username: 'bob', ip_address: '10.0.0.1'",
            "AXES: login failed, username: '[REDACTED]', ip_address: '10.0.0.1'",
        ),
        ("user=carol actor=dave", "user=[REDACTED] actor=[REDACTED]"),
        ("X-Patient-Id: 4481\nX-User: alice\nAccept: */*", "X-Patient-Id: [REDACTED]\nX-User: [REDACTED]\nAccept: */*"),
    ],
)
def test_identifiers_from_urls_headers_and_usernames_are_redacted(text, expected):
    assert redact_identifiers(text) == expected


def test_a_line_with_nothing_to_hide_is_unchanged():
    line = "worker 2 claimed 16 tasks in 12.5 ms (queue depth 40, p95 210 ms)"
    assert redact_log_text(line) == line


@pytest.fixture
def web_with_access_log(transactional_db) -> Iterator[str]:
    from tests.support.servers import LiveASGIServer

    server = LiveASGIServer(access_log=True).start()
    yield server.url
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_a_real_servers_access_and_request_logs_lose_query_phi(web_with_access_log, logged):
    url = f"{web_with_access_log}/v1/nowhere?patient=John%20Smith&mrn=00482913&email=js@example.org"
    assert httpx.get(url, timeout=30).status_code == 404
    text = logged.getvalue()
    assert "/v1/nowhere?patient=[REDACTED]&mrn=[REDACTED]&email=[REDACTED]" in text, text[-2000:]
    for planted in ("John", "Smith", "00482913", "js@example.org"):
        assert planted not in text
