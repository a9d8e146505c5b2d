"""HTTP client for OpenAI-compatible model servers (httpx, one pooled client per event loop)."""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

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


async def post_json(endpoint: EndpointInfo, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    """POST to ``{base_url}{path}`` and return the JSON body; BackendFailure/BackendRejected on error."""
    client = async_client()
    try:
        response = await client.post(endpoint.base_url + path, json=payload, headers=_headers(endpoint))
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise BackendFailure(endpoint, f"unreachable ({type(exc).__name__}: {exc})", connect_failed=True) from None
    except httpx.TimeoutException as exc:
        raise BackendFailure(endpoint, f"timed out ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise BackendFailure(endpoint, f"unreachable ({type(exc).__name__}: {exc})") from None
    _check(endpoint, response.status_code, response.content)
    try:
        data = response.json()
    except ValueError:
        raise BackendFailure(endpoint, "answered with a body that is not JSON", response.status_code) from None
    if not isinstance(data, dict):
        raise BackendFailure(endpoint, "answered with JSON that is not an object", response.status_code)
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
