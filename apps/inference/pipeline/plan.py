"""A request through the steps before a backend: the ``ChatPlan`` (everything decided before a
model is called), built from an authenticated Principal and a validated request.

    plan_chat(principal, body)         sync chat: authorize → validate → rate limit → quota
                                       reserve → route (on the event loop; a cache miss: a thread)
    plan_completion(principal, body)   sync (legacy) completions: the same steps, its own
                                       validation and payload (``kind`` "completions")
    plan_tasks(principal, items)       the async API (submit, submit-batch): the same steps, once
                                       per HTTP request; each item validated and routed once
    plan_task(principal, item)         a single submit on the event loop (the same steps)
    task_plan(task, route)             the worker: a queued task's plan, to dispatch
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.utils import timezone

from apps.accounts import governance
from apps.accounts.models import SCOPE_CHAT, SCOPE_SUBMIT
from apps.accounts.services import Principal
from apps.audit.context import get_correlation_id, get_origin
from apps.inference import answer_features, conversations, experiments, router
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask, Priority
from apps.inference.pipeline import gate
from apps.inference.responses import request as responses_request
from apps.inference.responses import store as responses_store
from apps.inference.responses.request import ResponseRequest
from apps.inference.services import db_unit
from apps.inference.validation.fields import tool_choice_names

# Request fields passed through to the backend unchanged (when the client set them). The tool
# fields are forwarded by ``_tool_fields``; ``user``/``safety_identifier`` are kept on the record;
# what medai cannot forward was refused by validation (apps/inference/validation/).
PASSTHROUGH = (
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "response_format",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)
# The (legacy) completions fields passed through (``prompt`` is set by ``build_completion_plan``).
COMPLETION_PASSTHROUGH = (
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "logit_bias",
)
run_sync = sync_to_async(thread_sensitive=False)
NO_RESERVATION = governance.Reservation(0, 0, None, governance.CHAT)

CHAT = "chat"
COMPLETIONS = "completions"
RESPONSE = responses_store.KIND  # the Responses API, translated onto chat completions (apps/inference/responses/)
# The backend path of each kind of request (under the endpoint's OpenAI base URL).
BACKEND_PATHS = {CHAT: "/chat/completions", COMPLETIONS: "/completions", RESPONSE: "/chat/completions"}


@dataclass
class Attempt:
    endpoint: str
    error: str


@dataclass
class ChatPlan:
    """Everything decided before the backend is called."""

    principal: Principal
    route: router.Route
    payload: dict[str, Any]
    stream: bool
    include_usage: bool
    priority: int
    requested_model: str
    correlation_id: str
    started: float = field(default_factory=time.perf_counter)
    created_at: Any = field(default_factory=timezone.now)
    attempts: list[Attempt] = field(default_factory=list)
    endpoint: router.EndpointInfo | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    backend_started: float | None = None
    # Where the request came from, for its audit event (set by the HTTP view; none for async tasks).
    client_ip: str | None = None
    user_agent: str = ""
    purpose_of_use: str = ""  # the request's X-Purpose-Of-Use (apps/audit/middleware.py)
    tools_offered: int = 0  # tools the model was offered
    tool_calls: int = 0  # tool calls it answered with
    end_user: str = ""  # the caller's end user (OpenAI's ``user`` / ``safety_identifier``)
    # What the quota step reserved, settled by the reconcile step (apps/accounts/governance.py).
    reservation: governance.Reservation = NO_RESERVATION
    rate_limit: governance.RateLimit = governance.NO_LIMIT
    task_id: uuid.UUID | None = None  # an async task's id, chosen at planning (its quota hold's name)
    # What is asked: chat (messages), completions (a prompt), a response (the Responses API,
    # sent as chat), embeddings or rerank; InferenceTask.kind.
    kind: str = CHAT
    # More fields of the request's record (a Responses request: its id; a stored response's
    # conversation and Response, the end of their retention).
    record_extra: dict[str, Any] = field(default_factory=dict)
    response: ResponseRequest | None = None  # a Responses request: what it asked, as checked
    # ``store: true`` on chat: the exchange is kept (apps/inference/conversations.py), with the answer.
    storage: conversations.Storage | None = None
    answer: dict[str, Any] | None = None
    # What quality monitoring keeps of the answer (its length, finish reason, refusal), taken from
    # it before it is gone (apps/inference/answer_features.py); None: no answer (a failure, a cache hit).
    answer_features: answer_features.AnswerFeatures | None = None
    # The response cache (apps/inference/response_cache.py): the client's Cache-Control bypass
    # ("", "no-cache", "no-store"), and the entry that answered when it did.
    cache_bypass: str = ""
    cache_hit: dict[str, Any] | None = None

    @property
    def backend_path(self) -> str:
        return BACKEND_PATHS[self.kind]

    @property
    def stored(self) -> bool:
        """Whether a follow-up may name this request as soon as it is answered: a stored exchange
        (``store: true`` on chat) or a stored Response (``store`` on ``/v1/responses``). Its record
        is committed before the answer, or the stream's end, is sent (``run.record_outcome``)."""
        return self.storage is not None or (self.response is not None and self.response.store)


