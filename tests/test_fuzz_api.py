"""Fuzz (Hypothesis) the sync chat, completions, responses, embeddings and rerank, async task and auth endpoints with bodies shaped like real
requests but full of what a JSON parser accepts and a model server may not (lone surrogates,
NaN and infinities, huge numbers, wrong types, unknown fields), and odd ids and query strings:
no answer is a 500, every error is JSON, and once the worker (run in-process, as django-q2 runs
it) has drained the queue no task is left queued or processing, and none failed on an internal
error (that would be a bug the fuzz found).

Bounded for CI: a fixed number of examples per endpoint group (``FUZZ_EXAMPLES`` scales them),
derandomized under CI so a run is repeatable, no example database written to disk.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.inference import queue
from apps.inference.broker import PriorityBroker
from apps.inference.models import InferenceTask, QueueEntry
from tests.conftest import PASSWORD, records_written, register_model

pytestmark = pytest.mark.django_db(transaction=True)
SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))
FUZZ = settings(
    max_examples=1,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def examples(n: int) -> settings:
    return settings(FUZZ, max_examples=max(int(n * SCALE), 1))


surrogates = st.characters(categories=["Cs"])
text = st.text(st.characters(codec="utf-8") | surrogates, max_size=12) | st.sampled_from(
    ["", " ", "\x00", "\ud800", "a\udfffb", "é", "\U0001f600", "x" * 300]
)
leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True) | text
anything = st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=6
)


def sometimes(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a well-formed value, else anything."""
    return st.one_of(good, good, good, anything)


plain = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20).filter(str.strip)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "developer"]), "content": plain},
    optional={"name": st.from_regex(r"[a-z]{1,8}", fullmatch=True)},
)
FIELDS = {
    "model": st.just("stub-a"),
    "priority": st.sampled_from(["low", "normal", "high", "critical", 0, 3]),
    "max_tokens": st.integers(1, 8),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "n": st.just(1),
    "seed": st.integers(-(2**31), 2**31),
    "stop": plain | st.lists(plain, max_size=4),
    "user": plain,
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
    "logprobs": st.booleans(),
    "top_logprobs": st.integers(0, 20),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
    "deadline_s": st.floats(1, 3600),
}
valid_chat = st.fixed_dictionaries(
    {
        "agent_type": st.just("Chat"),
        "messages": st.lists(message, min_size=1, max_size=3).map(
            lambda ms: [*ms, {"role": "user", "content": "question"}]
        ),
    },
    optional=FIELDS,
)
WHERE = ["field", "field", "message", "content", "content", "response_format", "messages"]


@st.composite
def chat_bodies(draw: Any) -> dict[str, Any]:
    """A valid chat request with 0-2 hostile changes: a field's value, a message's key, a content with
    lone surrogates, a NaN deep in ``response_format``, the messages themselves."""
    body = draw(valid_chat)
    for where in sorted(draw(st.lists(st.sampled_from(WHERE), max_size=2)), key=lambda w: w == "messages"):
        if where == "field":
            body[draw(st.sampled_from([*FIELDS, "stream_options", "tools", "unknown_field"]))] = draw(anything)
        elif where == "message":
            key = draw(st.sampled_from(["role", "content", "name", "tool_calls", "tool_call_id", "extra"]))
            body["messages"][draw(st.integers(0, len(body["messages"]) - 1))][key] = draw(anything)
        elif where == "content":
            body["messages"][-1]["content"] = draw(
                text
                | st.lists(
                    st.fixed_dictionaries({"type": sometimes(st.just("text")), "text": sometimes(text)}), max_size=2
                )
            )
        elif where == "response_format":
            body["response_format"] = {"type": "text", "x": draw(anything)}
        else:
            body["messages"] = draw(anything)
    return body


chat_body = chat_bodies()
COMPLETION_FIELDS = {
    **{k: v for k, v in FIELDS.items() if k not in ("logprobs", "top_logprobs", "response_format", "deadline_s")},
    "echo": st.just(False),
    "best_of": st.just(1),
    "stream_options": st.just({"include_usage": True}),
}
valid_completion = st.fixed_dictionaries(
    {"agent_type": st.just("Chat"), "prompt": plain | st.lists(plain, min_size=1, max_size=3)},
    optional=COMPLETION_FIELDS,
)


