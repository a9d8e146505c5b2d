"""medai's ASGI handler (medai/handler.py) sends request_started / request_finished inline only
when the request used no thread of its own, and exactly as Django does otherwise."""

from __future__ import annotations

import time

import httpx
import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals

from medai.handler import _inline_safe, _request_thread_unused

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_request_that_made_no_thread_sensitive_call_has_no_thread_to_clean_up():  # type: ignore[no-untyped-def]
    # The asgiref internals the handler relies on: a thread exists once a thread-sensitive call ran.
    async with ThreadSensitiveContext():
        assert _request_thread_unused()
        await sync_to_async(lambda: None, thread_sensitive=False)()
        assert _request_thread_unused()
        await sync_to_async(lambda: None)()
        assert not _request_thread_unused()


def test_only_djangos_own_receivers_run_inline():  # type: ignore[no-untyped-def]
    assert _inline_safe(signals.request_finished, None)
    assert _inline_safe(signals.request_started, None)

    def other(**kwargs):  # type: ignore[no-untyped-def]
        pass

    signals.request_finished.connect(other)
    try:
        assert not _inline_safe(signals.request_finished, None)
    finally:
        signals.request_finished.disconnect(other)


@pytest.mark.parametrize("path", ["/healthz", "/v1/models"])  # an async view; a sync (DRF) view
def test_request_signals_fire_for_async_and_sync_views(live_medai, path, alice, token_for):  # type: ignore[no-untyped-def]
    seen: list[str] = []

    def started(**kwargs):  # type: ignore[no-untyped-def]
        seen.append("started")

    def finished(**kwargs):  # type: ignore[no-untyped-def]
        seen.append("finished")

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        response = httpx.get(live_medai + path, headers={"Authorization": f"Bearer {token_for(alice)}"}, timeout=10)
        deadline = time.monotonic() + 10
        while "finished" not in seen and time.monotonic() < deadline:  # sent after the response
            time.sleep(0.01)
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert response.status_code == 200
    assert seen == ["started", "finished"]
