"""The async task API (``/v1/async/...``): thin views over apps.inference.queue.

Every object lookup goes through ``InferenceTask.objects.visible_to(principal)`` or
``TaskBatch.objects.visible_to(principal)``, so another user's or location's task answers 404.

The two submit views are the queue's hot path and run natively async (``AsyncPostView``): a sync
DRF view costs a thread started for every request under ASGI (Django's per-request
``ThreadSensitiveContext``), about a tenth of a submit. They authenticate from this process's
credential cache on the event loop and run the submit's transaction on the loop's shared thread
pool. The other views are read-mostly and stay plain DRF views.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import AsyncToSync, sync_to_async
from django.core.paginator import EmptyPage, Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts import services as accounts
from apps.accounts.authentication import principal_of
from apps.accounts.permissions import Authenticated, CanRead, CanSubmit
from apps.accounts.services import AuthError, NeedsDatabase, Principal
from apps.audit.models import AuditEvent
from apps.inference import auditing, queue
from apps.inference.api.parsers import SafeJSONParser
from apps.inference.api.serializers import (
    AsyncBatchSubmittedSerializer,
    AsyncResultSerializer,
    AsyncSubmitBatchRequestSerializer,
    AsyncSubmitRequestSerializer,
    BatchProgressSerializer,
    ErrorSerializer,
    QueueHealthSerializer,
    TaskErrorSerializer,
)
from apps.inference.api.views import read_body, with_rate_limit
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask, Priority, TaskBatch
from apps.inference.pipeline import gate
from apps.inference.validation.fields import PriorityField

S = InferenceTask.Status
T = TypeVar("T")


class TaskStatusSerializer(serializers.Serializer):
    """A task's state. ``status`` is its outcome once it ends and stays so: a completed task whose
    result was purged at the end of its retention is still ``completed``, with ``content_purged_at``."""

    task_id = serializers.UUIDField(source="id")
    status = serializers.ChoiceField(
        choices=S.values,
        help_text=(
            "queued → processing → completed | failed | cancelled; queued → expired when its deadline passes. "
            "An outcome never changes, also when the content is purged."
        ),
    )
    priority = PriorityField()
    position = serializers.IntegerField(
        allow_null=True, required=False, help_text="1-based place in the queue while queued, else null."
    )
    agent_type = serializers.CharField()
    model = serializers.CharField(source="model_name")
    batch_id = serializers.UUIDField(allow_null=True)
    attempts = serializers.IntegerField()
    error = serializers.SerializerMethodField()
    deduplicated = serializers.BooleanField(required=False, help_text="On submit: an identical live task was reused.")
    created_at = serializers.DateTimeField()
    queued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    queue_wait_ms = serializers.IntegerField(allow_null=True)
    inference_ms = serializers.IntegerField(allow_null=True)
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    result_expires_at = serializers.DateTimeField(
        allow_null=True, help_text=("When the prompt and result are purged (MEDAI_RESULT_TTL after the task finished).")
    )
    content_purged_at = serializers.DateTimeField(
        allow_null=True,
        help_text=(
            "When the prompt and result were purged (the end of retention); null while they are kept. "
            "The status keeps the outcome."
        ),
    )

    @extend_schema_field(TaskErrorSerializer(allow_null=True))
    def get_error(self, task: InferenceTask) -> dict[str, str] | None:
        return {"code": task.error_code, "message": task.error_message} if task.error_code else None


def _iso(when: Any) -> str:
    return when.isoformat(timespec="seconds") if when else "an unknown time"


def _errors(*codes: int) -> dict[int, Any]:
    return {code: ErrorSerializer for code in (400, 401, 403, *codes)}


class TaskPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    page = serializers.IntegerField()
    page_size = serializers.IntegerField()
    results = TaskStatusSerializer(many=True)


def _task(request: Request, task_id: Any, *content: str) -> InferenceTask:
    """The caller's async task, or 404; its encrypted ``content`` columns are read only if named."""
    qs = InferenceTask.objects.visible_to(request.auth).filter(id=task_id, mode=InferenceTask.Mode.ASYNC)
    task = qs.defer(*({"request", "result"} - set(content))).first()
    if task is None:
        raise ApiError(404, "task_not_found", f"Task '{task_id}' does not exist.")
    return task


def _statuses(tasks: list[InferenceTask]) -> list[dict[str, Any]]:
    places = queue.positions(tasks)  # one query for them all
    for task in tasks:
        task.position = places.get(task.id)
    return [dict(TaskStatusSerializer(task).data) for task in tasks]


def _status(task: InferenceTask) -> dict[str, Any]:
    return _statuses([task])[0]


def _under_sync_caller() -> bool:
    """Whether this coroutine runs under an outer ``async_to_sync`` (Django's test client, WSGI)."""
    return getattr(AsyncToSync.executors, "current", None) is not None


