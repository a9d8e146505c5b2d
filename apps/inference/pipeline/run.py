"""The backend call of a planned request: admit → dispatch (apps/inference/dispatch.py: GPU policy
and concurrency slots from apps.gpu, retries, the circuit breaker, failover), then the answer
made OpenAI-conformant. A stream is relayed here too, and recorded before its ``[DONE]``."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from apps.inference import answer_features, backends, conformance, conversations, forced_tools, response_cache, router
from apps.inference.dispatch import NoBackend, call_with_failover
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask
from apps.inference.pipeline import steps
from apps.inference.pipeline.plan import COMPLETIONS, RESPONSE, Attempt, ChatPlan
from apps.inference.pipeline.record import CLIENT_DISCONNECTED, record_committed, record_later

logger = logging.getLogger("medai.inference")

# How long a finished stream waits for its record's commit before it ends with an error event
# instead of ``[DONE]`` (the database is down or far behind; the writer keeps the row and retries).
RECORD_WAIT_SECONDS = 10.0


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


def _admit_step() -> None:
    steps.enter(steps.ADMIT)


async def _call_backend(plan: ChatPlan, call: Callable[[router.EndpointInfo], Any]) -> tuple[Any, Any]:
    """The admit and dispatch steps over the route's candidates (``dispatch.call_with_failover``)."""

    def note(endpoint: router.EndpointInfo, error: str) -> None:
        plan.attempts.append(Attempt(endpoint.name, error))
        if error:
            # the kind only ("HTTP 500"): a backend's error text can echo the prompt (tests/security/test_no_phi_in_logs.py)
            logger.warning("backend %s failed: %s", endpoint.name, error.split(":", 1)[0])

    def dispatch(endpoint: router.EndpointInfo) -> Any:
        steps.enter(steps.DISPATCH)
        return call(endpoint)

    candidates = plan.route.candidates
    try:
        endpoint, result, lease = await call_with_failover(
            candidates,
            dispatch,
            priority=plan.priority,
            location=getattr(plan.principal, "location_pk", None),
            on_attempt=note,
            on_admit=_admit_step,
            # a model named by the client, or the A/B arm assigned: tried first, whatever the latencies
            keep_first=bool(candidates) and (candidates[0].name == plan.route.requested or bool(plan.route.arm)),
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


async def _from_cache(plan: ChatPlan) -> tuple[str, dict[str, Any] | None]:
    """The response cache's key for this request ("" when it is not cacheable) and, on a hit, the
    answer (apps/inference/response_cache.py): sync, not streamed, deterministic, cache on."""
    if not response_cache.enabled() or plan.task_id is not None or plan.stream or plan.kind == RESPONSE:
        return "", None  # (a Response is not cached: its answer names the endpoint that made it)
    if not response_cache.deterministic(plan.payload):
        return "", None
    key = response_cache.key_for(
        plan.principal.location_pk, plan.kind, plan.requested_model, plan.route.agent_type, plan.payload
    )
    if plan.cache_bypass:
        return key, None
    entry = await response_cache.get(key)
    if entry is None:
        return key, None
    plan.cache_hit = entry
    plan.backend_started = time.perf_counter()
    return key, response_cache.fresh_copy(entry["answer"], plan.kind)


async def _keep(plan: ChatPlan, key: str, data: dict[str, Any]) -> None:
    if key and plan.cache_bypass != "no-store" and plan.endpoint is not None:
        await response_cache.put(key, data, plan.endpoint.name, plan.endpoint.id)


async def complete_chat(plan: ChatPlan) -> dict[str, Any]:
    """Non-streaming completion from the best candidate that can serve (see ``_call_backend``),
    or from the response cache."""
    key, hit = await _from_cache(plan)
    if hit is not None:
        if plan.storage is not None:
            plan.answer = hit  # a stored exchange keeps the answer it was given
        return hit
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
    plan.answer_features = answer_features.of_completion(data)
    if plan.storage is not None:
        plan.answer = data
    await _keep(plan, key, data)
    return data


async def complete_text(plan: ChatPlan) -> dict[str, Any]:
    """A non-streamed (legacy) completion. Several prompts are sent as one backend request
    each, concurrently (each admitted and failed over on its own), and answered as one
    completion whose choice ``index`` is the prompt's place: every server counts each one's
    usage right (llama.cpp miscounts a list). The first failure is the answer's, once all ended.
    A deterministic one may come from the response cache."""
    key, hit = await _from_cache(plan)
    if hit is not None:
        return hit
    plan.backend_started = time.perf_counter()
    prompt = plan.payload["prompt"]
    prompts = prompt if isinstance(prompt, list) else [prompt]

    async def one(text: str) -> dict[str, Any]:
        payload = {**plan.payload, "prompt": text}
        data, lease = await _call_backend(
            plan,
            lambda endpoint: backends.post_json(endpoint, "/completions", {**payload, "model": endpoint.backend_model}),
        )
        lease.release()
        return data

    if len(prompts) == 1:
        answers = [await one(prompts[0])]
    else:
        results = await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        answers = [r for r in results if isinstance(r, dict)]
    assert plan.endpoint is not None
    data = conformance.text_completion(answers, plan.endpoint.name)
    plan.answer_features = answer_features.of_text_completion(data)
    usage = data["usage"]
    plan.prompt_tokens = _int(usage.get("prompt_tokens"))
    plan.completion_tokens = _int(usage.get("completion_tokens"))
    await _keep(plan, key, data)
    return data


async def open_chat_stream(plan: ChatPlan) -> backends.SSEStream:
    """Open the backend stream (failing over until one opens): errors here still get a status code.
    The model's concurrency slot is held until the stream is closed. Chat or (legacy)
    completions, as the plan's ``kind`` says."""
    plan.backend_started = time.perf_counter()
    stream, lease = await _call_backend(
        plan, lambda endpoint: backends.open_stream(endpoint, plan.backend_path, _backend_payload(plan, endpoint))
    )
    stream.on_close.append(lease.release)
    return stream


def _sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class Frames(Protocol):
    """How a relayed stream is framed for its client (``ChatFrames``; the Responses API's
    ``responses.events.ResponseFrames``)."""

    def start(self) -> list[bytes]: ...
    def chunk(self, chunk: dict[str, Any], usage: Any) -> list[bytes]: ...
    def done(self) -> list[bytes]: ...
    def failed(self, code: str, reason: str) -> list[bytes]: ...
    def unrecorded(self) -> list[bytes]: ...


class ChatFrames:
    """How a relayed stream is framed for its client: chat completions' chunks as they come (with
    medai's model name; the usage chunk only when the client asked for it), ``[DONE]`` at the end.
    The Responses API frames the same chunks as its own events (apps/inference/responses/events.py).
    ``done`` and ``failed`` are built before the request is recorded, sent after."""

    def __init__(self, plan: ChatPlan) -> None:
        self.include_usage = plan.include_usage

    def start(self) -> list[bytes]:
        return []

    def chunk(self, chunk: dict[str, Any], usage: Any) -> list[bytes]:
        if not chunk.get("choices") and usage and not self.include_usage:
            return []  # the usage-only chunk medai asked for on its own behalf
        if not self.include_usage:
            chunk.pop("usage", None)
        return [_sse(chunk)]

    def done(self) -> list[bytes]:
        return [b"data: [DONE]\n\n"]

    def failed(self, code: str, reason: str) -> list[bytes]:
        return [_error_event(code, f"The model server failed mid-stream: {reason}")]

    def unrecorded(self) -> list[bytes]:
        return [_error_event("recording_unavailable", UNRECORDED)]


UNRECORDED = (
    "The answer is complete but its record is not in the database (the database is "
    "unavailable or behind); this request is not confirmed as recorded."
)


async def relay_stream(
    plan: ChatPlan, stream: backends.SSEStream, frames: Frames | None = None
) -> AsyncIterator[bytes]:
    """Relay the backend's SSE events with medai's model name, framed by ``frames`` (chat
    completions' chunks and ``data: [DONE]`` by default).

    A stored request (``plan.stored``: a stored exchange, ``store: true`` on chat, or a stored
    Response) is recorded before the end is sent, so that a follow-up may name it at once
    (``conversation_id``, ``previous_response_id``): the record writer's batch that holds it has
    committed (``record_committed``); when that takes longer than ``RECORD_WAIT_SECONDS`` the stream
    ends with a ``recording_unavailable`` error event instead. Any other stream is recorded as a
    non-streamed answer is, by the background writer within ``MEDAI_RECORD_LINGER_MS`` of its end
    (``record_later``; ``ensure_recording_capacity`` refused it before the backend call if the
    writer could not take it). After the first token no retry is possible: a
    broken stream ends with an error event. A client that disconnects (a clinician pressing Stop) still gets its request recorded,
    as CANCELLED ``client_disconnected``: the client's own outcome, never the model's failure.
    """
    assert plan.endpoint is not None
    frames = frames if frames is not None else ChatFrames(plan)
    normalise: Callable[[dict[str, Any]], int] = (
        conformance.TextChunkNormaliser(plan.endpoint.name)
        if plan.kind == COMPLETIONS
        else conformance.ChunkNormaliser(plan.endpoint.name)  # chat, and responses sent as chat
    )
    convert = (
        forced_tools.StreamConverter()
        if forced_tools.applies(plan.payload, plan.endpoint.kind)
        else lambda event: [event]
    )
    chunks = 0
    error: tuple[str, str] | None = None
    recorded = False
    answer = conversations.StreamAnswer() if plan.storage is not None else None
    features = answer_features.StreamFeatures()

    def count_tokens() -> None:
        if not plan.completion_tokens:
            plan.completion_tokens = max(chunks - 1, 0)  # no usage from the backend: count content chunks
        plan.answer_features = features.features()
        if answer is not None:  # store: true: what was streamed (until Stop, if the client stopped)
            assert plan.endpoint is not None
            plan.answer = answer.completion(plan.endpoint.name, plan.prompt_tokens, plan.completion_tokens)

    async def record(status: str, code: str = "", message: str = "") -> bool:
        """Record the outcome; True once recorded as the stream's kind requires (``record_outcome``)."""
        nonlocal recorded
        recorded = True
        return await record_outcome(plan, status, 200, code, message)

    try:
        for frame in frames.start():
            yield frame
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
                    features.add(chunk)
                    out = frames.chunk(chunk, usage)
                    if out:
                        chunks += 1
                        if answer is not None:
                            answer.add(chunk)
                    for frame in out:
                        yield frame
        except backends.BackendFailure as exc:
            error = ("backend_error", exc.reason)
        count_tokens()
        if error is not None:
            tail = frames.failed(*error)
            await record(InferenceTask.Status.FAILED, *error)
        else:
            tail = frames.done()
            if not await record(InferenceTask.Status.COMPLETED):
                tail = frames.unrecorded()
        for frame in tail:
            yield frame
    finally:
        await stream.aclose()
        if not recorded:  # the client went away mid-stream: no one waits for this record
            count_tokens()
            record_later(
                plan,
                InferenceTask.Status.CANCELLED,
                200,
                CLIENT_DISCONNECTED,
                "The client closed the connection before the stream ended.",
            )


async def record_outcome(plan: ChatPlan, status: str, http_status: int, code: str = "", message: str = "") -> bool:
    """Record a sync request's outcome. A stored one (``plan.stored``: a stored exchange, ``store:
    true`` on chat, or a stored Response): awaited until its record has committed (at most
    ``RECORD_WAIT_SECONDS``; False past it), for its id is handed to the client, who may name it in
    a follow-up at once (``conversation_id``, ``previous_response_id``). Any other: queued for the
    background writer (True at once)."""
    if not plan.stored:
        record_later(plan, status, http_status, code, message)
        return True
    committed = asyncio.wrap_future(record_committed(plan, status, http_status, code, message))
    try:
        async with asyncio.timeout(RECORD_WAIT_SECONDS):
            return await asyncio.shield(committed)
    except TimeoutError:
        logger.error("the record of request %s is not written yet", plan.correlation_id)
        return False


def _error_event(code: str, message: str) -> bytes:
    return _sse({"error": {"message": message, "type": "api_error", "param": None, "code": code}})


def _int(value: Any) -> int:
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0
