"""Helpers of the Batch API tests: upload a JSONL file, create a batch, run the worker (in-process,
as django-q2 runs it), read a batch's files."""

from __future__ import annotations

import json
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile

from apps.inference import queue
from apps.inference.broker import PriorityBroker
from apps.inference.models import InferenceTask, QueueEntry

CHAT = "/v1/chat/completions"


def line(custom_id: str, content: str = "Name one vital sign.", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": "Chat", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **body},
    }


def jsonl(*lines: Any) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def upload(client: Any, data: bytes, purpose: str = "batch", name: str = "night.jsonl") -> Any:
    form = {"file": SimpleUploadedFile(name, data, content_type="application/jsonl"), "purpose": purpose}
    return client.post("/v1/files", form, format="multipart")


def create(client: Any, lines: list[Any], **fields: Any) -> Any:
    """Upload ``lines`` and create a batch of them: the create's response."""
    uploaded = upload(client, jsonl(*lines))
    assert uploaded.status_code == 200, uploaded.content
    body = {"input_file_id": uploaded.json()["id"], "endpoint": CHAT, "completion_window": "24h", **fields}
    return client.post("/v1/batches", body, format="json")


def made(client: Any, lines: list[Any], **fields: Any) -> dict[str, Any]:
    response = create(client, lines, **fields)
    assert response.status_code == 200, response.content
    return response.json()


def tasks_of(batch_id: str) -> Any:
    return InferenceTask.objects.filter(batch_id=batch_id.removeprefix("batch_"))


def live(batch_id: str) -> int:
    return tasks_of(batch_id).filter(status__in=("queued", "processing")).count()


def run_worker(limit: int = 100_000, each: Any = None) -> int:
    """Deliver, run and acknowledge entries until the queue is empty, as a django-q2 cluster does
    (``each()`` after every run); the runs made."""
    broker = PriorityBroker(list_key=queue.list_key())
    runs = 0
    while runs < limit:
        delivered = broker._claim()
        if not delivered:
            break
        for ack_id, _payload in delivered:
            task_id = QueueEntry.objects.filter(pk=ack_id).values_list("task_id", flat=True).first()
            if task_id is not None:
                queue.run_task(str(task_id), collate=False)
                runs += 1
                if each is not None:
                    each()
            broker.acknowledge(ack_id)
    return runs


def content(client: Any, file_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/files/{file_id}/content")
    assert response.status_code == 200, response.content
    return [json.loads(x) for x in response.content.decode().splitlines()]
