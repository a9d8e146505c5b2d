"""``/v1/responses``: OpenAI's Responses API, translated onto chat completions
(apps/inference/responses/). ``POST`` runs on the event loop through the one pipeline, as chat
completions does (``pipeline.plan.plan_response``, ``run.complete_chat`` / ``run.relay_stream``);
``GET`` and ``DELETE`` read and delete a stored response of the caller's own."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import principal_of
from apps.accounts.models import SCOPE_CHAT, SCOPE_READ
from apps.accounts.permissions import Authenticated, _ScopePermission
from apps.inference.api.async_views import AsyncPostView
from apps.inference.api.responses_serializers import (
    CreateResponseSerializer,
    DeletedResponseSerializer,
    ResponseObjectSerializer,
)
from apps.inference.api.serializers import ErrorSerializer
from apps.inference.api.views import read_body
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask
from apps.inference.pipeline import gate, plan, record, run
from apps.inference.responses import output, store
from apps.inference.responses.events import ResponseFrames

logger = logging.getLogger("medai.inference")
run_sync = sync_to_async(thread_sensitive=False)
_ERRORS = {code: ErrorSerializer for code in (400, 401, 403, 404, 413, 429, 503)}


class ResponsesView(AsyncPostView):
    """``POST /v1/responses``: a model response (OpenAI's Responses API). ``stream: true`` answers
    the Responses events over SSE; ``store`` (true by default, as at OpenAI) keeps it for
    ``previous_response_id`` and ``GET`` until its retention ends."""

    permission_classes = [Authenticated]  # the scope: the pipeline's authorize step, once

    @extend_schema(
        request=CreateResponseSerializer,
        responses={200: ResponseObjectSerializer, **_ERRORS},
        operation_id="create_response",
        description="`model` names a model or an agent type; `agent_type` and `priority` are medai extras. "
        "`stream: true` answers Server-Sent Events (response.created … response.completed).",
    )
    def post(self, request: Request) -> Response:  # the schema's; requests go to ``apost``
        raise NotImplementedError

    @classmethod
    async def apost(cls, request: HttpRequest) -> HttpResponse:
        return await create(request)


async def create(request: HttpRequest) -> HttpResponse:
    chat = None
    try:
        body = read_body(request)
        principal = await gate.authenticate(request.headers.get("Authorization"))
        request.auth = principal  # type: ignore[attr-defined]  # who a refusal's audit event names
        chat, rr, conversation = await plan.plan_response(
            principal,
            body,
            getattr(request, "correlation_id", ""),
            client_ip=request.META.get("REMOTE_ADDR") or None,
            user_agent=request.headers.get("User-Agent", ""),
        )
        rid = output.response_id(chat.record_extra["id"])
        if chat.stream:
            stream = await run.open_chat_stream(chat)
            assert chat.endpoint is not None
            frames = ResponseFrames(
                chat, output.skeleton(rr, rid, chat.endpoint.name), conversation if rr.store else None
            )
            response = StreamingHttpResponse(run.relay_stream(chat, stream, frames), content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"
            return response
        record.ensure_recording_capacity()
    except ApiError as exc:
        if chat is not None:
            if chat.stream:
                await run_sync(record.record_outcome)(
                    chat, InferenceTask.Status.FAILED, exc.status_code, exc.code, exc.message
                )
            else:
                gate.release(chat.reservation)
        return exc.response()
    except asyncio.CancelledError:
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
        data = await run.complete_chat(chat)
    except ApiError as exc:
        record.record_later(chat, InferenceTask.Status.FAILED, exc.status_code, exc.code, exc.message)
        return exc.response()
    except asyncio.CancelledError:
        record.record_later(
            chat,
            InferenceTask.Status.CANCELLED,
            record.CLIENT_CLOSED_REQUEST,
            record.CLIENT_DISCONNECTED,
            "The client closed the connection before the answer.",
        )
        raise
    assert chat.endpoint is not None
    answer = output.from_completion(data, output.skeleton(rr, rid, chat.endpoint.name))
    if rr.store:
        # stored: in the database before the answer, so that the next request may continue it
        chat.record_extra.update(store.content_fields(conversation, answer))
        committed = asyncio.wrap_future(record.record_committed(chat, InferenceTask.Status.COMPLETED, 200))
        try:
            async with asyncio.timeout(run.RECORD_WAIT_SECONDS):
                await asyncio.shield(committed)
        except TimeoutError:
            logger.error("stored response %s is not written yet", rid)
    else:
        record.record_later(chat, InferenceTask.Status.COMPLETED, 200)
    return JsonResponse(answer)


class CanUseResponses(_ScopePermission):
    """A stored response is read and deleted with the scope that made it (``chat``) or ``read``."""

    scopes = (SCOPE_READ, SCOPE_CHAT)


class ResponseDetailView(APIView):
    """``GET /v1/responses/{id}``: a stored response of the caller's; ``DELETE``: delete it. Anyone
    else's, a deleted one or one past its retention: 404."""

    permission_classes = [CanUseResponses]

    @extend_schema(responses={200: ResponseObjectSerializer, 404: ErrorSerializer}, operation_id="retrieve_response")
    def get(self, request: Request, response_id: str) -> Response:
        return Response(store.read(principal_of(request), response_id))

    @extend_schema(responses={200: DeletedResponseSerializer, 404: ErrorSerializer}, operation_id="delete_response")
    def delete(self, request: Request, response_id: str) -> Response:
        return Response(store.delete(principal_of(request), response_id))
