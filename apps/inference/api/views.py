"""API views. Chat completions is a native async view: DRF has no async views, and a request
waiting on a model server must not hold a thread. It authenticates with the same accounts
function as the DRF views, once, then runs the pipeline (apps/inference/pipeline/)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts import governance
from apps.accounts.authentication import principal_of
from apps.accounts.permissions import CanListModels
from apps.inference import response_cache, services
from apps.inference.api.serializers import ErrorSerializer, ModelListSerializer, ModelSerializer
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask
from apps.inference.pipeline import embed, gate, plan, record, run

run_sync = sync_to_async(thread_sensitive=False)


def read_body(request: HttpRequest) -> bytes:
    """The request body, or ApiError 413 past ``MEDAI_MAX_BODY_BYTES`` (declared or read)."""
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > settings.MEDAI_MAX_BODY_BYTES:
        raise ApiError(
            413, "request_too_large", f"Request body is {declared} bytes; the limit is {settings.MEDAI_MAX_BODY_BYTES}."
        )
    try:
        return request.body
    except RequestDataTooBig:
        raise ApiError(
            413, "request_too_large", f"Request body exceeds the limit of {settings.MEDAI_MAX_BODY_BYTES} bytes."
        ) from None


R = TypeVar("R", bound=HttpResponse | StreamingHttpResponse)


def with_rate_limit(response: R) -> R:
    """Add this request's ``X-RateLimit-*`` headers (governance.rate_limit_headers) to an answer of a
    rate-limited endpoint, success or error, once the rate-limit step ran."""
    for name, value in governance.rate_limit_headers().items():
        if name not in response:
            response[name] = value
    return response


Planner = Callable[..., Awaitable[plan.ChatPlan]]
Completer = Callable[[plan.ChatPlan], Awaitable[dict[str, Any]]]
# How a stream is framed for its client (None: chat completions' chunks, run.ChatFrames).
Framer = Callable[[plan.ChatPlan], run.Frames | None]
# What a non-streamed request answers with its backend's data (and how its record is written).
Answerer = Callable[[plan.ChatPlan, dict[str, Any]], Awaitable[HttpResponse]]


async def answer_json(chat: plan.ChatPlan, data: dict[str, Any]) -> HttpResponse:
    """The backend's (conformant) answer as it is, recorded as ``run.record_outcome`` says: a
    stored exchange is answered once its record has committed (a follow-up may name it at once),
    any other's record is written after the answer by the background writer."""
    await run.record_outcome(chat, InferenceTask.Status.COMPLETED, 200)
    response = JsonResponse(data)
    if chat.cache_hit is not None:
        response[response_cache.HEADER] = "hit"
    return stored_headers(chat, response)


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """``POST /v1/chat/completions`` (OpenAI-compatible; ``stream: true`` answers SSE)."""
    return with_rate_limit(await sync_inference(request, plan.plan_chat, run.complete_chat))


