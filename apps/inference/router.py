"""Routing: a requested model name or agent type → the ordered endpoints that may answer it.

The registry is read from the database into an immutable snapshot that each process keeps for
``MEDAI_ROUTE_CACHE_SECONDS`` (so routing costs no query per request). Saving a model or route in
this process drops the snapshot at once; other processes see the change within that TTL.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from django.conf import settings

from apps.inference.models import AgentRoute, ModelEndpoint


@dataclass(frozen=True)
class EndpointInfo:
    id: int
    name: str
    kind: str
    base_url: str
    backend_model: str
    api_key: str = field(repr=False)
    context_length: int
    vram_mb: int
    rank: int
    enabled: bool
    supports_embeddings: bool
    rerank: str = ""  # "" | "native" | "embeddings" (ModelEndpoint.rerank)

    @classmethod
    def of(cls, ep: ModelEndpoint) -> EndpointInfo:
        """The registry's view of one endpoint row (what routing and the backend client need)."""
        return cls(
            id=ep.pk,
            name=ep.name,
            kind=ep.kind,
            base_url=ep.base_url.rstrip("/"),
            backend_model=ep.backend_model,
            api_key=ep.api_key or "",
            context_length=ep.context_length,
            vram_mb=ep.vram_mb,
            rank=ep.rank,
            enabled=ep.enabled,
            supports_embeddings=ep.supports_embeddings,
            rerank=ep.rerank,
        )

    @property
    def server_root(self) -> str:
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url


@dataclass(frozen=True)
class Route:
    """The outcome of routing: which endpoints to try, in order."""

    requested: str
    agent_type: str
    candidates: tuple[EndpointInfo, ...]
    system_prompt: str = ""
    # An A/B split (apps/inference/experiments.py): each candidate's weight (all 0: no split), what
    # keeps a caller on an arm, and the arm assigned (a model's name; "" before, or without a split).
    weights: tuple[int, ...] = ()
    sticky: str = "user"
    arm: str = ""


class RoutingError(Exception):
    def __init__(self, status_code: int, code: str, message: str, param: str | None) -> None:
        super().__init__(message)
        self.status_code, self.code, self.message, self.param = status_code, code, message, param


@dataclass(frozen=True)
class _AgentEntry:
    agent_type: str
    endpoints: tuple[EndpointInfo, ...]
    system_prompt: str
    enabled: bool
    description: str = ""
    is_default: bool = False
    weights: tuple[int, ...] = ()
    sticky: str = "user"


@dataclass(frozen=True)
class RegistrySnapshot:
    models: dict[str, EndpointInfo]
    agents: dict[str, _AgentEntry]  # keyed by lower-cased agent type
    loaded_at: float


_lock = threading.Lock()
_snapshot: RegistrySnapshot | None = None


def _load() -> RegistrySnapshot:
    models = {}
    for ep in ModelEndpoint.objects.all():
        models[ep.name] = EndpointInfo.of(ep)
    by_id = {m.id: m for m in models.values()}
    agents = {}
    for route in AgentRoute.objects.prefetch_related("entries"):
        entries = sorted(route.entries.all(), key=lambda e: (e.position, e.pk))
        eps = tuple(by_id[e.endpoint_id] for e in entries)
        agents[route.agent_type.lower()] = _AgentEntry(
            route.agent_type,
            eps,
            route.system_prompt,
            route.enabled,
            description=route.description,
            is_default=route.is_default,
            weights=tuple(e.weight for e in entries),
            sticky=route.split_sticky,
        )
    return RegistrySnapshot(models, agents, time.monotonic())


class SnapshotStale(Exception):
    """``cached_only`` and the snapshot must be (re)loaded: ask again where a query is allowed."""


def snapshot(cached_only: bool = False) -> RegistrySnapshot:
    """The current registry snapshot, reloaded when older than the cache TTL."""
    global _snapshot
    snap = _snapshot
    if snap is None or time.monotonic() - snap.loaded_at > settings.MEDAI_ROUTE_CACHE_SECONDS:
        if cached_only:
            raise SnapshotStale
        with _lock:
            snap = _snapshot = _load()
    return snap