async def in_db_thread(func: Callable[..., T], *args: Any) -> T:
    """Run a sync database step off the event loop. Under ASGI: on the loop's shared thread pool
    (``thread_sensitive=False``: no thread started for the request). Under an outer sync caller:
    in that caller's thread, on its connection and inside its transaction, as a sync view would."""
    return await sync_to_async(func, thread_sensitive=_under_sync_caller())(*args)


async def _principal(request: HttpRequest) -> Principal:
    """The authenticate step, once: the same accounts function as DRF's ``BearerAuthentication``.
    Under ASGI answered from this process's credential cache on the loop when it can (else again
    where a query is allowed); under a sync caller, whose thread may query, directly there."""
    header = request.headers.get("Authorization")
    try:
        if _under_sync_caller():
            principal = await in_db_thread(accounts.authenticate_header, header)
        else:
            try:
                principal = accounts.authenticate_header(header, cached_only=True)
            except NeedsDatabase:
                principal = await in_db_thread(accounts.authenticate_header, header)
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None
    request.auth = principal  # type: ignore[attr-defined]  # who a refusal's audit event names (apps/audit/middleware.py)
    return gate.authenticated(principal)


def _json_body(request: HttpRequest) -> Any:
    """The request's JSON (DRF's parser, so the same 400/415 answers as the DRF views); an empty
    body reads as ``{}``, as DRF's ``request.data`` does."""
    body = read_body(request)
    if not body:
        return {}
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", f'Unsupported media type "{request.content_type}" in request.')
    try:
        return SafeJSONParser().parse(io.BytesIO(body), request.content_type, {"request": request})
    except ParseError as exc:
        raise ApiError(400, "invalid_json", f"Request body is not valid JSON: {exc.detail}") from None


class RateLimitedView(APIView):
    """An endpoint behind the pipeline's rate-limit step: every answer (success or error) carries
    the ``X-RateLimit-*`` headers of its decision."""

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        return with_rate_limit(super().finalize_response(request, response, *args, **kwargs))


