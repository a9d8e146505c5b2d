"""medai's ASGI handler (medai/handler.py) sends request_started / request_finished inline only
when the request used no thread of its own, and exactly as Django does otherwise."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core import signals

from medai import handler
from medai.handler import _inline_safe, _request_thread_unused

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_request_that_made_no_thread_sensitive_call_has_no_thread_to_clean_up():
    # The asgiref internals the handler relies on: a thread exists once a thread-sensitive call ran.
    async with ThreadSensitiveContext():
        assert _request_thread_unused()
        await sync_to_async(lambda: None, thread_sensitive=False)()
        assert _request_thread_unused()
        await sync_to_async(lambda: None)()
        assert not _request_thread_unused()


def test_only_djangos_own_receivers_run_inline():
    assert _inline_safe(signals.request_finished, None)
    assert _inline_safe(signals.request_started, None)

    def other(**kwargs):
        pass

    signals.request_finished.connect(other)
    try:
        assert not _inline_safe(signals.request_finished, None)
    finally:
        signals.request_finished.disconnect(other)


@pytest.mark.parametrize(("path", "own_thread"), [("/healthz", False), ("/v1/models", True)])
def test_request_finished_runs_on_the_loop_unless_the_request_used_a_thread(
    live_medai, path, own_thread, alice, token_for, monkeypatch
):
    # /healthz is an async view: nothing runs in a thread of its own. /v1/models is a sync (DRF)
    # view: it runs in the request's thread, whose connections request_finished must close there.
    seen: list[tuple[str, str]] = []

    def started(**kwargs):
        seen.append(("started", threading.current_thread().name))

    def finished(**kwargs):
        seen.append(("finished", threading.current_thread().name))

    monkeypatch.setattr(handler, "INLINE_SAFE", handler.INLINE_SAFE | {started, finished})
    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        response = httpx.get(live_medai + path, headers={"Authorization": f"Bearer {token_for(alice)}"}, timeout=10)
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:  # request_finished follows the response
            time.sleep(0.01)
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
    assert response.status_code == 200
    assert [event for event, _ in seen] == ["started", "finished"]
    assert (seen[0][1] != seen[1][1]) is own_thread