@st.composite
def completion_bodies(draw: Any) -> dict[str, Any]:
    """A valid (legacy) completions request with 0-2 hostile changes: a field's value (an OpenAI
    field medai refuses among them), the prompt, one prompt of a list."""
    body = draw(valid_completion)
    for where in draw(st.lists(st.sampled_from(["field", "field", "prompt", "item"]), max_size=2)):
        if where == "field":
            names = [*COMPLETION_FIELDS, "n", "echo", "logprobs", "suffix", "messages", "unknown_field"]
            body[draw(st.sampled_from(names))] = draw(anything)
        elif where == "prompt":
            body["prompt"] = draw(anything)
        elif isinstance(body["prompt"], list) and body["prompt"]:
            body["prompt"][draw(st.integers(0, len(body["prompt"]) - 1))] = draw(anything)
    return body


function_tool = st.fixed_dictionaries(
    {"type": st.just("function"), "name": st.from_regex(r"[a-z_]{1,12}", fullmatch=True)},
    optional={
        "description": plain,
        "parameters": st.just({"type": "object", "properties": {"x": {"type": "string"}}}),
        "strict": st.booleans(),
    },
)
input_item = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "developer", "system", "assistant"]), "content": plain}),
    st.fixed_dictionaries(
        {
            "type": st.just("message"),
            "role": st.just("user"),
            "content": st.lists(st.fixed_dictionaries({"type": st.just("input_text"), "text": plain}), max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("function_call"),
            "call_id": st.sampled_from(["c1", "c2"]),
            "name": st.sampled_from(["f", "g"]),
            "arguments": st.sampled_from(["{}", '{"x": "1"}', "not json"]),
        }
    ),
    st.fixed_dictionaries(
        {"type": st.just("function_call_output"), "call_id": st.sampled_from(["c1", "c2"]), "output": plain}
    ),
)
RESPONSE_FIELDS = {
    "model": st.just("stub-a"),
    "instructions": plain,
    "max_output_tokens": st.integers(16, 32),
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "store": st.booleans(),
    "metadata": st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), plain, max_size=3),
    "tools": st.lists(function_tool, max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required", {"type": "function", "name": "f"}]),
    "parallel_tool_calls": st.booleans(),
    "text": st.sampled_from([{"format": {"type": "text"}}, {"format": {"type": "json_object"}}]),
    "user": plain,
    "priority": st.sampled_from(["low", "normal", "high", "critical"]),
}
valid_response = st.fixed_dictionaries(
    {
        "agent_type": st.just("Chat"),
        "input": plain | st.lists(input_item, max_size=3).map(lambda items: [*items, {"role": "user", "content": "q"}]),
    },
    optional=RESPONSE_FIELDS,
)


@st.composite
def response_bodies(draw: Any) -> dict[str, Any]:
    """A valid Responses request with 0-2 hostile changes: a field's value (OpenAI fields medai
    refuses among them), the input, one input item's key, one tool's key."""
    body = draw(valid_response)
    for where in draw(st.lists(st.sampled_from(["field", "field", "input", "item", "tool"]), max_size=2)):
        if where == "field":
            names = [*RESPONSE_FIELDS, "background", "include", "reasoning", "previous_response_id", "unknown_field"]
            body[draw(st.sampled_from(names))] = draw(anything)
        elif where == "input":
            body["input"] = draw(anything)
        elif where == "item" and isinstance(body["input"], list) and body["input"]:
            key = draw(st.sampled_from(["role", "content", "type", "call_id", "arguments", "output", "extra"]))
            body["input"][draw(st.integers(0, len(body["input"]) - 1))][key] = draw(anything)
        elif where == "tool" and body.get("tools"):
            key = draw(st.sampled_from(["type", "name", "parameters", "strict", "extra"]))
            body["tools"][0][key] = draw(anything)
    return body


tokens = st.lists(st.integers(0, 49_151), min_size=1, max_size=4)
valid_embedding = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["stub-e", "Retrieval"]),
        "input": plain | st.lists(plain, min_size=1, max_size=3) | tokens | st.lists(tokens, min_size=1, max_size=2),
    },
    optional={"encoding_format": st.sampled_from(["float", "base64"]), "user": plain},
)
valid_rerank = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["stub-e", "stub-r", "Retrieval"]),
        "query": plain,
        "documents": st.lists(plain, min_size=1, max_size=4),
    },
    optional={"top_n": st.integers(1, 6), "return_documents": st.booleans(), "user": plain},
)


