"""The inference app's models, a module per topic (the app registry loads them from here):

registry.py   ModelEndpoint, AgentRoute, AgentRouteEntry: which servers, in which order
tasks.py      InferenceTask (every request's record, its lifecycle and outcome), TaskBatch
queue.py      QueueEntry: the priority broker's table
records.py    LegalHold, Feedback
base.py       the querysets' shared row locks and SQL row readers
../filebatch_models.py, ../quality_models.py   the Files and Batch API; quality and drift
"""

from apps.gpu.priority import Priority
from apps.inference.filebatch_models import FileBatch, FilePart, StoredFile
from apps.inference.models.queue import QueueEntry, QueueEntryQuerySet
from apps.inference.models.records import Feedback, LegalHold, LegalHoldQuerySet
from apps.inference.models.registry import AgentRoute, AgentRouteEntry, ModelEndpoint, validate_backend_url
from apps.inference.models.tasks import (
    DEADLINE_EXCEEDED,
    DEADLINE_MESSAGE,
    LIVE_STATUSES,
    OUTCOME_FIELDS,
    InferenceTask,
    InferenceTaskQuerySet,
    TaskBatch,
    TaskBatchQuerySet,
)
from apps.inference.quality_models import ModelDrift, ModelQualityWeek
from apps.inference.workflow_models import Workflow, WorkflowRun, WorkflowRunStep, WorkflowStep

__all__ = [
    "DEADLINE_EXCEEDED",
    "DEADLINE_MESSAGE",
    "LIVE_STATUSES",
    "OUTCOME_FIELDS",
    "AgentRoute",
    "AgentRouteEntry",
    "Feedback",
    "FileBatch",
    "FilePart",
    "InferenceTask",
    "InferenceTaskQuerySet",
    "LegalHold",
    "LegalHoldQuerySet",
    "ModelDrift",
    "ModelEndpoint",
    "ModelQualityWeek",
    "Priority",
    "QueueEntry",
    "QueueEntryQuerySet",
    "StoredFile",
    "TaskBatch",
    "TaskBatchQuerySet",
    "Workflow",
    "WorkflowRun",
    "WorkflowRunStep",
    "WorkflowStep",
    "validate_backend_url",
]
