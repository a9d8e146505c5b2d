"""Multi-agent workflows (``/v1/workflows``): thin views over apps.inference.workflows.

Every run lookup goes through ``WorkflowRun.objects.visible_to(principal)`` (inside the service):
another user's or location's run answers the same 404 as an id that exists nowhere. Starting and
cancelling a run need the async API's ``submit`` scope, reading ``read``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import principal_of
from apps.accounts.permissions import CanRead, CanSubmit
from apps.audit import actions
from apps.audit.services import record_event_later
from apps.inference.api.async_views import RateLimitedView
from apps.inference.api.parsers import SafeJSONParser
from apps.inference.api.serializers import ErrorSerializer, TaskErrorSerializer, list_page
from apps.inference.models import Priority, WorkflowRun
from apps.inference.workflows import runs, shapes

PRIORITIES = [n.lower() for n in Priority.names]
STEP_STATUSES = ["pending", "queued", "processing", "completed", "failed", "cancelled", "expired", "skipped"]


def _errors(*codes: int) -> dict[int, Any]:
    return {code: ErrorSerializer for code in (400, 401, 403, *codes)}


# --- shapes (documentation and the schema tests) -------------------------------------------------


class WorkflowStepSerializer(serializers.Serializer):
    name = serializers.CharField()
    agent_type = serializers.CharField()
    stage = serializers.IntegerField(help_text="Steps of one stage run in parallel; a later stage uses their outputs.")


class WorkflowSerializer(serializers.Serializer):
    name = serializers.CharField()
    object = serializers.ChoiceField(choices=["workflow"])
    description = serializers.CharField()
    steps = WorkflowStepSerializer(many=True)


class WorkflowListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = WorkflowSerializer(many=True)  # type: ignore[assignment]  # documents the list's "data" key


class WorkflowRunRequestSerializer(serializers.Serializer):
    document = serializers.CharField(
        max_length=runs.DOCUMENT_MAX, help_text="The text the steps work on (a clinical note): PHI, stored encrypted."
    )
    priority = serializers.ChoiceField(choices=PRIORITIES, required=False, help_text="Every step's priority (normal).")
    deadline_s = serializers.FloatField(
        min_value=1, required=False, help_text="Seconds: a step still queued then expires, and the run fails."
    )


class WorkflowRunCreatedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    object = serializers.ChoiceField(choices=["workflow.run"])
    status = serializers.ChoiceField(choices=WorkflowRun.Status.values)


class WorkflowRunStepSerializer(serializers.Serializer):
    name = serializers.CharField()
    agent_type = serializers.CharField()
    stage = serializers.IntegerField()
    status = serializers.ChoiceField(
        choices=STEP_STATUSES, help_text="Its task's status; pending before its stage is queued, skipped if never."
    )
    task_id = serializers.UUIDField(allow_null=True, help_text="Its task (GET /v1/async/status/{id}).")
    model = serializers.CharField(allow_null=True, help_text="The model that answered.")
    queued_at = serializers.DateTimeField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    queue_wait_ms = serializers.IntegerField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True, help_text="From its start to its end.")
    error = TaskErrorSerializer(allow_null=True)


class WorkflowRunResultSerializer(serializers.Serializer):
    content = serializers.CharField(help_text="The last stage's output.")


class WorkflowRunSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    object = serializers.ChoiceField(choices=["workflow.run"])
    workflow = serializers.CharField()
    status = serializers.ChoiceField(
        choices=WorkflowRun.Status.values, help_text="queued → running → completed | failed | cancelled."
    )
    priority = serializers.ChoiceField(choices=PRIORITIES)
    stage = serializers.IntegerField(help_text="The stage running, or the last one run.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    deadline = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    steps = WorkflowRunStepSerializer(many=True)
    result = WorkflowRunResultSerializer(allow_null=True, help_text="Once completed, until its retention ends.")
    error = TaskErrorSerializer(allow_null=True, help_text="Once failed or cancelled: which step, and why.")
    waiting = serializers.CharField(allow_null=True, help_text="Why the next stage is not queued yet (a limit).")
    result_expires_at = serializers.DateTimeField(allow_null=True)
    content_purged_at = serializers.DateTimeField(allow_null=True)


def _workflow(w: Any) -> dict[str, Any]:
    return {
        "name": w.name,
        "object": "workflow",
        "description": w.description,
        "steps": [
            {"name": s.name, "agent_type": s.agent_type.agent_type, "stage": s.stage}
            for s in sorted(w.steps.all(), key=lambda s: (s.stage, s.name))
        ],
    }


# --- views ----------------------------------------------------------------------------------------


class WorkflowsView(APIView):
    """``GET /v1/workflows``: the active workflows and their steps."""

    permission_classes = [CanRead]

    @extend_schema(responses={200: WorkflowListSerializer, **_errors()}, operation_id="workflows_list")
    def get(self, request: Request) -> Response:
        found = runs.list_workflows(principal_of(request))
        record_event_later(
            actions.WORKFLOW_LIST,
            actor=principal_of(request),
            object_type="inference.workflow",
            details={"count": len(found)},
        )
        return Response({"object": "list", "data": [_workflow(w) for w in found]})


class WorkflowRunsView(RateLimitedView):
    """``POST /v1/workflows/{name}/runs {document, priority, deadline_s}`` → 202 ``{id, object, status}``."""

    parser_classes = [SafeJSONParser]
    permission_classes = [CanSubmit]  # the pipeline's authorize step runs again in the service, as for batches

    @extend_schema(
        request=WorkflowRunRequestSerializer,
        responses={202: WorkflowRunCreatedSerializer, **_errors(404, 409, 413, 429, 503)},
        operation_id="workflow_runs_create",
    )
    def post(self, request: Request, name: str) -> Response:
        run = runs.start_run(
            principal_of(request),
            name,
            request.data,
            getattr(request, "correlation_id", ""),
            client_ip=request.META.get("REMOTE_ADDR"),
        )
        return Response({"id": str(run.pk), "object": "workflow.run", "status": run.status}, status=202)


class WorkflowRunListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = WorkflowRunSerializer(  # type: ignore[assignment]  # documents the list's "data" key
        many=True, help_text="Newest first; each without its result (read the run for it)."
    )
    first_id = serializers.UUIDField(allow_null=True)
    last_id = serializers.UUIDField(allow_null=True)
    has_more = serializers.BooleanField()


class WorkflowRunListView(APIView):
    """``GET /v1/workflows/runs``: the caller's runs (a location admin's: the location's), newest
    first, ``?workflow=&status=&limit=&after=``."""

    permission_classes = [CanRead]

    @extend_schema(
        parameters=[
            OpenApiParameter("workflow", str, description="Only the runs of this workflow (its name)."),
            OpenApiParameter(
                "status", str, enum=WorkflowRun.Status.values, description="Only the runs in this status."
            ),
            OpenApiParameter("limit", int, description=f"1 to {runs.LIST_MAX} (default {runs.LIST_DEFAULT})."),
            OpenApiParameter("after", str, description="The last id of the previous page."),
        ],
        responses={200: WorkflowRunListSerializer, **_errors()},
        operation_id="workflow_runs_list",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        found, more = runs.list_runs(
            principal_of(request),
            workflow=params.get("workflow"),
            status=params.get("status"),
            after=params.get("after"),
            limit=params.get("limit"),
        )
        record_event_later(
            actions.WORKFLOW_RUN_LIST,
            actor=principal_of(request),
            object_type="inference.workflowrun",
            details={"count": len(found)},
        )
        return Response(list_page(list(WorkflowRunSerializer(found, many=True).data), more))


class WorkflowRunView(APIView):
    """``GET /v1/workflows/runs/{id}``: status, per-step status and timings, the result or the error."""

    permission_classes = [CanRead]

    @extend_schema(responses={200: WorkflowRunSerializer, **_errors(404)}, operation_id="workflow_runs_retrieve")
    def get(self, request: Request, run_id: str) -> Response:
        return Response(WorkflowRunSerializer(runs.read_run(principal_of(request), run_id)).data)


class WorkflowRunCancelView(APIView):
    """``POST /v1/workflows/runs/{id}/cancel``: the run, cancelled (its queued steps with it)."""

    permission_classes = [CanSubmit]

    @extend_schema(
        request=None, responses={200: WorkflowRunSerializer, **_errors(404, 409)}, operation_id="workflow_runs_cancel"
    )
    def post(self, request: Request, run_id: str) -> Response:
        run = runs.cancel_run(principal_of(request), run_id)
        return Response(WorkflowRunSerializer(shapes.run_object(run)).data)