@st.composite
def embedding_bodies(draw: Any) -> tuple[str, dict[str, Any]]:
    """(path, body): a valid embeddings or rerank request with 0-2 hostile changes: a field's value
    (``dimensions`` and an unknown field among them), the input, one item of a list."""
    path = draw(st.sampled_from(["/v1/embeddings", "/v1/rerank"]))
    body = draw(valid_embedding if path == "/v1/embeddings" else valid_rerank)
    listed = "input" if path == "/v1/embeddings" else "documents"
    names = [*body, "dimensions", "encoding_format", "top_n", "unknown_field"]
    for where in draw(st.lists(st.sampled_from(["field", "field", "list", "item"]), max_size=2)):
        if where == "field":
            body[draw(st.sampled_from(names))] = draw(anything)
        elif where == "list":
            body[listed] = draw(anything)
        elif isinstance(body.get(listed), list) and body[listed]:
            body[listed][draw(st.integers(0, len(body[listed]) - 1))] = draw(anything)
    return path, body


ids = st.uuids().map(str) | st.sampled_from(["not-a-uuid", "0" * 40, "%00", "..%2f"]) | text


def encoded(body: Any) -> bytes:
    # ensure_ascii: lone surrogates travel as \\ud800 escapes, NaN as the NaN token: valid to Python's parser
    return json.dumps(body, ensure_ascii=True, allow_nan=True).encode()


@pytest.fixture
def api(live_medai, alice, token_for, stub_backend):
    """Call medai over real HTTP (uvicorn, in this process, on the test database)."""
    register_model("stub-a", stub_backend)
    client = httpx.Client(base_url=live_medai, timeout=30)
    bearer = f"Bearer {token_for(alice)}"
    seen: list[tuple[str, int]] = []

    def call(method: str, path: str, body: Any = None, auth: str | None = bearer) -> httpx.Response:
        headers = {"Content-Type": "application/json", **({"Authorization": auth} if auth else {})}
        if method == "post":
            response = client.post(path, content=encoded(body), headers=headers)
        else:
            response = client.get(path, headers=headers)
        seen.append((path, response.status_code))
        assert response.status_code != 500, (method, path, body, response.text[:300])
        assert response.status_code < 500 or response.status_code in (502, 503, 504), (path, response.status_code)
        if response.status_code >= 400:
            assert "error" in response.json(), (path, response.text[:300])
        return response

    def upload(data: bytes, purpose: Any, extra: dict[str, Any]) -> httpx.Response:
        form = {"purpose": purpose if isinstance(purpose, str) else json.dumps(purpose), **extra}
        form = {k.encode("utf-8", "surrogatepass").decode("utf-8", "replace"): v for k, v in form.items()}
        form = {k: str(v).encode("utf-8", "surrogatepass").decode("utf-8", "replace") for k, v in form.items()}
        response = client.post(
            "/v1/files", files={"file": ("f.jsonl", data)}, data=form, headers={"Authorization": bearer}
        )
        seen.append(("/v1/files", response.status_code))
        assert response.status_code != 500, (data[:200], form, response.text[:300])
        assert response.status_code < 500 or response.status_code in (502, 503, 504), response.status_code
        if response.status_code >= 400:
            assert "error" in response.json(), response.text[:300]
        return response

    def raw(method: str, path: str) -> httpx.Response:
        response = client.request(method.upper(), path, headers={"Authorization": bearer})
        seen.append((path, response.status_code))
        assert response.status_code != 500, (method, path, response.text[:300])
        if response.status_code >= 400:
            assert "error" in response.json(), (path, response.text[:300])
        return response

    call.seen = seen
    call.upload = upload
    call.raw = raw
    call.client = client
    yield call
    client.close()


def drain_worker() -> None:
    """Deliver, run and acknowledge every entry, as a django-q2 cluster would."""
    broker = PriorityBroker(list_key=queue.list_key())
    for _ in range(10_000):
        delivered = broker._claim()
        if not delivered:
            break
        for ack_id, _payload in delivered:
            task_id = QueueEntry.objects.filter(pk=ack_id).values_list("task_id", flat=True).first()
            if task_id is not None:
                queue.run_task(str(task_id))
            broker.acknowledge(ack_id)


def assert_no_task_left_behind() -> None:
    drain_worker()
    stuck = list(InferenceTask.objects.filter(status__in=("queued", "processing")).values_list("id", "status"))
    assert not stuck, stuck
    broken = list(InferenceTask.objects.filter(error_code="internal_error").values_list("id", "error_message"))
    assert not broken, broken
    assert not QueueEntry.objects.exists()