@csrf_exempt
async def completions(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """``POST /v1/completions``, OpenAI's legacy completions (a prompt → text; ``stream: true``
    answers SSE of ``text_completion`` chunks): the same pipeline as chat, its own validation,
    payload and answer shape."""
    return with_rate_limit(await sync_inference(request, plan.plan_completion, run.complete_text))


async def sync_inference(
    request: HttpRequest,
    planner: Planner,
    complete: Completer,
    *,
    frames: Framer | None = None,
    answer: Answerer = answer_json,
) -> HttpResponse | StreamingHttpResponse:
    """One sync inference through the pipeline: ``planner`` (authorize → validate → limits →
    route), then the backend call (``complete``, or a relayed stream framed by ``frames``), then
    ``answer`` and the record (the Responses API gives its own framing and answer).

    Authenticated once; authorization, validation and routing run on the event loop when this
    process's caches can answer them (most requests), else in a thread. The record is written by the
    background writer after the answer (or the stream's end); a stored request's (``plan.stored``:
    ``store: true`` on chat, a stored Response) has committed before the answer or the stream's end
    (``run.record_outcome``)."""
    if request.method != "POST":
        return ApiError(405, "method_not_allowed", f"Method {request.method} not allowed; use POST.").response()
    chat = None
    try:
        body = read_body(request)
        principal = await gate.authenticate(request.headers.get("Authorization"))
        request.auth = principal  # type: ignore[attr-defined]  # who a refusal's audit event names (apps/audit/middleware.py)
        chat = await planner(
            principal,
            body,
            getattr(request, "correlation_id", ""),
            client_ip=request.META.get("REMOTE_ADDR") or None,
            user_agent=request.headers.get("User-Agent", ""),
        )
        chat.cache_bypass = response_cache.bypass_of(request.headers.get("Cache-Control", ""))
        record.ensure_recording_capacity()  # (a stream as well: both are recorded by the writer)
        if chat.stream:
            stream = await run.open_chat_stream(chat)
            framing = frames(chat) if frames is not None else None
            response = StreamingHttpResponse(run.relay_stream(chat, stream, framing), content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"
            return stored_headers(chat, response)
    except ApiError as exc:
        if chat is not None:
            if chat.stream and exc.code != "recording_unavailable":  # (that one: no record can be written)
                await run_sync(record.record_outcome)(
                    chat, InferenceTask.Status.FAILED, exc.status_code, exc.code, exc.message
                )
            else:  # refused before any backend call (nowhere to record it): the reservation is freed
                gate.release(chat.reservation)
        return exc.response()
    except asyncio.CancelledError:  # the client left while its stream was opening: its own outcome
        if chat is not None and chat.stream:
            await asyncio.shield(
                run_sync(record.record_outcome)(
                    chat,
                    InferenceTask.Status.CANCELLED,
                    record.CLIENT_CLOSED_REQUEST,
                    record.CLIENT_DISCONNECTED,
                    "The client closed the connection before the stream opened.",
                )
            )
        raise
    try:
        data = await complete(chat)
    except ApiError as exc:
        record.record_later(chat, InferenceTask.Status.FAILED, exc.status_code, exc.code, exc.message)
        return exc.response()
    except asyncio.CancelledError:  # the client disconnected while the model worked: its own outcome
        record.record_later(
            chat,
            InferenceTask.Status.CANCELLED,
            record.CLIENT_CLOSED_REQUEST,
            record.CLIENT_DISCONNECTED,
            "The client closed the connection before the answer.",
        )
        raise
    return await answer(chat, data)


def stored_headers(chat: plan.ChatPlan, response: R) -> R:
    """A stored exchange's ids (``store: true``), known before the first token: the exchange (for
    feedback and history) and its conversation (a follow-up sends it as ``conversation_id``)."""
    if chat.storage is not None:
        response["X-Medai-Exchange-Id"] = str(chat.storage.exchange_id)
        response["X-Medai-Conversation-Id"] = str(chat.storage.conversation_id)
    return response


class ModelListView(APIView):
    """``GET /v1/models``: the models and agent types this caller may use."""

    permission_classes = [CanListModels]

    @extend_schema(responses=ModelListSerializer, operation_id="list_models")
    def get(self, request: Request) -> Response:
        return Response({"object": "list", "data": services.list_models(principal_of(request))})


class ModelDetailView(APIView):
    permission_classes = [CanListModels]

    @extend_schema(responses={200: ModelSerializer, 404: ErrorSerializer}, operation_id="retrieve_model")
    def get(self, request: Request, model_id: str) -> Response:
        for item in services.list_models(principal_of(request)):
            if item["id"] == model_id:
                return Response(item)
        raise ApiError(404, "model_not_found", f"Model '{model_id}' does not exist.", "model")


def _json_404(request: HttpRequest, exception: Any = None) -> JsonResponse:
    return ApiError(404, "not_found", f"No such endpoint: {request.method} {request.path}.").response()


@csrf_exempt
async def embeddings(request: HttpRequest) -> HttpResponse:
    """``POST /v1/embeddings`` (OpenAI's CreateEmbeddingRequest → CreateEmbeddingResponse)."""
    return with_rate_limit(await _serve(request, embed.plan_embeddings, embed.run_embeddings))


@csrf_exempt
async def rerank(request: HttpRequest) -> HttpResponse:
    """``POST /v1/rerank`` (the Cohere/Jina shape llama.cpp and vLLM serve)."""
    return with_rate_limit(await _serve(request, embed.plan_rerank, embed.run_rerank))


async def _serve(request: HttpRequest, planner: Any, runner: Any) -> HttpResponse:
    """One non-streamed request through the pipeline (``apps/inference/pipeline/embed.py``): plan,
    run, and its record written after the answer by the background writer, as chat's."""
    if request.method != "POST":
        return ApiError(405, "method_not_allowed", f"Method {request.method} not allowed; use POST.").response()
    planned = None
    try:
        body = read_body(request)
        principal = await gate.authenticate(request.headers.get("Authorization"))
        request.auth = principal  # type: ignore[attr-defined]  # who a refusal's audit event names
        data = gate.parse_body(body)
        planned = await planner(
            principal,
            data,
            getattr(request, "correlation_id", ""),
            client_ip=request.META.get("REMOTE_ADDR") or None,
            user_agent=request.headers.get("User-Agent", ""),
        )
        record.ensure_recording_capacity()
    except ApiError as exc:
        if planned is not None:
            gate.release(planned.reservation)
        return exc.response()
    try:
        answer = await runner(planned)
    except ApiError as exc:
        record.record_later(planned, InferenceTask.Status.FAILED, exc.status_code, exc.code, exc.message)
        return exc.response()
    except asyncio.CancelledError:
        record.record_later(
            planned,
            InferenceTask.Status.CANCELLED,
            record.CLIENT_CLOSED_REQUEST,
            record.CLIENT_DISCONNECTED,
            "The client closed the connection before the answer.",
        )
        raise
    record.record_later(planned, InferenceTask.Status.COMPLETED, 200)
    return JsonResponse(answer)
