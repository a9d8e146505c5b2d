"""The inference pipeline: authenticate → authorize → validate → route → call the backend → record.

Sync chat requests run here; the async task API (queue) builds on the same steps. ``begin_chat``
may query the database and runs in a worker thread, unless ``begin_chat_cached`` could answer on
the event loop from the per-process caches (most requests); the backend call is async so a
waiting request holds no thread; a non-streamed request's record goes to the background writer
(``record_later``, apps/inference/recorder.py), a stream's is written before ``[DONE]``
(``record_outcome``, in a worker thread).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from django.core.exceptions import SynchronousOnlyOperation
from django.db import close_old_connections, transaction
from django.utils import timezone

from apps.accounts.authentication import bearer_token
from apps.accounts.models import SCOPE_INFERENCE, SCOPE_READ
from apps.accounts.services import AuthError, NeedsDatabase, Principal, authenticate_bearer
from apps.audit.context import get_correlation_id
from apps.audit.services import record_events
from apps.inference import backends, conformance, forced_tools, recorder, router
from apps.inference import metrics as inference_metrics
from apps.inference.auditing import inference_event
from apps.inference.dispatch import NoBackend, call_with_failover
from apps.inference.errors import ApiError, validation_api_error
from apps.inference.models import InferenceTask, Priority
from apps.inference.validation.chat_request import ChatCompletionRequestSerializer, find_unforwardable
from apps.inference.validation.fast import fast_chat_request
from apps.inference.validation.fields import tool_choice_names

logger = logging.getLogger("medai.inference")
T = TypeVar("T")
# The client went away before its answer (a clinician pressing Stop): recorded CANCELLED.
CLIENT_DISCONNECTED = "client_disconnected"
# HTTP status recorded for a non-streamed request whose client left before the answer (nginx's
# "client closed request"; no response was sent).
CLIENT_CLOSED_REQUEST = 499


def db_unit(func: Callable[..., T]) -> Callable[..., T]:
    """A unit of DB work run in a worker thread (outside Django's request cycle): drop a stale or
    expired connection first, and release it after when connections are not persistent."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return wrapper


# Request fields passed through to the backend unchanged (when the client set them). The tool
# fields are forwarded by ``_tool_fields``; ``user``/``safety_identifier`` are kept on the record;
# what medai cannot forward was refused by validation (apps/inference/validation/).
PASSTHROUGH = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)


@dataclass
class Attempt:
    endpoint: str
    error: str


@dataclass
class ChatPlan:
    """Everything decided before the backend is called."""

    principal: Principal
    route: router.Route
    payload: dict[str, Any]
    stream: bool
    include_usage: bool
    priority: int
    requested_model: str
    correlation_id: str
    started: float = field(default_factory=time.perf_counter)
    created_at: Any = field(default_factory=timezone.now)
    attempts: list[Attempt] = field(default_factory=list)
    endpoint: router.EndpointInfo | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    backend_started: float | None = None
    # Where the request came from, for its audit event (set by the HTTP view; none for async tasks).
    client_ip: str | None = None
    user_agent: str = ""
    tools_offered: int = 0  # tools the model was offered
    tool_calls: int = 0  # tool calls it answered with
    end_user: str = ""  # the caller's end user (OpenAI's ``user`` / ``safety_identifier``)


# --- authentication shared by the async views ---------------------------------------------


def authenticate_header(header: str | None, scope: str, *, cached_only: bool = False) -> Principal:
    """Authenticate an ``Authorization`` header value and require ``scope``. Raises ApiError
    (and NeedsDatabase with ``cached_only``, see ``authenticate_bearer``)."""
    token = bearer_token(header or "")
    if token is None:
        raise ApiError(401, "missing_credentials", "Authentication required: send 'Authorization: Bearer <token>'.")
    try:
        _, principal = authenticate_bearer(token, cached_only=cached_only)
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None
    if not principal.has_scope(scope):
        raise ApiError(
            403, "insufficient_scope", f"This credential lacks the '{scope}' scope (role '{principal.role}')."
        )
    return principal