def test_sync_chat_never_answers_500(api):
    @examples(120)
    @given(body=chat_body, stream=st.booleans())
    def run(body: dict[str, Any], stream: bool) -> None:
        body.pop("deadline_s", None)
        api("post", "/v1/chat/completions", {**body, "stream": stream} if stream else body)
        # the test database is SQLite in memory with a shared cache, where two writers do not wait
        # for each other but fail ("table is locked"): let the background record writer finish first
        records_written()

    run()
    assert any(code == 200 for _, code in api.seen)  # the fuzz reached the model, not only validation


def test_sync_completions_never_answer_500(api):
    @examples(80)
    @given(body=completion_bodies(), stream=st.booleans())
    def run(body: dict[str, Any], stream: bool) -> None:
        api("post", "/v1/completions", {**body, "stream": stream} if stream else body)
        records_written()

    run()
    assert any(code == 200 for _, code in api.seen)
    assert any(code == 400 for _, code in api.seen)


def test_responses_never_answer_500(api):
    stored: list[str] = []

    @examples(80)
    @given(body=response_bodies(), stream=st.booleans(), chain=st.booleans(), other=ids, pick=st.integers(0, 10**6))
    def run(body: dict[str, Any], stream: bool, chain: bool, other: str, pick: int) -> None:
        if chain and stored:
            body["previous_response_id"] = stored[pick % len(stored)]
        response = api("post", "/v1/responses", {**body, "stream": stream} if stream else body)
        if response.status_code == 200 and not stream and response.json().get("store"):
            stored.append(response.json()["id"])
        records_written()
        target = stored[pick % len(stored)] if stored and pick % 3 else other
        target = quote(target.encode("utf-8", "surrogatepass"), safe="")
        api("get", f"/v1/responses/{target}")
        if pick % 5 == 0:
            api("delete", f"/v1/responses/{target}")

    run()
    assert any(code == 200 for _, code in api.seen)
    assert any(code == 400 for _, code in api.seen)
    assert stored  # some were stored, and continued


def test_embeddings_and_rerank_never_answer_500(api, stub_backend):
    register_model("stub-e", stub_backend, agents=("Retrieval",), supports_embeddings=True, rerank="embeddings")
    register_model("stub-r", stub_backend, agents=("Retrieval",), rerank="native")

    @examples(80)
    @given(request=embedding_bodies())
    def run(request: tuple[str, dict[str, Any]]) -> None:
        path, body = request
        response = api("post", path, body)
        if response.status_code == 200 and path == "/v1/embeddings":  # a vector per input, a token array one
            single = isinstance(body["input"], str) or all(isinstance(t, int) for t in body["input"])
            assert len(response.json()["data"]) == (1 if single else len(body["input"]))
        records_written()

    run()
    seen = {(path, code) for path, code in api.seen}
    assert {("/v1/embeddings", 200), ("/v1/rerank", 200)} <= seen  # the fuzz reached the models
    assert any(code == 400 for _, code in seen)


def test_async_task_api_never_answers_500_and_leaves_no_task_behind(api):
    submitted: list[str] = []

    @examples(100)
    @given(
        body=chat_body,
        batch=st.lists(chat_body, min_size=1, max_size=3) | anything,
        as_batch=st.booleans(),
        other=ids,
        query=st.dictionaries(st.sampled_from(["status", "page", "page_size"]), text, max_size=3),
        pick=st.integers(0, 10**6),
    )
    def run(body: dict[str, Any], batch: Any, as_batch: bool, other: str, query: dict[str, str], pick: int) -> None:
        if as_batch:
            response = api("post", "/v1/async/submit-batch", {"requests": batch})
            if response.status_code == 202:
                submitted.extend(response.json()["task_ids"])
        else:
            response = api("post", "/v1/async/submit", body)
            if response.status_code == 202:
                submitted.append(response.json()["task_id"])
        target = submitted[pick % len(submitted)] if submitted and pick % 3 else other
        target = quote(target.encode("utf-8", "surrogatepass"), safe="")
        api("get", f"/v1/async/status/{target}")
        api("get", f"/v1/async/result/{target}")
        if pick % 5 == 0:
            api("post", f"/v1/async/cancel/{target}")
        if pick % 7 == 0 and submitted:
            queue.run_task(submitted[pick % len(submitted)])  # a worker runs one meanwhile (not yet acknowledged)
        api("get", "/v1/async/tasks?" + urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in query.items()}))

    run()
    assert submitted  # the fuzz got tasks into the queue, not only 400s
    assert_no_task_left_behind()
    for task_id in submitted[:20]:
        assert api("get", f"/v1/async/status/{task_id}").json()["status"] in (
            "completed",
            "failed",
            "cancelled",
            "expired",
        )
    api("get", "/v1/async/health")


