"""HTTP clients for OpenAI-compatible model servers, one pooled client per event loop.

Chat completions, non-streamed (``post_json``) and streamed (``open_stream``), go through aiohttp:
on the hot path it costs a quarter of httpx's CPU per request alone, and a twentieth with 32 in
flight, where httpcore's pool bookkeeping dominated (``bench/README.md``); one pool serves both.
The admin's probe stays on httpx (a one-off client, off the hot path).

Every error answer of a backend is classified in one place (``classify``): either the request
caused it (``BackendRejected``: a 400 for that caller, never counted against the backend) or the
backend did (``BackendFailure``: counted on its circuit, failed over, maybe retried).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import re
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
from django.conf import settings

from apps.inference.router import EndpointInfo


class BackendFailure(Exception):
    """The backend itself failed: unreachable, timed out, a 5xx not about the input, or misconfigured
    (a served model id it does not know, a wrong API key). Counted on its circuit; another may answer."""

    def __init__(
        self, endpoint: EndpointInfo, reason: str, status_code: int | None = None, connect_failed: bool = False
    ) -> None:
        super().__init__(f"{endpoint.name}: {reason}")
        self.endpoint = endpoint
        self.reason = reason
        self.status_code = status_code
        self.connect_failed = connect_failed  # the request never reached the server: safe to retry

    @property
    def unreachable(self) -> bool:
        return self.status_code is None


class BackendRejected(Exception):
    """The request caused the backend's error (unsupported input, too long, malformed): the caller's
    fault, answered with ``status_code`` (400, 413) and ``code``; never counted against the backend,
    never retried or sent to another model."""

    def __init__(
        self,
        endpoint: EndpointInfo,
        status_code: int,
        message: str,
        code: str = "invalid_request",
        param: str | None = None,
        backend_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status_code = status_code
        self.message = message
        self.code = code
        self.param = param
        self.backend_status = backend_status if backend_status is not None else status_code


# --- what an error answer means -------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """Whose fault a backend's error answer is, and what the caller is told when it is theirs."""

    client: bool
    code: str = "backend_error"
    status: int = 400  # for the caller, when ``client``
    param: str | None = None


BACKEND = Fault(client=False)
CONTEXT = Fault(client=True, code="context_length_exceeded", param="messages")
UNSUPPORTED = Fault(client=True, code="unsupported_input")
INVALID = Fault(client=True, code="invalid_request")
TOO_LARGE = Fault(client=True, code="request_too_large", status=413)

# Statuses that are the backend's fault whatever the body says: authentication/permission (medai's
# backend API key is wrong: no client credential ever reaches a backend), not found / method not
# allowed (a served model id or base URL that is misconfigured), its own timeouts and overload,
# TGI's failed generation, and the gateway/unavailable family (llama.cpp's 503 while loading).
BACKEND_STATUSES = frozenset({401, 403, 404, 405, 407, 408, 421, 424, 429, 502, 503, 504})

# Read against "<error type> <message>", lower-cased, in order; the first match decides. Messages are
# those of llama.cpp's server (tools/server: format_error_response's types, and the std::exception
# texts its handlers turn into 500s), vLLM (BadRequestError 400 from ValueError, NotFoundError 404),
# TGI (422 validation, 424 generation, 429 overloaded) and Ollama.
RULES: tuple[tuple[re.Pattern[str], Fault], ...] = (
    # The backend does not serve the model medai asked for (misconfigured served model id): llama.cpp
    # router "model 'x' not found" (a 400), vLLM "The model `x` does not exist." (404), Ollama
    # 'model "x" not found, try pulling it first'. Anchored at the start of the message, so text a
    # client controls (echoed tool definitions, say) cannot make its own request look like this.
    (
        re.compile(
            r"^\s*(error: )?(the )?model\b[^.;]{0,120}\b(not found|does not exist|is not loaded|is not running)"
        ),
        BACKEND,
    ),
    # Too long for the model's context, or for one of its batches.
    (
        re.compile(
            r"exceed_context_size_error|context (size|length|window)|maximum context|context shift|\bn_ctx\b"
            r"|too (long|large)|exceeds? (the )?(available |max(imum)? )?(context|length|tokens)"
            r"|input length|must be <= \d+"
        ),
        CONTEXT,
    ),
    # Input or a feature this model or server does not support (llama.cpp's 500 "image input is not
    # supported", 501 not_supported_error, "tools param requires --jinja flag", vLLM "... is not a
    # multimodal model", Ollama "this model is missing data required for image input").
    (
        re.compile(
            r"not_supported_error|not supported|unsupported|does not support|requires --|"
            r"not a multimodal|missing data required for (image|audio)|multimodal data provided"
        ),
        UNSUPPORTED,
    ),
    # Malformed: parse errors, invalid values, schema/grammar/tool errors, the chat template refusing
    # the conversation (its raise_exception: "roles must alternate").
    (
        re.compile(
            r"invalid_request_error|badrequesterror|\bvalidation\b|\bparse\b|parsing|\binvalid\b|malformed|"
            r"must (be|contain|include|have|not)|is required|expected |cannot (use|have|set|specify|continue)|"
            r"json[ _]schema|grammar|jinja|template|roles must|tokeniz|base64|failed to (load|download) "
            r"(image|audio)|does not match the expected"
        ),
        INVALID,
    ),
)