Validator = Callable[[bytes], dict[str, Any]]
Builder = Callable[[Principal, dict[str, Any], router.Route, str], "ChatPlan"]


def _check_chat(
    principal: Principal, body: bytes, client_ip: str | None, validate: Validator = gate.validate_chat
) -> tuple[dict[str, Any], governance.RateLimit, governance.Reservation]:
    gate.authorize(principal, SCOPE_CHAT)
    req = validate(body)
    limit, [reservation] = gate.limit_and_reserve(principal, [req], ip=client_ip, in_flight=True)
    return req, limit, reservation


async def _check_chat_async(
    principal: Principal, body: bytes, client_ip: str | None, validate: Validator = gate.validate_chat
) -> tuple[dict[str, Any], governance.RateLimit, governance.Reservation]:
    gate.authorize(principal, SCOPE_CHAT)
    req = validate(body)
    limit, [reservation] = await gate.limit_and_reserve_async(principal, [req], ip=client_ip, in_flight=True)
    return req, limit, reservation


def _cap_completion(plan: ChatPlan, reservation: governance.Reservation) -> None:
    """A request without ``max_tokens`` under a token quota is capped at the tokens held for it,
    so that what it uses never exceeds what was reserved (the quota stays exact)."""
    if reservation.completion_cap and "max_tokens" not in plan.payload and "max_completion_tokens" not in plan.payload:
        plan.payload["max_tokens"] = reservation.completion_cap


def _chat_plan(
    principal: Principal,
    req: dict[str, Any],
    route: router.Route,
    checked: tuple[Any, governance.RateLimit, governance.Reservation],
    correlation_id: str,
    client_ip: str | None,
    user_agent: str,
    build: Builder | None = None,
) -> ChatPlan:
    plan = (build or build_plan)(principal, req, route, correlation_id)
    plan.client_ip, plan.user_agent = client_ip, user_agent
    plan.purpose_of_use = get_origin().purpose_of_use
    plan.rate_limit, plan.reservation = checked[1], checked[2]
    _cap_completion(plan, checked[2])
    if req.get("store"):
        plan.storage = conversations.begin(
            principal,
            payload=plan.payload,
            model=req.get("model") or "",
            agent_type=req.get("agent_type") or "",
            route_system=_route_system(route, req),
            conversation_id=req.get("conversation_id"),
        )
    return plan


def _route_system(route: router.Route, req: dict[str, Any]) -> bool:
    """Whether ``build_plan`` put the route's system prompt first (the caller sent none)."""
    return bool(route.system_prompt) and not any(m["role"] in ("system", "developer") for m in req["messages"])


def _continues(req: dict[str, Any]) -> uuid.UUID | None:
    """The stored conversation a request continues (checked to be the caller's before any call)."""
    return req.get("conversation_id") if req.get("store") else None


