"""``/v1/responses``: OpenAI's Responses API, translated onto chat completions
(apps/inference/responses/). ``POST`` runs on the event loop through the one pipeline, as chat
completions does (``pipeline.plan.plan_response``, ``run.complete_chat`` / ``run.relay_stream``);
``GET`` and ``DELETE`` read and delete a stored response of the caller's own."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.permissions import BasePermission
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
from apps.inference.api.views import sync_inference
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask
from apps.inference.pipeline import plan, run
from apps.inference.responses import output, store
from apps.inference.responses.events import ResponseFrames

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
    async def apost(cls, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        return await sync_inference(request, plan.plan_response, run.complete_chat, frames=_frames, answer=_answer)


def _skeleton(chat: plan.ChatPlan) -> dict[str, Any]:
    assert chat.response is not None and chat.endpoint is not None
    return output.skeleton(chat.response, output.response_id(chat.record_extra["id"]), chat.endpoint.name)


def _frames(chat: plan.ChatPlan) -> ResponseFrames:
    """A stream's Responses events (a stored one: its conversation and Response kept on its record)."""
    assert chat.response is not None
    rr = chat.response
    return ResponseFrames(chat, _skeleton(chat), rr.conversation if rr.store else None)


async def _answer(chat: plan.ChatPlan, data: dict[str, Any]) -> HttpResponse:
    """The Response of a chat completion. A stored one (``chat.stored``) is in the database before
    it is answered, so that the next request may continue it at once (``run.record_outcome``, the
    wait bounded as a stream's); any other is recorded after the answer by the background writer."""
    assert chat.response is not None
    answer = output.from_completion(data, _skeleton(chat))
    if chat.response.store:
        chat.record_extra.update(store.content_fields(chat.response.conversation, answer))
    await run.record_outcome(chat, InferenceTask.Status.COMPLETED, 200)
    return JsonResponse(answer)


class _CanRead(_ScopePermission):
    scopes = (SCOPE_CHAT, SCOPE_READ)


class _CanDelete(_ScopePermission):
    scopes = (SCOPE_CHAT,)


class CanUseResponses(BasePermission):
    """A stored response is read with the scope that made it (``chat``) or ``read``; deleted (a
    write) with ``chat`` only."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        return (_CanDelete() if request.method == "DELETE" else _CanRead()).has_permission(request, view)


class ResponseDetailView(APIView):
    """``GET /v1/responses/{id}``: a stored response of the caller's; ``DELETE``: delete it. Anyone
    else's, a deleted one or one past its retention: 404, as an id that exists nowhere."""

    permission_classes = [CanUseResponses]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "include", str, many=True, description="Not available: medai's answers carry no extra data."
            ),
            OpenApiParameter("stream", bool, description="Not available: a stored response is read whole."),
        ],
        responses={200: ResponseObjectSerializer, **{c: ErrorSerializer for c in (400, 401, 403, 404)}},
        operation_id="retrieve_response",
    )
    def get(self, request: Request, response_id: str) -> Response:
        query = request.query_params
        if any(v for v in query.getlist("include") + query.getlist("include[]")):
            raise ApiError(
                400,
                "unsupported_parameter",
                "include: medai's answers carry no extra output data (logprobs, sources, encrypted reasoning).",
                "include",
            )
        for name in ("stream", "starting_after"):
            if query.get(name) not in (None, "", "false", "False"):
                raise ApiError(
                    400,
                    "unsupported_parameter",
                    f"{name}: a stored response is read whole; medai streams a response while it is created "
                    "(it has no background responses to follow).",
                    name,
                )
        return Response(store.read(principal_of(request), response_id))

    @extend_schema(
        responses={200: DeletedResponseSerializer, **{c: ErrorSerializer for c in (401, 403, 404)}},
        operation_id="delete_response",
    )
    def delete(self, request: Request, response_id: str) -> Response:
        return Response(store.delete(principal_of(request), response_id))