def classify(status_code: int, body: bytes) -> Fault:
    """Whose fault an error answer (``status_code`` >= 400) is: the request's, or the backend's.

    Statuses in ``BACKEND_STATUSES`` are always the backend's and a 413 always the request's;
    otherwise the first of ``RULES`` that matches the error's type and message decides; otherwise
    any other 4xx is the request's, a 501 an unsupported feature, and any other 5xx the backend's.
    """
    if status_code in BACKEND_STATUSES:
        return BACKEND
    if status_code == 413:
        return TOO_LARGE
    error_type, message = _error_parts(body)
    text = f"{error_type} {message}".strip().lower()
    for pattern, fault in RULES:
        if pattern.search(message.lower() if fault is BACKEND else text):
            return fault
    if status_code == 501:
        return UNSUPPORTED
    if status_code < 500:
        return INVALID
    return BACKEND


# --- aiohttp, for chat completions ------------------------------------------------------------

_sessions: dict[asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, AsyncIterator[None]]] = {}


async def _closed_with_loop(session: aiohttp.ClientSession) -> AsyncIterator[None]:
    """Started once per session and then left suspended: the loop closes it on shutdown
    (``asyncio.run``, uvicorn and asgiref's ``async_to_sync`` all call ``shutdown_asyncgens``),
    which closes the session while its loop still runs, so no connection is left dangling."""
    try:
        yield
    finally:
        await session.close()


async def _session() -> aiohttp.ClientSession:
    """The pooled aiohttp session of the running event loop (a session cannot cross loops)."""
    loop = asyncio.get_running_loop()
    entry = _sessions.get(loop)
    if entry is not None and not entry[0].closed:
        return entry[0]
    for old in [lp for lp in _sessions if lp.is_closed()]:  # sessions die with their loops
        del _sessions[old]
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200, limit_per_host=0, keepalive_timeout=30),
        trust_env=False,  # proxies from the environment: _proxy_for, resolved once per URL
        raise_for_status=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    guard = _closed_with_loop(session)
    await guard.__anext__()
    _sessions[loop] = (session, guard)
    return session


@atexit.register
def _close_idle_sessions() -> None:
    """A loop that is kept but no longer runs (the queue worker's) closes its session at exit."""
    for loop, (session, _) in list(_sessions.items()):
        if not session.closed and not loop.is_closed() and not loop.is_running():
            try:
                loop.run_until_complete(session.close())
            except Exception:  # noqa: BLE001 - the process is exiting anyway
                pass


@functools.cache
def _client_timeout(total: float, connect: float) -> aiohttp.ClientTimeout:
    # As httpx's Timeout(total, connect=connect): each read may wait ``total``, a connect ``connect``.
    return aiohttp.ClientTimeout(total=None, connect=total, sock_connect=connect, sock_read=total)


@functools.cache
def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for this URL (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), as
    httpx's default ``trust_env`` does; read once per URL, not on every request."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    # proxy_bypass_environment is urllib's NO_PROXY matcher, undocumented and so not in typeshed
    if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):  # type: ignore[attr-defined]
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _headers(endpoint: EndpointInfo) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    return headers


def _error_parts(response_body: bytes) -> tuple[str, str]:
    """(error type, message) of an error body: OpenAI's ``{"error": {"type", "message"}}``, TGI's
    ``{"error": "...", "error_type": "..."}``, FastAPI's ``{"detail": ...}`` or plain text."""
    try:
        data = json.loads(response_body)
    except ValueError:
        return "", response_body[:300].decode("utf-8", "replace")
    if not isinstance(data, dict):
        return "", str(data)[:300]
    err = data.get("error")
    if isinstance(err, dict):
        return str(err.get("type") or ""), str(err.get("message") or err)
    if isinstance(err, str):
        return str(data.get("error_type") or data.get("type") or ""), err
    if "detail" in data:
        return "", str(data["detail"])[:300]
    if isinstance(data.get("message"), str):
        return str(data.get("type") or ""), data["message"]
    return "", str(data)[:300]


def _error_message(response_body: bytes) -> str:
    return _error_parts(response_body)[1]


def _check(endpoint: EndpointInfo, status_code: int, body: bytes) -> None:
    """Raise what an error answer means (see ``classify``); nothing for a success."""
    if status_code < 400:
        return
    fault = classify(status_code, body)
    message = _error_message(body)
    if fault.client:
        raise BackendRejected(endpoint, fault.status, message, fault.code, fault.param, backend_status=status_code)
    raise BackendFailure(endpoint, f"HTTP {status_code}: {message}", status_code)


def _encode(payload: dict[str, Any]) -> bytes:
    # What httpx's ``json=`` sends.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


