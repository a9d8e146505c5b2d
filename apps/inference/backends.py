"""HTTP clients for OpenAI-compatible model servers, one pooled client per event loop.

Non-streamed calls (``post_json``: chat completions) go through aiohttp: on the hot
path it costs a quarter of httpx's CPU per request alone, and a twentieth with 32 in flight, where
httpcore's pool bookkeeping dominated (``bench/README.md``). Streams and probes stay on httpx.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import json
import urllib.request
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
from django.conf import settings

from apps.inference.router import EndpointInfo


class BackendFailure(Exception):
    """The backend could not answer: unreachable, timed out, or a 5xx. Another may."""

    def __init__(self, endpoint: EndpointInfo, reason: str, status_code: int | None = None,
                 connect_failed: bool = False) -> None:
        super().__init__(f"{endpoint.name}: {reason}")
        self.endpoint = endpoint
        self.reason = reason
        self.status_code = status_code
        self.connect_failed = connect_failed  # the request never reached the server: safe to retry

    @property
    def unreachable(self) -> bool:
        return self.status_code is None


class BackendRejected(Exception):
    """The backend refused this request (4xx): another backend would refuse it too."""

    def __init__(self, endpoint: EndpointInfo, status_code: int, message: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status_code = status_code
        self.message = message


# --- httpx, for streams -------------------------------------------------------------------------

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def _timeout() -> httpx.Timeout:
    return httpx.Timeout(settings.MEDAI_BACKEND_TIMEOUT, connect=settings.MEDAI_BACKEND_CONNECT_TIMEOUT)


def async_client() -> httpx.AsyncClient:
    """The pooled client of the running event loop (an AsyncClient cannot cross loops)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(
            timeout=_timeout(),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=100, keepalive_expiry=30),
        )
        _clients[loop] = client
    return client


# --- aiohttp, for non-streamed calls ----------------------------------------------------------

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
    if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _headers(endpoint: EndpointInfo) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    return headers


def _error_message(response_body: bytes) -> str:
    try:
        data = json.loads(response_body)
    except ValueError:
        return response_body[:300].decode("utf-8", "replace")
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return str(err.get("message") or err)
    if isinstance(err, str):
        return err
    return str(data)[:300]


def _check(endpoint: EndpointInfo, status_code: int, body: bytes) -> None:
    if status_code < 400:
        return
    if status_code >= 500 or status_code in (408, 429):
        raise BackendFailure(endpoint, f"HTTP {status_code}: {_error_message(body)}", status_code)
    raise BackendRejected(endpoint, status_code, _error_message(body))


def _encode(payload: dict[str, Any]) -> bytes:
    # What httpx's ``json=`` sends.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


async def post_json(endpoint: EndpointInfo, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST to ``{base_url}{path}`` and return the JSON body; BackendFailure/BackendRejected on error."""
    session = await _session()
    url = endpoint.base_url + path
    try:
        async with session.post(url, data=_encode(payload), headers=_headers(endpoint), proxy=_proxy_for(url),
                                timeout=_client_timeout(settings.MEDAI_BACKEND_TIMEOUT,
                                                        settings.MEDAI_BACKEND_CONNECT_TIMEOUT)) as response:
            status, body = response.status, await response.read()
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        raise BackendFailure(endpoint, f"unreachable ({type(exc).__name__}: {exc})", connect_failed=True) from None
    except TimeoutError as exc:
        raise BackendFailure(endpoint, f"timed out ({type(exc).__name__})") from None
    except aiohttp.ClientError as exc:
        raise BackendFailure(endpoint, f"unreachable ({type(exc).__name__}: {exc})") from None
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

    def __init__(self, endpoint: EndpointInfo, response: httpx.Response) -> None:
        self.endpoint = endpoint
        self.response = response
        self.on_close: list[Callable[[], None]] = []  # e.g. release the model's concurrency slot

    async def events(self) -> AsyncIterator[dict[str, Any] | None]:
        """Yield each ``data:`` JSON payload; ``None`` for ``[DONE]``."""
        try:
            async for line in self.response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    yield None
                    return
                try:
                    event = json.loads(data)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    yield event
        except httpx.TimeoutException:
            raise BackendFailure(self.endpoint, "timed out while streaming") from None
        except httpx.HTTPError as exc:
            raise BackendFailure(self.endpoint, f"stream broke ({type(exc).__name__})") from None

    async def aclose(self) -> None:
        try:
            await self.response.aclose()
        finally:
            while self.on_close:
                self.on_close.pop()()


async def open_stream(endpoint: EndpointInfo, path: str, payload: dict[str, Any]) -> SSEStream:
    client = async_client()
    request = client.build_request("POST", endpoint.base_url + path, json=payload, headers=_headers(endpoint))
    try:
        response = await client.send(request, stream=True)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise BackendFailure(endpoint, f"unreachable ({type(exc).__name__}: {exc})", connect_failed=True) from None
    except httpx.TimeoutException as exc:
        raise BackendFailure(endpoint, f"timed out ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise BackendFailure(endpoint, f"unreachable ({type(exc).__name__}: {exc})") from None
    if response.status_code >= 400:
        body = await response.aread()
        await response.aclose()
        _check(endpoint, response.status_code, body)
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
    return served or not ids, f"HTTP {response.status_code}; models: {', '.join(map(str, ids)) or 'none'} ({note} '{endpoint.backend_model}')"
