"""The Files and Batch API (``/v1/files``, ``/v1/batches``): thin views over
apps.inference.filebatch, in OpenAI's shapes, so the official client's ``files`` and ``batches``
resources work unchanged.

Every lookup is the caller's own (``StoredFile.objects.visible_to``, ``FileBatch.objects.visible_to``
inside the services): anyone else's file or batch answers the same 404 as an id that exists
nowhere. Reading needs the ``read`` scope, uploading, deleting, creating and cancelling ``submit``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import principal_of
from apps.accounts.permissions import CanRead, CanSubmit
from apps.audit import actions
from apps.audit.services import record_event_later
from apps.inference import auditing
from apps.inference.api.async_views import RateLimitedView
from apps.inference.api.parsers import SafeJSONParser
from apps.inference.api.serializers import ErrorSerializer, list_page
from apps.inference.errors import ApiError
from apps.inference.filebatch import batches, files
from apps.inference.filebatch.shapes import batch_object
from apps.inference.filebatch_models import StoredFile

UPLOAD_FIELDS = ("file", "purpose", "expires_after[anchor]", "expires_after[seconds]")


def _errors(*codes: int) -> dict[int, Any]:
    return {code: ErrorSerializer for code in (400, 401, 403, *codes)}


# --- shapes (documentation and the schema tests) -------------------------------------------------


class OpenAIFileSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="file-…")
    object = serializers.ChoiceField(choices=["file"])
    bytes = serializers.IntegerField()
    created_at = serializers.IntegerField()
    expires_at = serializers.IntegerField(help_text="When its content is purged (MEDAI_FILE_TTL at most).")
    filename = serializers.CharField()
    purpose = serializers.ChoiceField(choices=StoredFile.Purpose.values)
    status = serializers.ChoiceField(choices=["processed"])


class FileListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = OpenAIFileSerializer(many=True)  # type: ignore[assignment]  # documents the list's "data" key
    first_id = serializers.CharField(allow_null=True)
    last_id = serializers.CharField(allow_null=True)
    has_more = serializers.BooleanField()


class FileDeletedSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["file"])
    deleted = serializers.BooleanField()


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="JSONL: one {custom_id, method, url, body} per line.")
    purpose = serializers.ChoiceField(choices=["batch"])


class ExpiresAfterSerializer(serializers.Serializer):
    anchor = serializers.ChoiceField(choices=["created_at"])
    seconds = serializers.IntegerField(min_value=files.EXPIRES_MIN, max_value=files.EXPIRES_MAX)


class BatchCreateSerializer(serializers.Serializer):
    input_file_id = serializers.CharField()
    endpoint = serializers.ChoiceField(choices=["/v1/chat/completions"])
    completion_window = serializers.ChoiceField(choices=list(batches.WINDOWS))
    metadata = serializers.DictField(
        child=serializers.CharField(),
        required=False,
        allow_null=True,
        help_text="Up to 16 strings; metadata.priority (low, normal, high, critical) sets the lines' priority (low).",
    )
    output_expires_after = ExpiresAfterSerializer(required=False)


class BatchErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    line = serializers.IntegerField(allow_null=True, required=False)


class BatchErrorsSerializer(serializers.Serializer):
    object = serializers.CharField()
    data = BatchErrorSerializer(many=True)  # type: ignore[assignment]


class RequestCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()


class BatchUsageSerializer(serializers.Serializer):
    input_tokens = serializers.IntegerField()
    input_tokens_details = serializers.DictField()
    output_tokens = serializers.IntegerField()
    output_tokens_details = serializers.DictField()
    total_tokens = serializers.IntegerField()


class BatchSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="batch_…")
    object = serializers.ChoiceField(choices=["batch"])
    endpoint = serializers.CharField()
    errors = BatchErrorsSerializer(required=False)  # type: ignore[assignment]  # OpenAI's field, not DRF's .errors
    input_file_id = serializers.CharField()
    completion_window = serializers.CharField()
    status = serializers.ChoiceField(choices=batches.S.values)
    output_file_id = serializers.CharField(required=False)
    error_file_id = serializers.CharField(required=False)
    created_at = serializers.IntegerField()
    in_progress_at = serializers.IntegerField(required=False)
    expires_at = serializers.IntegerField(required=False)
    finalizing_at = serializers.IntegerField(required=False)
    completed_at = serializers.IntegerField(required=False)
    failed_at = serializers.IntegerField(required=False)
    expired_at = serializers.IntegerField(required=False)
    cancelling_at = serializers.IntegerField(required=False)
    cancelled_at = serializers.IntegerField(required=False)
    request_counts = RequestCountsSerializer()
    usage = BatchUsageSerializer()
    metadata = serializers.DictField(child=serializers.CharField(), allow_null=True)


class BatchListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = BatchSerializer(many=True)  # type: ignore[assignment]
    first_id = serializers.CharField(allow_null=True)
    last_id = serializers.CharField(allow_null=True)
    has_more = serializers.BooleanField()


class ByMethod(APIView):
    """Permissions per HTTP method (``permissions_by_method``)."""

    permissions_by_method: dict[str, list[type]] = {}

    def get_permissions(self) -> list[Any]:
        method = (self.request.method or "GET").upper() if self.request else "GET"
        return [p() for p in self.permissions_by_method.get(method, [CanRead])]


# --- files --------------------------------------------------------------------------------------


def _form(request: Request) -> tuple[Any, Any]:
    """(the form fields, the uploaded files) of a multipart upload, or a 400/413 naming why."""
    try:
        return request.data, request.FILES
    except UnsupportedMediaType:
        raise ApiError(
            415,
            "unsupported_media_type",
            "Upload the file as multipart/form-data (fields file and purpose).",
            "Content-Type",
        ) from None
    except RequestDataTooBig:
        raise ApiError(413, "request_too_large", "The form's fields are too large.") from None
    except (ParseError, TooManyFieldsSent, SuspiciousOperation) as exc:
        raise ApiError(400, "invalid_form", f"The multipart form could not be read: {exc}.") from None


class FilesView(ByMethod):
    """``POST /v1/files`` (multipart: ``file``, ``purpose`` ``batch``, optional
    ``expires_after[anchor]``/``[seconds]``) → the file; ``GET /v1/files`` → the caller's files."""

    parser_classes = [MultiPartParser, FormParser]
    permissions_by_method = {"POST": [CanSubmit], "GET": [CanRead]}

    @extend_schema(
        request={"multipart/form-data": FileUploadSerializer},
        responses={200: OpenAIFileSerializer, **_errors(413, 415)},
        operation_id="files_upload",
    )
    def post(self, request: Request) -> Response:
        form, uploads = _form(request)
        for name in form:
            if name not in UPLOAD_FIELDS:
                shown = str(name)[:64]
                raise ApiError(400, "unknown_parameter", f"{shown}: not a field of a file upload.", shown)
        found = uploads.getlist("file") if hasattr(uploads, "getlist") else []
        if len(found) != 1:
            raise ApiError(400, "invalid_value", "file: send exactly one file (multipart field 'file').", "file")
        upload = found[0]
        limit = settings.MEDAI_FILE_MAX_BYTES
        if upload.size is not None and upload.size > limit:
            raise ApiError(413, "file_too_large", f"file: {upload.size} bytes; the limit is {limit} bytes.", "file")
        seconds = files.expires_after(
            form.get("expires_after[anchor]"), form.get("expires_after[seconds]"), "expires_after"
        )
        stored = files.upload(
            principal_of(request),
            data=upload.read(),
            filename=upload.name,
            purpose=form.get("purpose"),
            expires_seconds=seconds,
        )
        return Response(files.file_object(stored))

    @extend_schema(
        parameters=[
            OpenApiParameter("purpose", str),
            OpenApiParameter("limit", int, description="1–10000 (10000)"),
            OpenApiParameter("order", str, description="asc or desc (desc: newest first)"),
            OpenApiParameter("after", str, description="a file id: the page after it"),
        ],
        responses={200: FileListSerializer, **_errors()},
        operation_id="files_list",
    )
    def get(self, request: Request) -> Response:
        q = request.query_params
        found, more = files.list_files(
            principal_of(request),
            purpose=q.get("purpose"),
            limit=q.get("limit"),
            order=q.get("order"),
            after=q.get("after"),
        )
        _info(request, None, len(found))
        return Response(list_page([files.file_object(f) for f in found], more))