def test_auth_endpoints_never_answer_500(api, alice):
    credentials = st.fixed_dictionaries(
        {
            "username": sometimes(st.just("alice")),
            "password": sometimes(st.just(PASSWORD)),
            "location_id": sometimes(st.just("demo")),
        },
        optional={"extra": anything},
    )

    @examples(40)
    @given(login=credentials, token=sometimes(text) | anything, header=st.none() | text.map(lambda t: f"Bearer {t}"))
    def run(login: dict[str, Any], token: Any, header: str | None) -> None:
        answer = api("post", "/v1/auth/login", login, auth=None)
        refresh = answer.json()["refresh_token"] if answer.status_code == 200 else token
        api("post", "/v1/auth/refresh", {"refresh_token": refresh}, auth=None)
        if header and not (header.isascii() and header.isprintable() and header == header.strip()):
            header = None  # not sendable as an HTTP header at all
        api("post", "/v1/auth/logout", {"refresh_token": token}, auth=header)

    run()


# --- the Files and Batch API ---------------------------------------------------------------------

batch_line = st.fixed_dictionaries(
    {
        "custom_id": st.uuids().map(str),
        "method": st.just("POST"),
        "url": st.just("/v1/chat/completions"),
        "body": valid_chat.map(lambda b: {k: v for k, v in b.items() if k not in ("priority", "deadline_s")}),
    }
)
LINE_WHERE = ["line", "field", "body", "raw", "custom_id"]


@st.composite
def batch_files(draw: Any) -> bytes:
    """A valid JSONL of 1-4 requests with 0-2 hostile changes: a line's key or value, a body
    field, a raw line that is no JSON (or bytes that are no UTF-8), a repeated custom_id."""
    lines: list[Any] = draw(st.lists(batch_line, min_size=1, max_size=4))
    for where in draw(st.lists(st.sampled_from(LINE_WHERE), max_size=2)):
        i = draw(st.integers(0, len(lines) - 1))
        if where == "line":
            lines[i] = draw(anything)
        elif where == "field" and isinstance(lines[i], dict):
            lines[i][draw(st.sampled_from(["custom_id", "method", "url", "body", "extra"]))] = draw(anything)
        elif where == "body" and isinstance(lines[i], dict) and isinstance(lines[i].get("body"), dict):
            lines[i]["body"][draw(st.sampled_from([*FIELDS, "stream", "messages", "unknown_field"]))] = draw(anything)
        elif where == "custom_id" and len(lines) > 1 and isinstance(lines[0], dict) and isinstance(lines[i], dict):
            lines[i]["custom_id"] = lines[0].get("custom_id")
        else:
            lines[i] = draw(st.sampled_from(["{", "", "null", "\ud800", "[]", '{"a": NaN}', "\xff\xfe"]))
    text = "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=True, allow_nan=True) for x in lines)
    data = text.encode("utf-8", "surrogatepass")
    return data.replace(b"\\xff\\xfe", b"\xff\xfe") + draw(st.sampled_from([b"", b"\n", b"\r\n"]))


batch_bodies = st.fixed_dictionaries(
    {"endpoint": sometimes(st.just("/v1/chat/completions")), "completion_window": sometimes(st.just("24h"))},
    optional={
        "metadata": sometimes(st.dictionaries(plain, plain, max_size=3) | st.just({"priority": "high"})),
        "output_expires_after": sometimes(st.just({"anchor": "created_at", "seconds": 3600})),
        "extra": anything,
    },
)


