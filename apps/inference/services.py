"""Verbs of inference that are not a request to a model: the models list. A request to a model
goes through the pipeline (apps/inference/pipeline/)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.db import close_old_connections
from django.utils import timezone

from apps.accounts.services import Principal
from apps.inference import router

T = TypeVar("T")


def db_unit(func: Callable[..., T]) -> Callable[..., T]:
    """A unit of DB work run in a worker thread (outside Django's request cycle): drop a stale or
    expired connection first, and release it after when connections are not persistent."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            close_old_connections()

    return wrapper


# --- models list ---------------------------------------------------------------------------


def list_models(principal: Principal) -> list[dict[str, Any]]:
    """Enabled models and agent types, in the OpenAI ``/v1/models`` shape."""
    snap = router.snapshot()
    created = int((timezone.now() - timedelta(days=0)).timestamp())
    data = [
        {
            "id": m.name,
            "object": "model",
            "created": created,
            "owned_by": "medai",
            "medai": {"kind": "model", "backend": m.kind, "context_length": m.context_length, "rank": m.rank},
        }
        for m in sorted(snap.models.values(), key=lambda m: (m.rank, m.name))
        if m.enabled
    ]
    usable = [a for a in sorted(snap.agents.values(), key=lambda a: a.agent_type) if _usable(a)]
    default = default_agent_type(usable)
    for agent in usable:
        data.append(
            {
                "id": agent.agent_type,
                "object": "model",
                "created": created,
                "owned_by": "medai",
                "medai": {
                    "kind": "agent_type",
                    "models": [e.name for e in agent.endpoints if e.enabled],
                    "description": agent.description,
                    "default": agent.agent_type == default,
                },
            }
        )
    return data


def _usable(agent: Any) -> bool:
    return bool(agent.enabled and any(e.enabled for e in agent.endpoints))


FALLBACK_DEFAULT = "MedicalQA"


def default_agent_type(agents: list[Any]) -> str | None:
    """The agent type a client (the Ask page) selects first, of those usable now: the route an
    admin marked ``is_default``, else MedicalQA, else the first; never a disabled one."""
    for agent in agents:
        if agent.is_default:
            return str(agent.agent_type)
    for agent in agents:
        if agent.agent_type.lower() == FALLBACK_DEFAULT.lower():
            return str(agent.agent_type)
    return str(agents[0].agent_type) if agents else None
