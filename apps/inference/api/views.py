"""API views. Chat completions is a native async view: DRF has no async views, and a request
waiting on a model server must not hold a thread. It validates exactly as DRF's serializer does
(``services.validate_chat_body``) and uses the same authentication service as the DRF views."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import CanRead
from apps.inference import services
from apps.inference.api.serializers import ErrorSerializer, ModelListSerializer, ModelSerializer
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask

run_sync = sync_to_async(thread_sensitive=False)


def _read_body(request: HttpRequest) -> bytes:
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


@csrf_exempt
async def chat_completions(request: HttpRequest) -> HttpResponse:
    """``POST /v1/chat/completions`` (OpenAI-compatible; ``stream: true`` answers SSE).

    Authentication, validation and routing run on the event loop when this process's caches
    can answer them (most requests), else in a thread. A non-streamed request's record is
    written after the answer by the background writer; a stream's before ``[DONE]``."""
    if request.method != "POST":
        return ApiError(405, "method_not_allowed", f"Method {request.method} not allowed; use POST.").response()
    plan = None
    try:
        body = _read_body(request)
        auth, correlation_id = request.headers.get("Authorization"), getattr(request, "correlation_id", "")
        plan = services.begin_chat_cached(auth, body, correlation_id)
        if plan is None:
            plan = await run_sync(services.begin_chat)(auth, body, correlation_id)
        plan.client_ip = request.META.get("REMOTE_ADDR") or None
        plan.user_agent = request.headers.get("User-Agent", "")
        if plan.stream:
            stream = await services.open_chat_stream(plan)
            response = StreamingHttpResponse(services.relay_stream(plan, stream), content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"
            return response
        services.ensure_recording_capacity()
    except ApiError as exc:
        if plan is not None and plan.stream:
            await run_sync(services.record_outcome)(
                plan, InferenceTask.Status.FAILED, exc.status_code, exc.code, exc.message
            )
        return exc.response()
    except asyncio.CancelledError:  # the client left while its stream was opening: its own outcome
        if plan is not None and plan.stream:
            await asyncio.shield(
                run_sync(services.record_outcome)(
                    plan,
                    InferenceTask.Status.CANCELLED,
                    services.CLIENT_CLOSED_REQUEST,
                    services.CLIENT_DISCONNECTED,
                    "The client closed the connection before the stream opened.",
                )
            )
        raise
    try:
        data = await services.complete_chat(plan)
    except ApiError as exc:
        services.record_later(plan, InferenceTask.Status.FAILED, exc.status_code, exc.code, exc.message)
        return exc.response()
    except asyncio.CancelledError:  # the client disconnected while the model worked: its own outcome
        services.record_later(
            plan,
            InferenceTask.Status.CANCELLED,
            services.CLIENT_CLOSED_REQUEST,
            services.CLIENT_DISCONNECTED,
            "The client closed the connection before the answer.",
        )
        raise
    services.record_later(plan, InferenceTask.Status.COMPLETED, 200)
    return JsonResponse(data)


class ModelListView(APIView):
    """``GET /v1/models``: the models and agent types this caller may use."""

    permission_classes = [CanRead]

    @extend_schema(responses=ModelListSerializer, operation_id="list_models")
    def get(self, request: Request) -> Response:
        return Response({"object": "list", "data": services.list_models(request.auth)})


class ModelDetailView(APIView):
    permission_classes = [CanRead]

    @extend_schema(responses={200: ModelSerializer, 404: ErrorSerializer}, operation_id="retrieve_model")
    def get(self, request: Request, model_id: str) -> Response:
        for item in services.list_models(request.auth):
            if item["id"] == model_id:
                return Response(item)
        raise ApiError(404, "model_not_found", f"Model '{model_id}' does not exist.", "model")


def _json_404(request: HttpRequest, exception: Any = None) -> JsonResponse:
    return ApiError(404, "not_found", f"No such endpoint: {request.method} {request.path}.").response()
