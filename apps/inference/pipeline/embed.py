"""Embeddings and rerank through the one pipeline: the same steps as chat (authorize with the
``chat`` scope, validate, rate limit + quota reserve, route to the endpoints that declare the
capability, admit, dispatch with failover, reconcile, audit, metrics), each a plan and a run:

    plan_embeddings(principal, data)    → EmbedPlan   (authorize → validate → limits → route)
    run_embeddings(plan)                → OpenAI's CreateEmbeddingResponse (admit → dispatch)
    plan_rerank(principal, data)        → EmbedPlan
    run_rerank(plan)                    → {model, results[{index, relevance_score}], usage}

The planners take a parsed JSON object (a body, or a Batch API line's ``body``) so the HTTP view
and a queue worker call the same functions; the caller records the outcome (``record.record_later``).

Medai asks llama.cpp, vLLM and OpenAI-compatible servers for base64 (``BASE64_KINDS``: little-endian
float32, as OpenAI sends it), the others for floats, and answers either encoding from either: a
vector's digits are the costly part of the relay (8 vectors of 576 floats, measured side by side
on one loaded machine: 5.7 ms to parse as JSON numbers and 9.0 ms to print, against 0.08 and
0.2 ms as base64, 0.16 ms to decode and check it), and the official client asks for base64 unless
told otherwise, so its requests never turn a vector into digits at all. Each
answered vector is checked (base64 of whole float32s, or a list of numbers), or the answer is a
502. ``dimensions`` is forwarded only to kinds that honour it (vLLM, another OpenAI-compatible
server); llama.cpp ignores it silently, so there it is a 400 naming the field.

Rerank is either the endpoint's own ``/rerank`` (``rerank = native``: llama.cpp ``--reranking`` on
a reranker model, vLLM) or, for an endpoint that only embeds (``rerank = embeddings``, the embedded
default: SmolLM2 has no ranking head, so llama.cpp's ``--reranking`` on it scores with a head the
model lacks), the cosine similarity of the query's and each document's embeddings from one call.
"""

from __future__ import annotations

import base64
import math
import operator
import sys
import time
import uuid
from array import array
from dataclasses import dataclass, field
from typing import Any

from apps.accounts.models import SCOPE_CHAT
from apps.accounts.services import Principal
from apps.audit.context import get_correlation_id, get_origin
from apps.inference import backends, router
from apps.inference.errors import ApiError
from apps.inference.models import ModelEndpoint, Priority
from apps.inference.pipeline import gate, steps
from apps.inference.pipeline.plan import ChatPlan
from apps.inference.pipeline.run import _call_backend, _int
from apps.inference.validation.embeddings import validate_embeddings, validate_rerank

# Kinds of server that honour ``dimensions`` (llama.cpp, TGI and Ollama ignore it).
DIMENSIONS_KINDS = frozenset({ModelEndpoint.Kind.VLLM, ModelEndpoint.Kind.OPENAI})
# Kinds of server asked for base64 vectors (OpenAI's little-endian float32), the others for floats.
BASE64_KINDS = frozenset({ModelEndpoint.Kind.LLAMACPP, ModelEndpoint.Kind.VLLM, ModelEndpoint.Kind.OPENAI})


@dataclass
class EmbedPlan(ChatPlan):
    """A ChatPlan (what the record, reconcile and dispatch steps read) with the validated request."""

    request: dict[str, Any] = field(default_factory=dict)


def _quota_req(texts: list[Any]) -> dict[str, Any]:
    # The quota step's estimate reads ``messages`` (bytes of JSON: an upper bound of the tokens);
    # an embedding generates nothing, so one completion token is held.
    return {"messages": texts, "max_tokens": 1}


def _plan(principal: Principal, req: dict[str, Any], route: router.Route, kind: str, correlation_id: str) -> EmbedPlan:
    return EmbedPlan(
        principal=principal,
        route=route,
        payload={},
        stream=False,
        include_usage=False,
        priority=Priority.NORMAL,
        requested_model=req["model"],
        correlation_id=correlation_id or get_correlation_id(),
        end_user=req.get("user") or "",
        kind=kind,
        request=req,
    )


async def _plan_async(
    principal: Principal,
    req: dict[str, Any],
    texts: list[Any],
    kind: str,
    correlation_id: str,
    client_ip: str | None,
    user_agent: str,
) -> EmbedPlan:
    limit, [reservation] = await gate.limit_and_reserve_async(
        principal, [_quota_req(texts)], ip=client_ip, in_flight=True
    )
    try:
        route = await gate.route_capability(req["model"], kind)
        if kind == "embeddings" and req.get("dimensions") is not None:
            route = _with_dimensions(route, req["model"])
    except BaseException:
        gate.release(reservation)
        raise
    plan = _plan(principal, req, route, kind, correlation_id)
    plan.rate_limit, plan.reservation = limit, reservation
    plan.client_ip, plan.user_agent = client_ip, user_agent
    plan.purpose_of_use = get_origin().purpose_of_use
    return plan