async def plan_chat(
    principal: Principal,
    body: bytes,
    correlation_id: str = "",
    *,
    client_ip: str | None = None,
    user_agent: str = "",
) -> ChatPlan:
    """Authorize, validate, rate-limit, reserve and route one sync chat request (ApiError on a
    refusal). On the event loop, the admission's Redis round trip awaited (the loop serves others
    meanwhile); only a route whose registry snapshot is stale takes a thread."""
    return await _plan_sync(principal, body, correlation_id, client_ip, user_agent, gate.validate_chat, build_plan)


async def plan_completion(
    principal: Principal,
    body: bytes,
    correlation_id: str = "",
    *,
    client_ip: str | None = None,
    user_agent: str = "",
) -> ChatPlan:
    """``plan_chat`` of a (legacy) completions request: the same steps, its own validation
    (``gate.validate_completion``) and payload (``build_completion_plan``)."""
    return await _plan_sync(
        principal, body, correlation_id, client_ip, user_agent, gate.validate_completion, build_completion_plan
    )


async def _plan_sync(
    principal: Principal,
    body: bytes,
    correlation_id: str,
    client_ip: str | None,
    user_agent: str,
    validate: Validator,
    build: Builder,
) -> ChatPlan:
    checked = await _check_chat_async(principal, body, client_ip, validate)
    req = checked[0]
    try:
        route = await gate.route(req.get("model"), req.get("agent_type"))
        if (conversation_id := _continues(req)) is not None:
            await gate.run_sync(db_unit(conversations.check_conversation))(principal, conversation_id)
    except BaseException:
        gate.release(checked[2])
        raise
    return _chat_plan(principal, req, route, checked, correlation_id, client_ip, user_agent, build)


async def plan_response(
    principal: Principal,
    body: bytes,
    correlation_id: str = "",
    *,
    client_ip: str | None = None,
    user_agent: str = "",
) -> ChatPlan:
    """A Responses request (``POST /v1/responses``) through the same steps as a chat request:
    authorize (``chat``) → validate (its shapes; a ``previous_response_id``'s stored conversation,
    read in a thread; the chat request it becomes) → rate limit → quota reserve → route. The plan's
    ``response`` is the checked request, with the conversation it sends (without its instructions:
    what a stored response keeps); its record is the response's (``kind="response"``, its id)."""
    gate.authorize(principal, SCOPE_CHAT)
    rr = gate.validate_response(body)
    history: list[dict[str, Any]] = []
    if rr.previous_response_id is not None:
        history = await run_sync(db_unit(responses_store.conversation))(principal, rr.previous_response_id)
    req = responses_request.chat_request(rr, history)
    rr.conversation = history + rr.messages
    limit, [reservation] = await gate.limit_and_reserve_async(principal, [req], ip=client_ip, in_flight=True)
    try:
        route = await gate.route(req.get("model"), req.get("agent_type"))
    except BaseException:
        gate.release(reservation)
        raise
    plan = _chat_plan(principal, req, route, (req, limit, reservation), correlation_id, client_ip, user_agent)
    plan.kind, plan.response = RESPONSE, rr
    plan.record_extra = {"id": uuid.uuid4()}
    return plan


def plan_chat_sync(
    principal: Principal,
    body: bytes,
    correlation_id: str = "",
    *,
    client_ip: str | None = None,
    user_agent: str = "",
) -> ChatPlan:
    """``plan_chat`` where a query is allowed (a sync entry point, a worker thread)."""
    checked = _check_chat(principal, body, client_ip)
    req = checked[0]
    try:
        route = gate.route_sync(req.get("model"), req.get("agent_type"))
        if (conversation_id := _continues(req)) is not None:
            conversations.check_conversation(principal, conversation_id)
    except BaseException:
        gate.release(checked[2])
        raise
    return _chat_plan(principal, req, route, checked, correlation_id, client_ip, user_agent)


