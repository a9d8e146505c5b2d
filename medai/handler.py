"""Django's ASGI handler without the per-request thread where nothing needs one.

Stock Django sends ``request_started`` and, through ``response.close()``, ``request_finished``
via ``sync_to_async(thread_sensitive=True)``: each request starts a thread for them (and asgiref
a second one to join it), then hops there and back twice. Their receivers (reset the query log,
close old DB connections and caches, reset the urlconf) act on the connections of the thread
they run in. When the request made no thread-sensitive call, no thread exists whose
connections could need closing, and those receivers are no-ops there as on the event loop:
this handler runs them inline, on the loop. When the request did use the thread (a sync view,
a middleware hook that did I/O) or an unknown receiver is connected, it does exactly what
Django does. Everything else is Django's ``ASGIHandler.handle`` of the pinned version.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import AsyncToSync, SyncToAsync, sync_to_async
from django.core import signals
from django.core.cache import close_caches
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import reset_urlconf
from django.db import close_old_connections, reset_queries
from django.dispatch import Signal
from django.urls import set_script_prefix

# Receivers that touch only this thread's DB connections and this context's caches and urlconf.
INLINE_SAFE = frozenset({reset_queries, close_old_connections, close_caches, reset_urlconf})


def _inline_safe(signal: Signal, sender: Any) -> bool:
    sync_receivers, async_receivers = signal._live_receivers(sender)
    return not async_receivers and all(r in INLINE_SAFE for r in sync_receivers)


async def _send(signal: Signal, sender: Any, **named: Any) -> None:
    if _request_thread_unused() and _inline_safe(signal, sender):
        signal.send(sender=sender, **named)
    else:
        await signal.asend(sender=sender, **named)


def _request_thread_unused() -> bool:
    """True when this request has started no thread of its own (and runs under no outer
    ``async_to_sync`` whose thread would take its thread-sensitive work)."""
    if getattr(AsyncToSync.executors, "current", None) is not None:
        return False
    context = SyncToAsync.thread_sensitive_context.get(None)
    return context is not None and context not in SyncToAsync.context_to_thread_executor


class MedaiASGIHandler(ASGIHandler):
    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        await _send(signals.request_started, self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            assert error_response is not None  # create_request returns one or the other
            body_file.close()
            await self.send_response(error_response, send)
            await sync_to_async(error_response.close)()
            return

        async def process_request(request: Any, send: Any) -> Any:
            response = await self.run_get_response(request)
            try:
                await self.send_response(response, send)
            except asyncio.CancelledError:
                pass  # the client disconnected during send_response
            return response

        # As Django: a client that disconnects while the view runs cancels the view.
        tasks = [
            asyncio.create_task(self.listen_for_disconnect(receive)),
            asyncio.create_task(process_request(request, send)),
        ]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                try:
                    task.result()
                except RequestAborted:
                    pass
                except AssertionError:
                    body_file.close()
                    raise
            else:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass

        try:
            response = tasks[1].result()
        except asyncio.CancelledError:
            await _send(signals.request_finished, self.__class__)
        else:
            # close() runs the response's closers and sends request_finished. Django adds the
            # request's own close() (its body, in memory or a temporary file); other closers
            # (an open file being served) keep the stock path.
            if (
                all(getattr(closer, "__self__", None) is request for closer in response._resource_closers)
                and _request_thread_unused()
                and _inline_safe(signals.request_finished, self.__class__)
            ):
                response.close()
            else:
                await sync_to_async(response.close)()
        body_file.close()