def _with_dimensions(route: router.Route, model: str) -> router.Route:
    candidates = tuple(e for e in route.candidates if e.kind in DIMENSIONS_KINDS)
    if not candidates:
        raise ApiError(
            400,
            "unsupported_parameter",
            f"dimensions: '{model}' cannot shorten its embeddings (its server, {route.candidates[0].kind}, "
            "ignores the parameter); leave it out, or use a model served by vLLM.",
            "dimensions",
        )
    return router.Route(route.requested, route.agent_type, candidates, "")


async def plan_embeddings(
    principal: Principal,
    data: dict[str, Any],
    correlation_id: str = "",
    *,
    client_ip: str | None = None,
    user_agent: str = "",
) -> EmbedPlan:
    """Authorize (scope ``chat``), validate, rate-limit, reserve and route one embeddings request
    (a parsed JSON object); ApiError on a refusal (the reservation then released)."""
    gate.authorize(principal, SCOPE_CHAT)
    steps.enter(steps.VALIDATE)
    req = validate_embeddings(data)
    return await _plan_async(principal, req, req["inputs"], "embeddings", correlation_id, client_ip, user_agent)


async def plan_rerank(
    principal: Principal,
    data: dict[str, Any],
    correlation_id: str = "",
    *,
    client_ip: str | None = None,
    user_agent: str = "",
) -> EmbedPlan:
    """As ``plan_embeddings``, for a rerank request (routed to endpoints that declare rerank)."""
    gate.authorize(principal, SCOPE_CHAT)
    steps.enter(steps.VALIDATE)
    req = validate_rerank(data)
    texts = [req["query"], *req["documents"]]
    return await _plan_async(principal, req, texts, "rerank", correlation_id, client_ip, user_agent)


# --- run ---------------------------------------------------------------------------------------


# A vector as the backend answered it, checked: little-endian float32 bytes (its base64 decoded),
# or its list of numbers.
Vector = bytes | list[float]


def _wire(endpoint: router.EndpointInfo) -> str:
    return "base64" if endpoint.kind in BASE64_KINDS else "float"


def _embeddings_payload(endpoint: router.EndpointInfo, inputs: list[Any]) -> dict[str, Any]:
    return {"model": endpoint.backend_model, "input": inputs, "encoding_format": _wire(endpoint)}


def _checked(item: Any) -> Vector:
    """One answered vector, checked (ValueError if it is none): base64 that decodes to whole
    float32s, or a non-empty list of numbers (whatever a server was asked for, either is taken)."""
    if isinstance(item, str):
        raw = base64.b64decode(item, validate=True)  # binascii.Error is a ValueError
        if not raw or len(raw) % 4:
            raise ValueError("not float32s")
        return raw
    if isinstance(item, list) and item:
        array("d", item)  # TypeError or OverflowError on anything but a number: checked at C speed
        return item
    raise ValueError("no vector")


def _vectors(endpoint: router.EndpointInfo, data: dict[str, Any], count: int) -> list[Vector]:
    """The ``count`` vectors of an ``/embeddings`` answer, in input order; 502 if malformed."""
    items = data.get("data")
    if not isinstance(items, list) or len(items) != count:
        raise _malformed(endpoint, "embeddings")
    try:
        return [_checked(d["embedding"]) for d in sorted(items, key=lambda d: d.get("index", 0))]
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
        raise _malformed(endpoint, "embeddings") from None


async def _embed(plan: EmbedPlan, inputs: list[Any], dimensions: int | None = None) -> list[Vector]:
    """The admit and dispatch steps of one ``/embeddings`` call: the vectors, in input order."""

    def call(endpoint: router.EndpointInfo) -> Any:
        payload = _embeddings_payload(endpoint, inputs)
        if dimensions is not None:
            payload["dimensions"] = dimensions
        return backends.post_json(endpoint, "/embeddings", payload)

    plan.backend_started = time.perf_counter()
    data, lease = await _dispatch(plan, call, "input")
    lease.release()
    assert plan.endpoint is not None
    vectors = _vectors(plan.endpoint, data, len(inputs))
    plan.prompt_tokens = _int((data.get("usage") or {}).get("prompt_tokens"))
    return vectors


async def _dispatch(plan: EmbedPlan, call: Any, param: str) -> tuple[Any, Any]:
    """``_call_backend`` (admit → dispatch, failover), with a text too long for the model named as
    the caller's field: the backend's fault classification says ``messages`` (chat's word), and
    llama.cpp's own advice ("increase the physical batch size") is for its operator."""
    try:
        return await _call_backend(plan, call)
    except ApiError as exc:
        if exc.code == "context_length_exceeded":
            endpoint = plan.endpoint
            limit = f" ({endpoint.context_length} tokens per text)" if endpoint and endpoint.context_length else ""
            name = endpoint.name if endpoint else plan.requested_model
            exc.param = param
            exc.message = (
                f"{param}: a text is longer than '{name}' embeds at once{limit}; shorten or split it. {exc.message}"
            )
        raise