def test_files_and_batches_never_answer_500_and_leave_no_task_behind(api):
    """Uploads of hostile JSONL, batches of them (or of odd ids), and reads, downloads, deletes and
    cancels of odd ids: no 500, every error JSON; once the worker drained the queue every batch
    ended and none of its lines failed on an internal error."""
    made: list[str] = []
    uploaded: list[str] = []

    @examples(60)
    @given(
        data=batch_files(),
        purpose=sometimes(st.just("batch")),
        expires=st.none() | st.tuples(sometimes(st.just("created_at")), sometimes(st.just("3600"))),
        body=batch_bodies,
        use_file=st.booleans(),
        other=ids,
        query=st.dictionaries(st.sampled_from(["after", "limit", "order", "purpose"]), text, max_size=3),
        pick=st.integers(0, 10**6),
    )
    def run(
        data: bytes,
        purpose: Any,
        expires: Any,
        body: dict[str, Any],
        use_file: bool,
        other: str,
        query: dict,
        pick: int,
    ) -> None:
        extra = {"expires_after[anchor]": expires[0], "expires_after[seconds]": expires[1]} if expires else {}
        response = api.upload(data, purpose, extra)
        if response.status_code == 200:
            uploaded.append(response.json()["id"])
        target_file = uploaded[pick % len(uploaded)] if uploaded and use_file else other
        batch = api("post", "/v1/batches", {"input_file_id": target_file, **body})
        if batch.status_code == 200:
            made.append(batch.json()["id"])
        target_batch = made[pick % len(made)] if made and pick % 3 else other
        quoted_file = quote(target_file.encode("utf-8", "surrogatepass"), safe="")
        quoted_batch = quote(target_batch.encode("utf-8", "surrogatepass"), safe="")
        api("get", f"/v1/files/{quoted_file}")
        api("get", f"/v1/files/{quoted_file}/content")
        api("get", f"/v1/batches/{quoted_batch}")
        if pick % 5 == 0:
            api("post", f"/v1/batches/{quoted_batch}/cancel")
        if pick % 7 == 0:
            api.raw("delete", f"/v1/files/{quoted_file}")
        encoded_query = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in query.items()})
        api("get", "/v1/files?" + encoded_query)
        api("get", "/v1/batches?" + encoded_query)

    run()
    assert uploaded and made  # the fuzz got batches onto the queue, not only 400s
    assert_no_task_left_behind()
    from apps.inference.filebatch import feed
    from apps.inference.filebatch_models import FileBatch

    for _ in range(5):  # the schedule's turns: each feeds what the last run freed
        feed.sweep()
        assert_no_task_left_behind()
    assert not FileBatch.objects.open().exists(), list(FileBatch.objects.open().values_list("status", "fed", "total"))
    for batch_id in made[:10]:
        status = api("get", f"/v1/batches/{batch_id}").json()["status"]
        assert status in ("completed", "cancelled", "failed", "expired"), status


def test_history_and_feedback_never_answer_500(api):
    """Stored exchanges (``store: true``, some following up), then the history, its search, a
    conversation and feedback with fuzzed fields: never a 500."""
    exchanges: list[str] = []
    conversations: list[str] = []
    feedback = st.fixed_dictionaries(
        {"rating": sometimes(st.sampled_from(["up", "down"]))},
        optional={
            "comment": sometimes(text),
            "reasons": sometimes(st.lists(st.sampled_from(["wrong", "unsafe", "incomplete", "outdated", "other"]))),
            "extra": anything,
        },
    )

    @examples(60)
    @given(
        body=chat_body,
        follow=st.booleans(),
        other=ids,
        q=sometimes(text) | anything,
        limit=st.none() | anything,
        rating=feedback,
        query=st.dictionaries(st.sampled_from(["page", "page_size"]), text, max_size=2),
        pick=st.integers(0, 10**6),
    )
    def run(body, follow, other, q, limit, rating, query, pick) -> None:  # type: ignore[no-untyped-def]
        body = {**body, "store": True}
        body.pop("deadline_s", None)
        if follow and conversations:
            body["conversation_id"] = conversations[pick % len(conversations)]
        response = api("post", "/v1/chat/completions", body)
        if response.status_code == 200:
            exchanges.append(response.headers["X-Medai-Exchange-Id"])
            conversations.append(response.headers["X-Medai-Conversation-Id"])
        records_written()
        target = exchanges[pick % len(exchanges)] if exchanges and pick % 3 else other
        api("post", "/v1/feedback", {**rating, "exchange_id": target})
        conversation = conversations[pick % len(conversations)] if conversations and pick % 2 else other
        api("get", "/v1/conversations/" + quote(conversation.encode("utf-8", "surrogatepass"), safe=""))
        api("post", "/v1/history/search", {"q": q} if limit is None else {"q": q, "limit": limit})
        api("get", "/v1/history?" + urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in query.items()}))

    run()
    assert exchanges  # the fuzz stored exchanges, not only 400s
    assert any(path == "/v1/feedback" and code in (200, 201) for path, code in api.seen)


