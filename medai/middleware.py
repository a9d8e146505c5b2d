"""Async-native variants of the stock middleware, so an async view costs no thread hops.

Under ASGI, Django runs a ``MiddlewareMixin`` middleware's ``process_request``, ``process_view``
and ``process_response`` each through ``sync_to_async(thread_sensitive=True)``: a hop to a thread
that Django starts for every request. With the stock stack that is about 15 hops per request, and
one sync-only middleware (WhiteNoise) turns the whole stack above it synchronous, so every request
also crossed into a thread and back through ``async_to_sync``. Together that was most of what
medai added to a chat completion (see ``bench/README.md``).

The hooks of the middleware below only touch the request, the response and settings: no database,
no files, no network. Run inline on the event loop they do exactly what they did in the thread.
Where a hook can do I/O (a session that must be saved, messages that spill into the session,
a static file to open) it still goes to a thread, and only then. Sync mode (WSGI, Django's test
client) is untouched: these classes only change ``__acall__``.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from corsheaders.middleware import CorsMiddleware as _Cors
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as _Authentication
from django.contrib.messages.middleware import MessageMiddleware as _Message
from django.contrib.sessions.middleware import SessionMiddleware as _Session
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware as _XFrameOptions
from django.middleware.common import CommonMiddleware as _Common
from django.middleware.csrf import CsrfViewMiddleware as _CsrfView
from django.middleware.security import SecurityMiddleware as _Security
from django.utils.deprecation import MiddlewareMixin
from django_prometheus.middleware import PrometheusAfterMiddleware as _PrometheusAfter
from django_prometheus.middleware import PrometheusBeforeMiddleware as _PrometheusBefore
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from whitenoise.middleware import WhiteNoiseMiddleware as _WhiteNoise

from apps.inference.errors import handler_json

logger = logging.getLogger("medai.http")
REDIS_RETRY_AFTER = 5


class InlineHooksMixin(MiddlewareMixin):
    """Run ``process_request``/``process_view``/``process_response`` inline in async mode.

    Only for middleware whose hooks never block; ``needs_thread`` names the exceptions, and a
    middleware whose configuration makes its hooks do I/O says so in ``inline_safe``.
    """

    async_mode: bool
    get_response: Any
    process_view: Any  # the middleware's own hook; replaced by a coroutine in async mode

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        if self.async_mode and self.inline_safe() and hasattr(self, "process_view"):
            # Django adapts a sync process_view with a thread hop; a coroutine it awaits directly.
            sync_view = self.process_view

            async def process_view(*args: Any) -> Any:
                return sync_view(*args)

            self.process_view = process_view

    def inline_safe(self) -> bool:
        return True

    def needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        """True when ``process_response`` may do I/O for this request."""
        return False

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if not self.inline_safe():
            return await super().__acall__(request)
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.needs_thread(request, response):
                response = await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
            else:
                response = self.process_response(request, response)
        return response


class PrometheusBeforeMiddleware(InlineHooksMixin, _PrometheusBefore):
    pass


class PrometheusAfterMiddleware(InlineHooksMixin, _PrometheusAfter):
    pass


class SecurityMiddleware(InlineHooksMixin, _Security):
    pass


class CommonMiddleware(InlineHooksMixin, _Common):
    pass


class CsrfViewMiddleware(InlineHooksMixin, _CsrfView):
    """The token lives in a cookie; with ``CSRF_USE_SESSIONS`` it would need the session (I/O).
    ``process_view`` may parse a form body (``request.POST``): under ASGI the body is already
    read, in memory up to ``FILE_UPLOAD_MAX_MEMORY_SIZE``, and medai takes no file uploads."""

    def inline_safe(self) -> bool:
        return not settings.CSRF_USE_SESSIONS


# The OpenAI-compatible API: bearer-authenticated (DRF's authentication classes are bearer only,
# and chat_completions authenticates its own header), answered in JSON, never rendered from a template.
API_PREFIX = "/v1/"


class PagesOnlyMixin(MiddlewareMixin):
    """For middleware whose work only pages use (the admin, the web UI): the session, the user
    attached from it, flash messages. Requests under ``API_PREFIX`` go straight past them, in
    sync and async mode alike: no view there reads ``request.session``, ``request.user`` (DRF sets
    its own from the bearer token) or messages, and those middleware cost about as much as the
    rest of the stack's hooks together on every API call (bench/README.md, "chat_overhead.py").
    CSRF, security headers, the correlation id and the metrics still run on every path."""

    def __call__(self, request: HttpRequest) -> Any:
        if request.path_info.startswith(API_PREFIX):
            return self.get_response(request)  # a coroutine in async mode, as MiddlewareMixin's
        return super().__call__(request)


class SessionMiddleware(PagesOnlyMixin, InlineHooksMixin, _Session):
    """Creating the lazy session store is free; saving it is a database write."""

    def needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class AuthenticationMiddleware(PagesOnlyMixin, InlineHooksMixin, _Authentication):
    """Only attaches the lazy ``request.user``/``request.auser``; loading the user is the view's."""