def _malformed(endpoint: router.EndpointInfo, what: str) -> ApiError:
    return ApiError(502, "backend_error", f"The model server {endpoint.name} answered {what} in an unexpected shape.")


def _base64(vector: Vector) -> str:
    """OpenAI's base64: the little-endian float32 bytes."""
    if isinstance(vector, bytes):
        return base64.b64encode(vector).decode("ascii")
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _floats(vector: Vector) -> list[float]:
    if isinstance(vector, list):
        return vector
    packed = array("f")
    packed.frombytes(vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()


async def run_embeddings(plan: EmbedPlan) -> dict[str, Any]:
    """The backend call of a planned embeddings request → OpenAI's CreateEmbeddingResponse."""
    req = plan.request
    vectors = await _embed(plan, req["inputs"], req.get("dimensions"))
    encode = _base64 if req["encoding_format"] == "base64" else _floats
    assert plan.endpoint is not None
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "model": plan.endpoint.name,
        "usage": {"prompt_tokens": plan.prompt_tokens, "total_tokens": plan.prompt_tokens},
    }


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(map(operator.mul, a, b))
    norm = math.sqrt(sum(map(operator.mul, a, a))) * math.sqrt(sum(map(operator.mul, b, b)))
    return dot / norm if norm and math.isfinite(dot / norm) else 0.0


async def _native_rerank(plan: EmbedPlan) -> list[tuple[int, float]]:
    req = plan.request

    def call(endpoint: router.EndpointInfo) -> Any:
        if endpoint.rerank != "native":  # a failover to an embeddings-only endpoint: by its vectors
            return _rerank_by_embeddings_call(endpoint, req)
        payload = {
            "model": endpoint.backend_model,
            "query": req["query"],
            "documents": req["documents"],
            "top_n": len(req["documents"]),
        }
        return backends.post_json(endpoint, "/rerank", payload)

    plan.backend_started = time.perf_counter()
    data, lease = await _dispatch(plan, call, "documents")
    lease.release()
    assert plan.endpoint is not None
    if "vectors" in data:
        return _scores_by_cosine(plan, data)
    results = data.get("results")
    if not isinstance(results, list):
        raise _malformed(plan.endpoint, "a rerank")
    try:
        scores = [(int(r["index"]), float(r["relevance_score"])) for r in results]
    except (KeyError, TypeError, ValueError):
        raise _malformed(plan.endpoint, "a rerank") from None
    if any(not 0 <= i < len(req["documents"]) for i, _ in scores):
        raise _malformed(plan.endpoint, "a rerank")
    usage = data.get("usage") or {}
    plan.prompt_tokens = _int(usage.get("prompt_tokens") or usage.get("total_tokens"))
    return scores


async def _rerank_by_embeddings_call(endpoint: router.EndpointInfo, req: dict[str, Any]) -> dict[str, Any]:
    texts = [req["query"], *req["documents"]]
    data = await backends.post_json(endpoint, "/embeddings", _embeddings_payload(endpoint, texts))
    return {"vectors": data}


def _scores_by_cosine(plan: EmbedPlan, wrapped: dict[str, Any]) -> list[tuple[int, float]]:
    assert plan.endpoint is not None
    data = wrapped["vectors"]
    vectors = [_floats(v) for v in _vectors(plan.endpoint, data, len(plan.request["documents"]) + 1)]
    plan.prompt_tokens = _int((data.get("usage") or {}).get("prompt_tokens"))
    query = vectors[0]
    return [(i, _cosine(query, v)) for i, v in enumerate(vectors[1:])]


async def run_rerank(plan: EmbedPlan) -> dict[str, Any]:
    """The backend call of a planned rerank request: the documents' indexes by relevance, best
    first, ``top_n`` of them (with each ``document`` when ``return_documents``)."""
    req = plan.request
    scores = await _native_rerank(plan)
    scores.sort(key=lambda s: s[1], reverse=True)
    results = []
    for index, score in scores[: req["top_n"]]:
        item: dict[str, Any] = {"index": index, "relevance_score": score}
        if req["return_documents"]:
            item["document"] = {"text": req["documents"][index]}
        results.append(item)
    assert plan.endpoint is not None
    return {
        "id": f"rerank-{uuid.uuid4().hex}",
        "object": "rerank",
        "model": plan.endpoint.name,
        "results": results,
        "usage": {"prompt_tokens": plan.prompt_tokens, "total_tokens": plan.prompt_tokens},
    }