async def _post(endpoint: EndpointInfo, path: str, payload: dict[str, Any]) -> aiohttp.ClientResponse:
    """Send the POST and read the status line and headers (the body is the caller's to read)."""
    session = await _session()
    url = endpoint.base_url + path
    return await session.post(
        url,
        data=_encode(payload),
        headers=_headers(endpoint),
        proxy=_proxy_for(url),
        timeout=_client_timeout(settings.MEDAI_BACKEND_TIMEOUT, settings.MEDAI_BACKEND_CONNECT_TIMEOUT),
    )


def _request_failure(endpoint: EndpointInfo, exc: BaseException) -> BackendFailure:
    """What an exception of aiohttp before the answer was read means."""
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return BackendFailure(endpoint, f"unreachable ({type(exc).__name__}: {exc})", connect_failed=True)
    if isinstance(exc, TimeoutError):
        return BackendFailure(endpoint, f"timed out ({type(exc).__name__})")
    return BackendFailure(endpoint, f"unreachable ({type(exc).__name__}: {exc})")


async def post_json(endpoint: EndpointInfo, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST to ``{base_url}{path}`` and return the JSON body; BackendFailure/BackendRejected on error."""
    try:
        async with await _post(endpoint, path, payload) as response:
            status, body = response.status, await response.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise _request_failure(endpoint, exc) from None
    _check(endpoint, status, body)
    try:
        data = json.loads(body)
    except ValueError:
        raise BackendFailure(endpoint, "answered with a body that is not JSON", status) from None
    if not isinstance(data, dict):
        raise BackendFailure(endpoint, "answered with JSON that is not an object", status)
    return data


class SSEStream:
    """An opened streaming response: status already checked, events not yet read."""

    def __init__(self, endpoint: EndpointInfo, response: aiohttp.ClientResponse) -> None:
        self.endpoint = endpoint
        self.response = response
        self.on_close: list[Callable[[], None]] = []  # e.g. release the model's concurrency slot

    async def events(self) -> AsyncIterator[dict[str, Any] | None]:
        """Yield each ``data:`` JSON payload; ``None`` for ``[DONE]``."""
        lines = _lines(self.response.content)
        try:
            async for line in lines:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    await _read_to_end(lines)
                    yield None
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event
        except TimeoutError:
            raise BackendFailure(self.endpoint, "timed out while streaming") from None
        except aiohttp.ClientError as exc:
            raise BackendFailure(self.endpoint, f"stream broke ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        try:
            # A body read to its end has already handed its connection back to the pool; one
            # that was not is closed (a backend mid-answer cannot take the next request).
            self.response.close()
        finally:
            while self.on_close:
                self.on_close.pop()()


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The body's lines (split at LF, CRLF or CR, as SSE and httpx's ``aiter_lines``), without a
    bound on a line's length (aiohttp's own ``readline`` refuses lines over its buffer)."""
    rest = b""
    async for chunk in content.iter_any():
        lines = (rest + chunk).splitlines(keepends=True)
        rest = lines.pop() if lines and not lines[-1].endswith((b"\n", b"\r")) else b""
        for line in lines:
            yield line.rstrip(b"\r\n")
    if rest:
        yield rest


async def _read_to_end(lines: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (the end of the chunked body, as a rule in the same packet), so
    that the connection goes back to the pool: closed unread, it is dropped, and every stream
    paid a new TCP connection to the model server. A backend that sends more or holds the body
    open gets half a second, then the connection is dropped."""
    try:
        async with asyncio.timeout(0.5):
            async for _ in lines:
                pass
    except (TimeoutError, aiohttp.ClientError):
        pass


async def open_stream(endpoint: EndpointInfo, path: str, payload: dict[str, Any]) -> SSEStream:
    try:
        response = await _post(endpoint, path, payload)
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise _request_failure(endpoint, exc) from None
    if response.status >= 400:
        try:
            body = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _request_failure(endpoint, exc) from None
        finally:
            response.release()
        _check(endpoint, response.status, body)
    return SSEStream(endpoint, response)


async def probe(endpoint: EndpointInfo) -> tuple[bool, str]:
    """Ask the backend what it serves: ``(ok, what it answered)`` for the admin's test action."""
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=3.0)) as client:
            response = await client.get(endpoint.base_url + "/models", headers=_headers(endpoint))
    except httpx.HTTPError as exc:
        return False, f"unreachable: {type(exc).__name__}: {exc}"
    if response.status_code >= 400:
        return False, f"HTTP {response.status_code}: {_error_message(response.content)}"
    try:
        ids = [m.get("id") for m in response.json().get("data", [])]
    except (ValueError, AttributeError):
        return False, "answered /models with something that is not an OpenAI model list"
    served = endpoint.backend_model in ids
    note = "serves" if served else "does NOT list"
    return (
        served or not ids,
        f"HTTP {response.status_code}; models: {', '.join(map(str, ids)) or 'none'} ({note} '{endpoint.backend_model}')",
    )