workflow_bodies = st.fixed_dictionaries(
    {"document": sometimes(plain)},
    optional={
        "priority": sometimes(st.sampled_from(["low", "normal", "high", "critical"])),
        "deadline_s": sometimes(st.integers(1, 3600)),
        "extra": anything,
    },
)


def test_workflow_runs_never_answer_500_and_every_run_ends(api):
    """Runs of a two-stage workflow with fuzzed bodies and names, reads and cancels of odd ids: no
    500, every error JSON; once the worker drained the queue every run ended and no task is left."""
    from apps.inference.models import AgentRoute, Workflow, WorkflowRun, WorkflowStep

    workflow = Workflow.objects.create(name="fuzz")
    chat = AgentRoute.objects.get_or_create(agent_type="Chat")[0]
    WorkflowStep.objects.create(workflow=workflow, name="a", agent_type=chat, stage=0, max_tokens=4)
    WorkflowStep.objects.create(workflow=workflow, name="b", agent_type=chat, stage=0, prompt="{document} {a}")
    WorkflowStep.objects.create(workflow=workflow, name="c", agent_type=chat, stage=1, prompt="{outputs} {a} {x}")
    started: list[str] = []

    @examples(60)
    @given(
        body=workflow_bodies | anything,
        name=st.sampled_from(["fuzz", "fuzz", "nope", "runs"]) | text,
        other=ids,
        pick=st.integers(0, 10**6),
    )
    def run(body: Any, name: str, other: str, pick: int) -> None:
        quoted = quote(name.encode("utf-8", "surrogatepass"), safe="")
        response = api("post", f"/v1/workflows/{quoted}/runs", body)
        if response.status_code == 202:
            started.append(response.json()["id"])
        target = started[pick % len(started)] if started and pick % 3 else other
        target = quote(target.encode("utf-8", "surrogatepass"), safe="")
        api("get", f"/v1/workflows/runs/{target}")
        if pick % 5 == 0:
            api("post", f"/v1/workflows/runs/{target}/cancel")
        if pick % 4 == 0:  # the list, its cursor and filters fuzzed too
            status = quote(name.encode("utf-8", "surrogatepass"), safe="")
            query = f"after={target}&workflow={quoted}&status={status}&limit={pick % 150}"
            api("get", f"/v1/workflows/runs?{query}")

    run()
    assert started  # the fuzz got runs onto the queue, not only 400s
    assert_no_task_left_behind()
    assert not WorkflowRun.objects.open().exists()
    api("get", "/v1/workflows")


def test_the_feedback_export_never_answers_500(api, audrey, token_for):
    """``GET /v1/feedback/export`` as an auditor with fuzzed query parameters and purpose headers:
    a 200 or a 400 naming the parameter, never a 500."""
    auditor = f"Bearer {token_for(audrey)}"
    params = st.dictionaries(
        st.sampled_from(
            ["format", "since", "until", "model", "agent_type", "rating", "after", "limit", "include_content", "x"]
        ),
        sometimes(st.sampled_from(["jsonl", "csv", "2026-01-01", "2026-01-01T00:00:00Z", "up", "true", "5", "0"]))
        | text,
        max_size=4,
    )

    @examples(40)
    @given(query=params, purpose=st.none() | text)
    def run(query, purpose) -> None:  # type: ignore[no-untyped-def]
        encoded_query = urlencode({k: str(v).encode("utf-8", "surrogatepass") for k, v in query.items()})
        headers = {"Authorization": auditor}
        if purpose is not None:
            headers["X-Purpose-Of-Use"] = purpose.encode("utf-8", "surrogatepass").decode("latin-1", "replace")
        try:
            response = api.client.get("/v1/feedback/export?" + encoded_query, headers=headers)
        except (UnicodeEncodeError, httpx.LocalProtocolError):
            return  # a header no HTTP client can send
        api.seen.append(("/v1/feedback/export", response.status_code))
        assert response.status_code in (200, 400), (query, purpose, response.status_code, response.text[:300])
        if response.status_code == 400:
            assert "error" in response.json()

    run()
    assert ("/v1/feedback/export", 200) in api.seen and ("/v1/feedback/export", 400) in api.seen