def invalidate() -> None:
    global _snapshot
    _snapshot = None


def resolve(model: str | None, agent_type: str | None, *, cached_only: bool = False) -> Route:
    """Route a request. ``agent_type`` wins; ``model`` may name a model or an agent type.

    When both are given and ``model`` names a model, that model is tried first and the agent's
    own models follow as fallbacks. With ``cached_only`` it makes no query (SnapshotStale instead).
    """
    snap = snapshot(cached_only)
    preferred: EndpointInfo | None = None
    if model:
        preferred = snap.models.get(model)
    if agent_type:
        agent = snap.agents.get(agent_type.lower())
        if agent is None:
            raise RoutingError(
                400,
                "unknown_agent_type",
                f"agent_type: unknown agent type '{agent_type}'. "
                f"Known: {', '.join(sorted(a.agent_type for a in snap.agents.values()))}.",
                "agent_type",
            )
        if model and preferred is None and model.lower() != agent.agent_type.lower():
            raise RoutingError(404, "model_not_found", f"model: unknown model '{model}'.", "model")
        return _agent_route(agent, agent.agent_type, preferred)
    if not model:
        raise RoutingError(
            400, "invalid_request", "model: this field is required (a model name or an agent type).", "model"
        )
    if preferred is not None:
        if not preferred.enabled:
            raise RoutingError(503, "model_disabled", f"Model '{model}' is disabled.", "model")
        return Route(model, "", (preferred,))
    agent = snap.agents.get(model.lower())
    if agent is None:
        raise RoutingError(
            404,
            "model_not_found",
            f"model: unknown model or agent type '{model}'. GET /v1/models lists what is available.",
            "model",
        )
    return _agent_route(agent, model, None)


def _agent_route(agent: _AgentEntry, requested: str, preferred: EndpointInfo | None) -> Route:
    if not agent.enabled:
        raise RoutingError(503, "agent_disabled", f"Agent type '{agent.agent_type}' is disabled.", "agent_type")
    weight_of = dict(zip((e.id for e in agent.endpoints), agent.weights, strict=False))
    ordered = list(agent.endpoints)
    if preferred is not None:  # a model asked for by name: no split
        ordered = [preferred] + [e for e in ordered if e.id != preferred.id]
        weight_of = {}
    candidates = tuple(e for e in ordered if e.enabled)
    if not candidates:
        raise RoutingError(
            503, "no_model_available", f"No enabled model serves agent type '{agent.agent_type}'.", "agent_type"
        )
    weights = tuple(weight_of.get(e.id, 0) for e in candidates)
    return Route(
        requested,
        agent.agent_type,
        candidates,
        agent.system_prompt,
        weights if any(weights) else (),
        agent.sticky,
    )


# What an endpoint must declare to serve a capability (``resolve_capability``).
CAPABILITIES = {
    "embeddings": ("embeddings", lambda e: e.supports_embeddings),
    "rerank": ("rerank", lambda e: bool(e.rerank)),
}


def resolve_capability(model: str | None, capability: str, *, cached_only: bool = False) -> Route:
    """Route an embeddings or rerank request: ``model`` (a model or an agent type, as ``resolve``)
    → its candidates that declare ``capability``; a model that declares none is a 400 naming
    ``model`` (a chat-only model cannot embed), as is an agent route with no such model."""
    route = resolve(model, None, cached_only=cached_only)
    label, serves = CAPABILITIES[capability]
    candidates = tuple(e for e in route.candidates if serves(e))
    if not candidates:
        names = ", ".join(sorted(e.name for e in snapshot(cached_only).models.values() if e.enabled and serves(e)))
        raise RoutingError(
            400,
            "model_not_supported",
            f"model: '{model}' does not serve {label}"
            + (f"; models that do: {names}." if names else "; no model here serves it."),
            "model",
        )
    return Route(route.requested, route.agent_type, candidates, "")