class MessageMiddleware(PagesOnlyMixin, InlineHooksMixin, _Message):
    """Storing messages may write the session (the fallback storage): only then a thread."""

    def needs_thread(self, request: HttpRequest, response: HttpResponseBase) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)


class XFrameOptionsMiddleware(InlineHooksMixin, _XFrameOptions):
    pass


class WhiteNoiseMiddleware(_WhiteNoise):
    """WhiteNoise, async-capable: a sync-only middleware makes every request pay two thread
    crossings. Looking a URL up in the table of static files is a dict lookup; opening a file,
    or finding one on disk (``autorefresh``, i.e. DEBUG), runs in a thread."""

    async_capable = True

    def __init__(self, get_response: Any = None, settings: Any = settings) -> None:
        super().__init__(get_response, settings)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:
            static_file = await sync_to_async(self.find_file)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)


class RedisUnavailableMiddleware(MiddlewareMixin):
    """Redis gone (restarting, unreachable): a view that needed it answers 503 with ``Retry-After``,
    OpenAI-shaped on ``/v1/``, instead of a 500. Every Redis client reconnects by itself once it is
    back (medai/redisconf.py, medai/embedded.py), so the next try works. Only a view's exceptions
    come here (``process_exception``): no hook of this middleware runs on a request that succeeds."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, (RedisConnectionError, RedisTimeoutError)):
            return None
        logger.warning("Redis unavailable for %s %s: %s", request.method, request.path, type(exception).__name__)
        message = "A shared service (Redis) is unavailable; try again shortly."
        if request.path.startswith("/v1/"):
            response: HttpResponse = handler_json(503, "redis_unavailable", message)
        else:
            response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(REDIS_RETRY_AFTER)
        return response


class SecurityHeadersMiddleware:
    """What Django's SecurityMiddleware and XFrameOptionsMiddleware do not set, on every answer that
    passes through Django (static files are answered by WhiteNoise above it and keep their caching):

    - ``Cache-Control: no-store`` unless the answer already says ``no-store`` (the admin's
      ``never_cache`` does): every API answer, page and error may carry PHI, and a shared or
      browser cache must keep none of it (an SSE stream's ``no-cache`` becomes ``no-store`` too);
    - on HTML pages, ``Content-Security-Policy`` (``MEDAI_CSP``: scripts, styles and connections
      from this origin only, no frames, no plugins) and a ``Permissions-Policy`` that turns off
      the camera, microphone and geolocation.

    Two dict lookups and at most three header writes per answer, no I/O: native sync and async, so
    the chat's hot path pays no thread hop for it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        return self._secure(self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        return self._secure(await self.get_response(request))

    @staticmethod
    def _secure(response: HttpResponseBase) -> HttpResponseBase:
        if "no-store" not in response.get("Cache-Control", ""):
            response["Cache-Control"] = "no-store"
        if response.get("Content-Type", "").startswith("text/html"):
            if "Content-Security-Policy" not in response:
                response["Content-Security-Policy"] = settings.MEDAI_CSP
            if "Permissions-Policy" not in response:
                response["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), payment=()"
        return response


class CorsMiddleware(_Cors):
    """django-cors-headers' middleware, only where CORS is open. Closed (the default: no
    ``CORS_ALLOWED_ORIGINS``), it would still match every path and add ``Vary: Origin`` to every
    answer (~30 µs a request here) to say nothing: then it is not installed at all."""

    def __init__(self, get_response: Any) -> None:
        if not (
            settings.CORS_ALLOWED_ORIGINS
            or getattr(settings, "CORS_ALLOWED_ORIGIN_REGEXES", None)
            or getattr(settings, "CORS_ALLOW_ALL_ORIGINS", False)
        ):
            raise MiddlewareNotUsed("CORS is closed (CORS_ALLOWED_ORIGINS is empty)")
        super().__init__(get_response)