def _info(request: Request, stored: StoredFile | None, count: int | None = None) -> None:
    """A read of file metadata (one file, a page of the list): written by the background writer."""
    if stored is None:
        record_event_later(
            actions.FILE_INFO, actor=principal_of(request), object_type="inference.storedfile", details={"count": count}
        )
    else:
        record_event_later(actions.FILE_INFO, actor=principal_of(request), obj=stored)


class FileDetailView(ByMethod):
    """``GET /v1/files/{id}`` → the file; ``DELETE`` → ``{id, object, deleted: true}``."""

    permissions_by_method = {"DELETE": [CanSubmit], "GET": [CanRead]}

    @extend_schema(responses={200: OpenAIFileSerializer, **_errors(404)}, operation_id="files_retrieve")
    def get(self, request: Request, file_id: str) -> Response:
        stored = files.get_file(principal_of(request), file_id)
        _info(request, stored)
        return Response(files.file_object(stored))

    @extend_schema(responses={200: FileDeletedSerializer, **_errors(404, 409)}, operation_id="files_delete")
    def delete(self, request: Request, file_id: str) -> Response:
        stored = files.delete(principal_of(request), file_id)
        return Response({"id": stored.public_id, "object": "file", "deleted": True})


class AnyAccept(BaseContentNegotiation):
    """A download answers bytes whatever ``Accept`` says (the official client sends
    ``application/binary``), and its errors JSON, as every API error."""

    def select_parser(self, request: Request, parsers: Any) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: Any, format_suffix: Any = None) -> Any:
        return renderers[0], renderers[0].media_type


