"""Helpers for the async queue tests: submit through the API, drain the broker in order."""

from __future__ import annotations

from typing import Any

from apps.inference.broker import PriorityBroker
from apps.inference.models import QueueEntry
from apps.inference.queue import list_key


def ask(client: Any, text: str, priority: str = "normal", **extra: Any) -> Any:
    body = {
        "agent_type": "Chat",
        "messages": [{"role": "user", "content": text}],
        "priority": priority,
        "max_tokens": 4,
        **extra,
    }
    return client.post("/v1/async/submit", body, format="json")


def submit(client: Any, text: str, priority: str = "normal", **extra: Any) -> str:
    response = ask(client, text, priority, **extra)
    assert response.status_code == 202, response.content
    return response.json()["task_id"]


def drain(limit: int | None = None) -> list[str]:
    """Task ids in the order the broker delivers them (each delivery acknowledged)."""
    broker = PriorityBroker(list_key=list_key())
    order: list[str] = []
    while limit is None or len(order) < limit:
        delivered = broker._claim()
        if not delivered:
            break
        for ack_id, _payload in delivered:
            order.append(str(QueueEntry.objects.get(pk=ack_id).task_id))
            broker.acknowledge(ack_id)
    return order