def plan_tasks(
    principal: Principal, items: Any, correlation_id: str = "", *, batch: bool = False, client_ip: str | None = None
) -> list[tuple[ChatPlan, float | None]]:
    """Authorize, validate, rate-limit, reserve and route async task requests (one HTTP request: a
    submit of one item, or a ``batch`` of ``items``): [(plan, deadline_s)], each item validated
    and routed once, parsed JSON as it came (never encoded again). A batch's 400 names the item.
    Sync: routing may query."""
    gate.authorize(principal, SCOPE_SUBMIT)
    validated = gate.validate_batch(items) if batch else [gate.validate_task(items[0])]
    task_ids = [uuid.uuid4() for _ in validated]  # chosen now: each task's hold is kept under its id
    _, reservations = gate.limit_and_reserve(
        principal, [req for req, _ in validated], ip=client_ip, refs=[str(i) for i in task_ids]
    )
    try:
        plans = []
        routes: dict[tuple[str, str], router.Route] = {}
        for i, (req, deadline_s) in enumerate(validated):
            key = (req.get("model") or "", req.get("agent_type") or "")
            if key not in routes:
                try:
                    routes[key] = gate.route_sync(*key)
                except ApiError as exc:
                    if batch and exc.status_code == 400:
                        exc.message = f"requests[{i}]: {exc.message}"
                        exc.param = f"requests[{i}].{exc.param}" if exc.param else f"requests[{i}]"
                    raise
            plan = build_plan(principal, req, routes[key], correlation_id)
            plan.reservation, plan.task_id = reservations[i], task_ids[i]
            plan.purpose_of_use = get_origin().purpose_of_use  # kept on the task for its worker's event
            _cap_completion(plan, reservations[i])
            plans.append((plan, deadline_s))
    except BaseException:
        gate.release_all(reservations)
        raise
    return plans


async def plan_task(
    principal: Principal, item: dict[str, Any], correlation_id: str = "", *, client_ip: str | None = None
) -> tuple[ChatPlan, float | None]:
    """``plan_tasks`` of one single submit on the event loop (the submit view under ASGI): the
    same steps, the admission's round trip awaited, the route from the registry snapshot (a stale
    one: in a thread)."""
    gate.authorize(principal, SCOPE_SUBMIT)
    req, deadline_s = gate.validate_task(item)
    task_id = uuid.uuid4()  # chosen now: the task's hold is kept under its id
    _, [reservation] = await gate.limit_and_reserve_async(principal, [req], ip=client_ip, refs=[str(task_id)])
    try:
        route = await gate.route(req.get("model"), req.get("agent_type"))
    except BaseException:
        gate.release(reservation)
        raise
    plan = build_plan(principal, req, route, correlation_id)
    plan.reservation, plan.task_id = reservation, task_id
    plan.purpose_of_use = get_origin().purpose_of_use  # kept on the task for its worker's event
    _cap_completion(plan, reservation)
    return plan, deadline_s


def build_plan(principal: Principal, req: dict[str, Any], route: router.Route, correlation_id: str = "") -> ChatPlan:
    """The backend payload and the record's fields of a validated request on its route (its A/B
    arm assigned: apps/inference/experiments.py)."""
    route = experiments.assign(route, experiments.sticky_key(route, principal.user_id, req.get("conversation_id")))
    messages = [_clean_message(m) for m in req["messages"]]
    if route.system_prompt and not any(m["role"] in ("system", "developer") for m in messages):
        messages.insert(0, {"role": "system", "content": route.system_prompt})
    payload: dict[str, Any] = {"messages": messages}
    for name in PASSTHROUGH:
        if req.get(name) is not None:
            payload[name] = req[name]
    payload.update(_tool_fields(req))
    stream = bool(req.get("stream"))
    include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
    if stream:
        payload["stream"] = True
        # Always ask for usage so the request is recorded with real token counts.
        payload["stream_options"] = {"include_usage": True}
    return ChatPlan(
        principal=principal,
        route=route,
        payload=payload,
        stream=stream,
        include_usage=include_usage,
        priority=req.get("priority", Priority.NORMAL),
        requested_model=req.get("model") or req.get("agent_type") or "",
        correlation_id=correlation_id or get_correlation_id(),
        tools_offered=len(req.get("tools") or ()),  # as the client offered them (before any narrowing)
        end_user=req.get("safety_identifier") or req.get("user") or "",
    )