class FileContentView(APIView):
    """``GET /v1/files/{id}/content``: the file's bytes (JSONL), audited as a read of PHI."""

    permission_classes = [CanRead]
    content_negotiation_class = AnyAccept

    @extend_schema(
        responses={(200, "application/jsonl"): bytes, **_errors(404)},
        operation_id="files_content",
    )
    def get(self, request: Request, file_id: str) -> HttpResponse:
        stored, data = files.content(principal_of(request), file_id)
        response = HttpResponse(data, content_type="application/jsonl")
        response["Content-Disposition"] = f'attachment; filename="{stored.public_id}.jsonl"'
        response["Cache-Control"] = "no-store"
        return response


# --- batches ------------------------------------------------------------------------------------


class BatchesView(RateLimitedView, ByMethod):
    """``POST /v1/batches {input_file_id, endpoint, completion_window, metadata}`` → the batch,
    its first lines queued; ``GET /v1/batches?after=&limit=`` → the caller's batches."""

    parser_classes = [SafeJSONParser]
    # creating: the pipeline's authorize step (submit scope), once, in the service
    permissions_by_method = {"POST": [CanSubmit], "GET": [CanRead]}

    @extend_schema(
        request=BatchCreateSerializer,
        responses={200: BatchSerializer, **_errors(404, 413, 429, 503)},
        operation_id="batches_create",
    )
    def post(self, request: Request) -> Response:
        batch = batches.create_batch(
            principal_of(request),
            request.data,
            getattr(request, "correlation_id", ""),
            client_ip=request.META.get("REMOTE_ADDR"),
        )
        return Response(batch_object(batch))

    @extend_schema(
        parameters=[
            OpenApiParameter("after", str, description="a batch id: the page after it"),
            OpenApiParameter("limit", int, description="1–100 (20)"),
        ],
        responses={200: BatchListSerializer, **_errors()},
        operation_id="batches_list",
    )
    def get(self, request: Request) -> Response:
        found, more = batches.list_batches(
            principal_of(request), after=request.query_params.get("after"), limit=request.query_params.get("limit")
        )
        record_event_later(
            actions.TASK_STATUS,
            actor=principal_of(request),
            object_type="inference.filebatch",
            details={"count": len(found)},
        )
        return Response(list_page([batch_object(b) for b in found], more))


class BatchDetailView(APIView):
    """``GET /v1/batches/{id}``: status, request counts, output and error files, timestamps."""

    permission_classes = [CanRead]

    @extend_schema(responses={200: BatchSerializer, **_errors(404)}, operation_id="batches_retrieve")
    def get(self, request: Request, batch_id: str) -> Response:
        batch = batches.get_batch(principal_of(request), batch_id)
        auditing.record_status_read(principal_of(request), batch)
        return Response(batch_object(batch))


class BatchCancelView(APIView):
    """``POST /v1/batches/{id}/cancel`` → the batch, ``cancelling`` (then ``cancelled``)."""

    permission_classes = [CanSubmit]

    @extend_schema(request=None, responses={200: BatchSerializer, **_errors(404, 409)}, operation_id="batches_cancel")
    def post(self, request: Request, batch_id: str) -> Response:
        return Response(batch_object(batches.cancel_batch(principal_of(request), batch_id)))