class AsyncPostView(RateLimitedView):
    """A rate-limited APIView whose ``POST`` runs as a native async view (``apost``); the class
    stays a DRF view for drf-spectacular (``as_view`` keeps ``cls``), and every other method is
    DRF's. Every answer of ``apost``, error or not, carries the ``X-RateLimit-*`` headers."""

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        drf_view = super().as_view(**initkwargs)
        drf_async = sync_to_async(drf_view)

        async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse | StreamingHttpResponse:
            if request.method != "POST":
                return await drf_async(request, *args, **kwargs)
            try:
                return with_rate_limit(await cls.apost(request))
            except ApiError as exc:
                return with_rate_limit(exc.response())

        view.cls = cls  # type: ignore[attr-defined]  # what DRF's as_view sets: schema generation reads it
        view.initkwargs = initkwargs  # type: ignore[attr-defined]
        return csrf_exempt(view)

    @classmethod
    async def apost(cls, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        raise NotImplementedError


def _submit_one(principal: Principal, data: Any, correlation_id: str, client_ip: str | None) -> dict[str, Any]:
    submitted = queue.submit_task(principal, data, correlation_id, client_ip=client_ip)
    body = _status(submitted.task)
    body["deduplicated"] = not submitted.created
    return body


def _submit_many(principal: Principal, items: Any, correlation_id: str, client_ip: str | None) -> dict[str, Any]:
    batch, tasks = queue.submit_batch(principal, items, correlation_id, client_ip=client_ip)
    return {"batch_id": str(batch.id), "task_ids": [str(t.id) for t in tasks], "status": "queued"}


class SubmitView(AsyncPostView):
    """``POST /v1/async/submit``: queue one chat request → 202 ``{task_id, status, position}``."""

    permission_classes = [Authenticated]  # the scope: the pipeline's authorize step, once

    @extend_schema(
        request=AsyncSubmitRequestSerializer,
        responses={202: TaskStatusSerializer, **_errors(413, 429, 503)},
        operation_id="async_submit",
    )
    def post(self, request: Request) -> Response:  # the schema's; requests go to ``apost``
        raise NotImplementedError

    @classmethod
    async def apost(cls, request: HttpRequest) -> HttpResponse:
        principal = await _principal(request)
        data = _json_body(request)
        if not isinstance(data, dict):
            raise ApiError(400, "invalid_json", "Request body must be a JSON object.")
        correlation_id, client_ip = getattr(request, "correlation_id", ""), request.META.get("REMOTE_ADDR")
        if _under_sync_caller():  # in the caller's thread and transaction (Django's test client, WSGI)
            body = await in_db_thread(_submit_one, principal, data, correlation_id, client_ip)
        else:  # planned on the loop, written in this process's next group commit (queue.commit)
            body = _submitted(await queue.submit_task_async(principal, data, correlation_id, client_ip=client_ip))
        return JsonResponse(body, status=202)


# One serializer for the single submits' answers, on the event loop (one thread): a new DRF
# serializer deep-copies its declared fields, ~8% of a submit's CPU in the web process.
_answer = TaskStatusSerializer()


def _submitted(submitted: queue.Submitted) -> dict[str, Any]:
    """The 202 body of a single submit whose place was read with its write (no query here)."""
    submitted.task.position = submitted.position
    body = dict(_answer.to_representation(submitted.task))
    body["deduplicated"] = not submitted.created
    return body


class SubmitBatchView(AsyncPostView):
    """``POST /v1/async/submit-batch {requests: [...]}`` → 202 ``{batch_id, task_ids}``."""

    permission_classes = [Authenticated]  # the scope: the pipeline's authorize step, once for the batch

    @extend_schema(
        request=AsyncSubmitBatchRequestSerializer,
        responses={202: AsyncBatchSubmittedSerializer, **_errors(413, 429, 503)},
        operation_id="async_submit_batch",
    )
    def post(self, request: Request) -> Response:  # the schema's; requests go to ``apost``
        raise NotImplementedError

    @classmethod
    async def apost(cls, request: HttpRequest) -> HttpResponse:
        principal = await _principal(request)  # once for every item
        data = _json_body(request)
        items = data.get("requests") if isinstance(data, dict) else None
        body = await in_db_thread(
            _submit_many, principal, items, getattr(request, "correlation_id", ""), request.META.get("REMOTE_ADDR")
        )
        return JsonResponse(body, status=202)


class StatusView(APIView):
    """``GET /v1/async/status/{id}``: status, priority, position, timestamps, durations, model."""

    permission_classes = [CanRead]

    @extend_schema(responses={200: TaskStatusSerializer, **_errors(404)}, operation_id="async_status")
    def get(self, request: Request, task_id: Any) -> Response:
        task = _task(request, task_id)
        auditing.record_status_read(principal_of(request), task)
        return Response(_status(task))


class ResultView(APIView):
    """``GET /v1/async/result/{id}``: the OpenAI completion plus timings; 409 until finished (or when
    cancelled); a failed task answers its error; 410 ``result_purged`` once its retention ended
    (the task stays completed), 410 ``task_expired`` if it expired queued."""

    permission_classes = [CanRead]

    @extend_schema(responses={200: AsyncResultSerializer, **_errors(404, 409, 410, 502)}, operation_id="async_result")
    def get(self, request: Request, task_id: Any) -> Response:
        task = _task(request, task_id, "result")
        try:
            body = self._result(task)
        except ApiError as exc:
            auditing.record_result_read(principal_of(request), task, outcome=AuditEvent.Outcome.FAILURE, code=exc.code)
            raise
        auditing.record_result_read(principal_of(request), task, outcome=AuditEvent.Outcome.SUCCESS)
        return Response(body)

    @staticmethod
    def _result(task: InferenceTask) -> dict[str, Any]:
        if task.status in (S.QUEUED, S.PROCESSING):
            raise ApiError(
                409, "task_not_finished", f"Task {task.id} is {task.status}; retry later.", headers={"Retry-After": "1"}
            )
        if task.status == S.EXPIRED:
            raise ApiError(
                410,
                "task_expired",
                f"Task {task.id} expired at {_iso(task.finished_at)}: it was still "
                "queued at its deadline and never ran.",
            )
        if task.status == S.CANCELLED:
            raise ApiError(409, "task_cancelled", f"Task {task.id} was cancelled.")
        if task.status == S.FAILED:
            raise ApiError(
                task.http_status if task.http_status and task.http_status >= 400 else 502,
                task.error_code or "task_failed",
                task.error_message or "The task failed.",
            )
        purged = task.content_purged_at or (  # past retention even if the sweep (every minute) has not run yet
            task.result_expires_at if task.result_expires_at and task.result_expires_at <= timezone.now() else None
        )
        if purged:
            raise ApiError(
                410,
                "result_purged",
                f"Task {task.id} completed at {_iso(task.finished_at)}; its result "
                f"was purged at {_iso(purged)}, when its retention ended.",
            )
        if not task.result:  # encrypted under a key this installation no longer has
            raise ApiError(410, "task_result_unavailable", f"Task {task.id}'s result can no longer be read.")
        body = dict(task.result)
        body["medai"] = {
            "task_id": str(task.id),
            "queue_wait_ms": task.queue_wait_ms,
            "inference_ms": task.inference_ms,
            "attempts": task.attempts,
        }
        return body


class CancelView(APIView):
    """``POST /v1/async/cancel/{id}``: cancel a queued task."""

    permission_classes = [CanSubmit]

    @extend_schema(
        request=None, responses={200: TaskStatusSerializer, **_errors(404, 409)}, operation_id="async_cancel"
    )
    def post(self, request: Request, task_id: Any) -> Response:
        return Response(_status(queue.cancel_task(principal_of(request), _task(request, task_id))))


class RetryRequestSerializer(serializers.Serializer):
    priority = PriorityField(required=False, help_text="The new task's priority; the original's by default.")


class RetriedSerializer(TaskStatusSerializer):
    retry_of = serializers.UUIDField(help_text="The failed, cancelled or expired task this one asks again.")


class RetryView(APIView):
    """``POST /v1/async/retry/{id}``: queue a failed, cancelled or expired task of the caller's again,
    as a new task (202, its status); 404 for anyone else's task, 409 for a task that has not
    ended so, 410 once its request was purged at the end of its retention."""

    permission_classes = [CanSubmit]

    @extend_schema(
        request=RetryRequestSerializer,
        responses={202: RetriedSerializer, **_errors(404, 409, 410, 429, 503)},
        operation_id="async_retry",
    )
    def post(self, request: Request, task_id: Any) -> Response:
        data = request.data if isinstance(request.data, dict) else None
        if data is None:
            raise ApiError(400, "invalid_json", "Request body must be a JSON object.")
        submitted = queue.retry_task(
            principal_of(request),
            task_id,
            data.get("priority"),  # validated with the rest of the request, as for a submit
            getattr(request, "correlation_id", ""),
            client_ip=request.META.get("REMOTE_ADDR"),
        )
        body = _status(submitted.task)
        body["deduplicated"] = not submitted.created
        body["retry_of"] = str(task_id)
        return Response(body, status=202)


class BatchStatusView(APIView):
    """``GET /v1/async/batch-status/{id}``: totals and progress of a batch."""

    permission_classes = [CanRead]

    @extend_schema(responses={200: BatchProgressSerializer, **_errors(404)}, operation_id="async_batch_status")
    def get(self, request: Request, batch_id: Any) -> Response:
        batch = TaskBatch.objects.visible_to(request.auth).filter(id=batch_id).first()
        if batch is None:
            raise ApiError(404, "batch_not_found", f"Batch '{batch_id}' does not exist.")
        auditing.record_status_read(principal_of(request), batch)
        return Response(queue.batch_progress(batch))


class TaskListView(APIView):
    """``GET /v1/async/tasks?status=&priority=&batch=&page=&page_size=``: the caller's async tasks,
    newest first, optionally of one status, priority or batch."""

    permission_classes = [CanRead]

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str),
            OpenApiParameter("priority", str, description="low, normal, high or critical"),
            OpenApiParameter("batch", str, description="a batch id: its tasks only"),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        responses={200: TaskPageSerializer, **_errors(404)},
        operation_id="async_tasks",
    )
    def get(self, request: Request) -> Response:
        qs = InferenceTask.objects.visible_to(request.auth).filter(mode=InferenceTask.Mode.ASYNC)
        status = request.query_params.get("status")
        if status:
            if status not in S.values:
                raise ApiError(400, "invalid_value", f"status must be one of {', '.join(S.values)}.", "status")
            qs = qs.filter(status=status)
        priority = request.query_params.get("priority")
        if priority:
            if priority.upper() not in Priority.names:
                names = ", ".join(n.lower() for n in Priority.names)
                raise ApiError(400, "invalid_value", f"priority must be one of {names}.", "priority")
            qs = qs.filter(priority=Priority[priority.upper()])
        batch = request.query_params.get("batch")
        if batch:
            try:
                qs = qs.filter(batch_id=uuid.UUID(batch))
            except ValueError:
                raise ApiError(400, "invalid_value", "batch must be a batch id (a UUID).", "batch") from None
        try:
            page_no = int(request.query_params.get("page", 1))
            size = min(max(int(request.query_params.get("page_size", 50)), 1), 200)
        except ValueError:
            raise ApiError(400, "invalid_value", "page and page_size must be integers.", "page") from None
        paginator = Paginator(qs.defer("request", "result").order_by("-created_at"), size)  # no content to decrypt
        try:
            page = paginator.page(page_no)
        except EmptyPage:
            raise ApiError(404, "page_not_found", f"Page {page_no} does not exist.", "page") from None
        tasks = list(page.object_list)
        auditing.record_status_read(principal_of(request), None, count=len(tasks))
        return Response({"count": paginator.count, "page": page_no, "page_size": size, "results": _statuses(tasks)})


class QueueHealthView(APIView):
    """``GET /v1/async/health``: depth per priority, oldest wait, workers alive."""

    permission_classes = [CanRead]

    @extend_schema(
        responses={200: QueueHealthSerializer, 401: ErrorSerializer, 403: ErrorSerializer}, operation_id="async_health"
    )
    def get(self, request: Request) -> Response:
        return Response(queue.health(request.auth))