def parse_json_body(body: bytes) -> dict[str, Any]:
    if not body:
        raise ApiError(400, "invalid_json", "Request body is empty; expected a JSON object.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"Request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "Request body is JSON nested too deeply.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "Request body must be a JSON object.")
    return data


# --- the chat pipeline -----------------------------------------------------------------------


@db_unit
def begin_chat(auth_header: str | None, body: bytes, correlation_id: str = "") -> ChatPlan:
    """Authenticate, authorize, validate and route one chat request (sync: may query the DB)."""
    return _begin_chat(auth_header, body, correlation_id, cached_only=False)


def begin_chat_cached(auth_header: str | None, body: bytes, correlation_id: str = "") -> ChatPlan | None:
    """``begin_chat`` from this process's caches alone, so it may run on the event loop: None
    when a step needs a query (credential or routes not cached, a key's last-use write due);
    then run ``begin_chat`` in a thread. Raises the same ApiErrors as ``begin_chat``."""
    try:
        return _begin_chat(auth_header, body, correlation_id, cached_only=True)
    except (NeedsDatabase, router.SnapshotStale):
        return None
    except SynchronousOnlyOperation:  # a query slipped through (a lazy relation): the thread answers
        logger.warning("begin_chat_cached needed a query; answered from a thread", exc_info=True)
        return None


def validate_chat_body(data: dict[str, Any]) -> dict[str, Any]:
    """The validated chat request; ApiError 400 naming the first bad field, also for what the
    JSON parser accepts but cannot be forwarded (a lone surrogate, NaN)."""
    req = fast_chat_request(data)  # takes only what can be forwarded as is
    if req is None:
        unforwardable = find_unforwardable(data)
        if unforwardable is not None:
            param, why = unforwardable
            raise ApiError(400, "invalid_value", f"{param}: {why}." if param else f"The request {why}.", param)
        serializer = ChatCompletionRequestSerializer(data=data)
        if not serializer.is_valid():
            raise validation_api_error(serializer.errors)
        req = serializer.validated_data
    return req


def _begin_chat(auth_header: str | None, body: bytes, correlation_id: str, *, cached_only: bool) -> ChatPlan:
    principal = authenticate_header(auth_header, SCOPE_INFERENCE, cached_only=cached_only)
    data = parse_json_body(body)
    req = validate_chat_body(data)
    try:
        route = router.resolve(req.get("model") or None, req.get("agent_type") or None, cached_only=cached_only)
    except router.RoutingError as exc:
        raise ApiError(exc.status_code, exc.code, exc.message, exc.param) from None

    messages = [_clean_message(m) for m in req["messages"]]
    if route.system_prompt and not any(m["role"] in ("system", "developer") for m in messages):
        messages.insert(0, {"role": "system", "content": route.system_prompt})
    payload: dict[str, Any] = {"messages": messages}
    for name in PASSTHROUGH:
        if req.get(name) is not None:
            payload[name] = req[name]
    payload.update(_tool_fields(req))
    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    if req["stream"]:
        payload["stream"] = True
        # Always ask for usage so the request is recorded with real token counts.
        payload["stream_options"] = {"include_usage": True}
    return ChatPlan(
        principal=principal,
        route=route,
        payload=payload,
        stream=req["stream"],
        include_usage=include_usage,
        priority=req.get("priority", Priority.NORMAL),
        requested_model=req.get("model") or req.get("agent_type") or "",
        correlation_id=correlation_id or get_correlation_id(),
        tools_offered=len(req.get("tools") or ()),  # as the client offered them (before any narrowing)
        end_user=req.get("safety_identifier") or req.get("user") or "",
    )


def _clean_message(message: dict[str, Any]) -> dict[str, Any]:
    cleaned = {k: v for k, v in message.items() if v is not None}
    if cleaned["role"] == "assistant":
        if not cleaned.get("tool_calls"):
            cleaned.pop("tool_calls", None)
            cleaned.setdefault("content", "")  # servers want content or tool_calls in a turn
    return cleaned


def _tool_fields(req: dict[str, Any]) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as every backend understands them.

    A named function or OpenAI's ``allowed_tools`` is sent as the tools it allows with
    ``tool_choice`` ``"required"`` (or the allowed mode): llama.cpp knows only the three strings
    (it would silently take a named function for ``auto``), and the narrowed list means the same
    to any server. Without tools, ``none``/``auto`` ask for nothing, so nothing is sent.
    """
    tools = req.get("tools") or []
    if not tools:
        return {}
    choice = req.get("tool_choice")
    if isinstance(choice, dict):
        names = set(tool_choice_names(choice))
        tools = [t for t in tools if t["function"]["name"] in names]
        choice = "required" if choice["type"] == "function" else choice["allowed_tools"]["mode"]
    fields: dict[str, Any] = {"tools": tools}
    if choice is not None:
        fields["tool_choice"] = choice
    if req.get("parallel_tool_calls") is not None:
        fields["parallel_tool_calls"] = req["parallel_tool_calls"]
    return fields


def _all_failed(plan: ChatPlan) -> ApiError:
    tried = "; ".join(f"{a.endpoint}: {a.error}" for a in plan.attempts)
    return ApiError(
        503,
        "backend_unavailable",
        f"No model server could answer ({tried}). Try again shortly.",
        headers={"Retry-After": "5"},
    )


def _rejected(exc: backends.BackendRejected) -> ApiError:
    """The caller's fault, as the backend worded it (classified in ``backends.classify``)."""
    return ApiError(exc.status_code, exc.code, f"The model server rejected the request: {exc.message}", exc.param)


async def _call_backend(plan: ChatPlan, call: Callable[[router.EndpointInfo], Any]) -> tuple[Any, Any]:
    """Admission, retries, circuit breaker and failover over the route's candidates (apps/inference/dispatch.py)."""

    def note(endpoint: router.EndpointInfo, error: str) -> None:
        plan.attempts.append(Attempt(endpoint.name, error))
        if error:
            logger.warning("backend %s failed: %s", endpoint.name, error)

    candidates = plan.route.candidates
    try:
        endpoint, result, lease = await call_with_failover(
            candidates,
            call,
            priority=plan.priority,
            on_attempt=note,
            keep_first=bool(candidates) and candidates[0].name == plan.route.requested,
        )
    except backends.BackendRejected as exc:
        plan.attempts.append(Attempt(exc.endpoint.name, exc.message))
        plan.endpoint = exc.endpoint
        raise _rejected(exc) from None
    except NoBackend as exc:
        if exc.all_failed:
            raise _all_failed(plan) from None
        raise ApiError(exc.status_code, exc.code, exc.message, headers={"Retry-After": str(exc.retry_after)}) from None
    plan.endpoint = endpoint
    return result, lease


def _backend_payload(plan: ChatPlan, endpoint: router.EndpointInfo) -> dict[str, Any]:
    """The request as this endpoint takes it (a forced tool call on llama.cpp: apps/inference/forced_tools.py)."""
    payload = plan.payload
    if forced_tools.applies(payload, endpoint.kind):
        payload = forced_tools.request(payload)
    return {**payload, "model": endpoint.backend_model}


async def complete_chat(plan: ChatPlan) -> dict[str, Any]:
    """Non-streaming completion from the best candidate that can serve (see ``_call_backend``)."""
    plan.backend_started = time.perf_counter()
    data, lease = await _call_backend(
        plan, lambda endpoint: backends.post_json(endpoint, "/chat/completions", _backend_payload(plan, endpoint))
    )
    lease.release()
    assert plan.endpoint is not None
    if forced_tools.applies(plan.payload, plan.endpoint.kind):
        forced_tools.completion(data)
    plan.tool_calls = conformance.completion(data, plan.endpoint.name)
    usage = data.get("usage") or {}
    plan.prompt_tokens = _int(usage.get("prompt_tokens"))
    plan.completion_tokens = _int(usage.get("completion_tokens"))
    return data


async def open_chat_stream(plan: ChatPlan) -> backends.SSEStream:
    """Open the backend stream (failing over until one opens): errors here still get a status code.
    The model's concurrency slot is held until the stream is closed."""
    plan.backend_started = time.perf_counter()
    stream, lease = await _call_backend(
        plan, lambda endpoint: backends.open_stream(endpoint, "/chat/completions", _backend_payload(plan, endpoint))
    )
    stream.on_close.append(lease.release)
    return stream


def _sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def relay_stream(plan: ChatPlan, stream: backends.SSEStream) -> AsyncIterator[bytes]:
    """Relay the backend's SSE events with medai's model name; end with ``data: [DONE]``.

    The request is recorded before ``[DONE]`` is sent, so a client that saw the end can find
    its record. After the first token no retry is possible: a broken stream ends with an error
    event. A client that disconnects (a clinician pressing Stop) still gets its request recorded,
    as CANCELLED ``client_disconnected``: the client's own outcome, never the model's failure.
    """
    from asgiref.sync import sync_to_async

    assert plan.endpoint is not None
    normalise = conformance.ChunkNormaliser(plan.endpoint.name)
    convert = (
        forced_tools.StreamConverter()
        if forced_tools.applies(plan.payload, plan.endpoint.kind)
        else lambda event: [event]
    )
    chunks = 0
    error: tuple[str, str] | None = None
    recorded = False

    async def record(status: str, code: str = "", message: str = "") -> None:
        nonlocal recorded
        recorded = True
        if not plan.completion_tokens:
            plan.completion_tokens = max(chunks - 1, 0)  # no usage from the backend: count content chunks
        await sync_to_async(record_outcome, thread_sensitive=False)(plan, status, 200, code, message)

    try:
        try:
            async for event in stream.events():
                if event is None:
                    break
                usage = event.get("usage")
                if usage:
                    plan.prompt_tokens = _int(usage.get("prompt_tokens"))
                    plan.completion_tokens = _int(usage.get("completion_tokens"))
                if "error" in event:
                    error = ("backend_error", str(event["error"])[:500])
                    break
                for chunk in convert(event):
                    plan.tool_calls += normalise(chunk)
                    if not chunk.get("choices") and usage and not plan.include_usage:
                        continue  # the usage-only chunk medai asked for on its own behalf
                    if not plan.include_usage:
                        chunk.pop("usage", None)
                    chunks += 1
                    yield _sse(chunk)
        except backends.BackendFailure as exc:
            error = ("backend_error", exc.reason)
        if error is not None:
            await record(InferenceTask.Status.FAILED, *error)
            yield _sse(
                {
                    "error": {
                        "message": f"The model server failed mid-stream: {error[1]}",
                        "type": "api_error",
                        "param": None,
                        "code": error[0],
                    }
                }
            )
        else:
            await record(InferenceTask.Status.COMPLETED)
            yield b"data: [DONE]\n\n"
    finally:
        await stream.aclose()
        if not recorded:  # the client went away mid-stream
            await asyncio.shield(
                record(
                    InferenceTask.Status.CANCELLED,
                    CLIENT_DISCONNECTED,
                    "The client closed the connection before the stream ended.",
                )
            )


def _record_fields(
    plan: ChatPlan, status: str, http_status: int, error_code: str = "", error_message: str = ""
) -> dict[str, Any]:
    """The request's record: who, where, which model, tokens, timings and outcome."""
    now = timezone.now()
    total_ms = int((time.perf_counter() - plan.started) * 1000)
    inference_ms = int((time.perf_counter() - plan.backend_started) * 1000) if plan.backend_started else None
    p = plan.principal
    return dict(
        mode=InferenceTask.Mode.SYNC,
        status=status,
        priority=plan.priority,
        user_id=p.user_id,
        location_id=p.location_pk,
        api_key_id=p.api_key_id,
        agent_type=plan.route.agent_type,
        requested_model=plan.requested_model,
        endpoint_id=plan.endpoint.id if plan.endpoint else None,
        model_name=plan.endpoint.name if plan.endpoint else "",
        stream=plan.stream,
        error_code=error_code,
        error_message=error_message[:2000],
        http_status=http_status,
        prompt_tokens=plan.prompt_tokens,
        completion_tokens=plan.completion_tokens,
        attempts=len(plan.attempts),
        tools_offered=plan.tools_offered,
        tool_calls=plan.tool_calls,
        end_user=plan.end_user,
        correlation_id=plan.correlation_id,
        created_at=plan.created_at,
        started_at=plan.created_at,
        finished_at=now,
        queue_wait_ms=0,
        inference_ms=inference_ms,
        latency_ms=total_ms,
    )


def _audit_identity(plan: ChatPlan) -> dict[str, Any]:
    """The arguments of ``auditing.inference_event`` that the record's fields do not hold."""
    p = plan.principal
    return {
        "username": p.username,
        "location_code": p.location_code,
        "ip": plan.client_ip,
        "user_agent": plan.user_agent,
    }


@db_unit
def record_outcome(
    plan: ChatPlan, status: str, http_status: int, error_code: str = "", error_message: str = ""
) -> None:
    """Write the request's record and its audit event now, in one transaction (sync: queries)."""
    fields = _record_fields(plan, status, http_status, error_code, error_message)
    with transaction.atomic():
        task = InferenceTask.objects.create(**fields)
        record_events([inference_event(task, **_audit_identity(plan))])
    inference_metrics.observe(fields)


def record_later(plan: ChatPlan, status: str, http_status: int, error_code: str = "", error_message: str = "") -> None:
    """Queue the request's record and its audit event for the background writer: in the database
    within about ``MEDAI_RECORD_LINGER_MS`` (apps/inference/recorder.py). Never blocks."""
    fields = _record_fields(plan, status, http_status, error_code, error_message)
    recorder.writer.submit(fields, _audit_identity(plan))
    inference_metrics.observe(fields)


def ensure_recording_capacity() -> None:
    """503 before any backend call when this process holds MEDAI_RECORD_BACKLOG unwritten records
    (the database is down or cannot keep up): medai serves no request it cannot record."""
    if not recorder.writer.has_room():
        raise ApiError(
            503,
            "recording_unavailable",
            "Requests cannot be recorded right now (the database is "
            "unavailable or behind); nothing was sent to a model. Try again shortly.",
            headers={"Retry-After": "5"},
        )


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


# --- models list ---------------------------------------------------------------------------


def list_models(principal: Principal) -> list[dict[str, Any]]:
    """Enabled models and agent types, in the OpenAI ``/v1/models`` shape."""
    if not principal.has_scope(SCOPE_READ) and not principal.has_scope(SCOPE_INFERENCE):
        raise ApiError(403, "insufficient_scope", "This credential may not list models.")
    snap = router.snapshot()
    created = int((timezone.now() - timedelta(days=0)).timestamp())
    data = [
        {
            "id": m.name,
            "object": "model",
            "created": created,
            "owned_by": "medai",
            "medai": {"kind": "model", "backend": m.kind, "context_length": m.context_length, "rank": m.rank},
        }
        for m in sorted(snap.models.values(), key=lambda m: (m.rank, m.name))
        if m.enabled
    ]
    for agent in sorted(snap.agents.values(), key=lambda a: a.agent_type):
        if agent.enabled and any(e.enabled for e in agent.endpoints):
            data.append(
                {
                    "id": agent.agent_type,
                    "object": "model",
                    "created": created,
                    "owned_by": "medai",
                    "medai": {"kind": "agent_type", "models": [e.name for e in agent.endpoints if e.enabled]},
                }
            )
    return data