def build_completion_plan(
    principal: Principal, req: dict[str, Any], route: router.Route, correlation_id: str = ""
) -> ChatPlan:
    """The backend payload and the record's fields of a validated (legacy) completions request.
    A route's system prompt does not apply: a raw prompt has no system turn to put it in."""
    route = experiments.assign(route, experiments.sticky_key(route, principal.user_id))
    prompts: list[str] = req["prompt"]
    payload: dict[str, Any] = {"prompt": prompts[0] if len(prompts) == 1 else prompts}
    for name in COMPLETION_PASSTHROUGH:
        if req.get(name) is not None:
            payload[name] = req[name]
    stream = bool(req.get("stream"))
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}  # recorded with real token counts
    return ChatPlan(
        principal=principal,
        route=route,
        payload=payload,
        stream=stream,
        include_usage=bool((req.get("stream_options") or {}).get("include_usage")),
        priority=req.get("priority", Priority.NORMAL),
        requested_model=req.get("model") or req.get("agent_type") or "",
        correlation_id=correlation_id or get_correlation_id(),
        end_user=req.get("user") or "",
        kind=COMPLETIONS,
    )


def _clean_message(message: dict[str, Any]) -> dict[str, Any]:
    cleaned = {k: v for k, v in message.items() if v is not None}
    if cleaned["role"] == "assistant":
        if not cleaned.get("tool_calls"):
            cleaned.pop("tool_calls", None)
            cleaned.setdefault("content", "")  # servers want content or tool_calls in a turn
    return cleaned


def _tool_fields(req: dict[str, Any]) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` as every backend understands them.

    A named function or OpenAI's ``allowed_tools`` is sent as the tools it allows with
    ``tool_choice`` ``"required"`` (or the allowed mode): llama.cpp knows only the three strings
    (it would silently take a named function for ``auto``), and the narrowed list means the same
    to any server. Without tools, ``none``/``auto`` ask for nothing, so nothing is sent.
    """
    tools = req.get("tools") or []
    if not tools:
        return {}
    choice = req.get("tool_choice")
    if isinstance(choice, dict):
        names = set(tool_choice_names(choice))
        tools = [t for t in tools if t["function"]["name"] in names]
        choice = "required" if choice["type"] == "function" else choice["allowed_tools"]["mode"]
    fields: dict[str, Any] = {"tools": tools}
    if choice is not None:
        fields["tool_choice"] = choice
    if req.get("parallel_tool_calls") is not None:
        fields["parallel_tool_calls"] = req["parallel_tool_calls"]
    return fields


# --- an async task, as its worker plans it -------------------------------------------------------


def task_principal(task: InferenceTask) -> Principal:
    """The Principal of an async task as its worker knows it (the ids the row keeps)."""
    return Principal(
        user_id=task.user_id or 0,
        username="",
        role="",
        location_pk=task.location_id,
        location_code="",
        organization_id=None,
        scopes=frozenset({SCOPE_SUBMIT}),
        method="queue",
        api_key_id=task.api_key_id,
    )


def task_plan(task: InferenceTask, route: router.Route) -> ChatPlan:
    """The plan of a queued task on its route (resolved again at run time): the payload it was
    submitted with, the reservation made at submit (``governance.reservation_for``)."""
    principal = task_principal(task)
    # The arm its submit was assigned (the same caller, the same arm while the weights stay).
    route = experiments.assign(
        route, experiments.sticky_key(route, task.user_id, (task.request or {}).get("conversation_id"))
    )
    return ChatPlan(
        principal=principal,
        route=route,
        payload=(task.request or {}).get("payload") or {},
        stream=False,
        include_usage=False,
        priority=task.priority,
        requested_model=task.requested_model,
        correlation_id=task.correlation_id,
        reservation=governance.reservation_for(principal, action=governance.CHAT, ref=str(task.id)),
    )
