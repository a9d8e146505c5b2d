"""The response cache (apps/inference/response_cache.py), through a live medai and the stub: a
deterministic sync request is answered once by the model and then from the cache, per location,
recorded and audited as cached; off by default; the client's Cache-Control bypasses it; what Redis
holds is neither the prompt nor the answer in clear."""

from __future__ import annotations

import httpx
import pytest

from apps.audit.models import AuditEvent
from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model
from tests.support.servers import set_stub_mode

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = "Xylocache: the first-line treatment of anaphylaxis is"


def _flush_entries() -> None:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match="*:rc:*"):
        client.delete(key)


@pytest.fixture
def cache_on(settings):
    _flush_entries()  # another test's entry (its location's pk may be this one's) must not answer
    settings.MEDAI_RESPONSE_CACHE_SECONDS = 60
    yield
    _flush_entries()


@pytest.fixture
def ask(live_medai, stub_backend, token_for):
    register_model("stub-a", stub_backend, served="served-id", agents=("MedicalQA",))

    def post(user, body=None, headers=None, path="/v1/chat/completions"):
        payload = body or {"model": "MedicalQA", "messages": [{"role": "user", "content": PROMPT}], "temperature": 0}
        response = httpx.post(
            f"{live_medai}{path}",
            json=payload,
            headers={"Authorization": f"Bearer {token_for(user)}", **(headers or {})},
            timeout=30,
        )
        records_written()
        return response

    return post


def _backend_calls(stub: str) -> int:
    return int(httpx.get(stub.removesuffix("/v1") + "/_stats", timeout=10).json()["requests"])


def test_a_deterministic_request_is_answered_once_by_the_model_then_from_the_cache(cache_on, ask, stub_backend, alice):
    set_stub_mode(stub_backend, "ok")
    before = _backend_calls(stub_backend)
    first = ask(alice)
    again = ask(alice)
    assert first.status_code == again.status_code == 200, again.text
    assert _backend_calls(stub_backend) == before + 1  # the second never reached a model
    assert "X-Medai-Cache" not in first.headers and again.headers["X-Medai-Cache"] == "hit"
    a, b = first.json(), again.json()
    assert a["choices"] == b["choices"] and a["model"] == b["model"] == "stub-a"
    assert a["id"] != b["id"]  # an answer of its own
    tasks = list(InferenceTask.objects.order_by("created_at"))
    assert [(t.cached, t.status, t.model_name) for t in tasks] == [
        (False, "completed", "stub-a"),
        (True, "completed", "stub-a"),
    ]
    assert (tasks[1].prompt_tokens, tasks[1].completion_tokens) == (0, 0)  # no model ran: no tokens used
    events = list(AuditEvent.objects.filter(action="inference.complete").order_by("seq"))
    assert [e.details.get("cached", False) for e in events] == [False, True]
    assert all(e.actor == "alice" for e in events)


def test_the_cache_is_off_by_default(ask, stub_backend, alice):
    set_stub_mode(stub_backend, "ok")
    before = _backend_calls(stub_backend)
    ask(alice)
    second = ask(alice)
    assert _backend_calls(stub_backend) == before + 2
    assert "X-Medai-Cache" not in second.headers
    assert not InferenceTask.objects.filter(cached=True).exists()


def test_a_sampled_request_is_never_cached_but_a_seeded_one_is(cache_on, ask, stub_backend, alice):
    set_stub_mode(stub_backend, "ok")
    sampled = {"model": "MedicalQA", "messages": [{"role": "user", "content": PROMPT}], "temperature": 0.7}
    before = _backend_calls(stub_backend)
    ask(alice, sampled)
    assert "X-Medai-Cache" not in ask(alice, sampled).headers
    assert _backend_calls(stub_backend) == before + 2
    seeded = {**sampled, "seed": 42}
    ask(alice, seeded)
    assert ask(alice, seeded).headers.get("X-Medai-Cache") == "hit"
    assert _backend_calls(stub_backend) == before + 3


def test_entries_never_cross_locations_but_colleagues_at_one_location_share_them(
    cache_on, ask, stub_backend, alice, bob, charlie
):
    set_stub_mode(stub_backend, "ok")
    ask(alice)
    assert ask(bob).headers.get("X-Medai-Cache") == "hit"  # the same ward: the same answer
    assert "X-Medai-Cache" not in ask(charlie).headers  # another location asks the model itself


def test_the_clients_cache_control_bypasses_it(cache_on, ask, stub_backend, alice):
    set_stub_mode(stub_backend, "ok")
    ask(alice)
    before = _backend_calls(stub_backend)
    fresh = ask(alice, headers={"Cache-Control": "no-cache"})
    assert "X-Medai-Cache" not in fresh.headers and _backend_calls(stub_backend) == before + 1
    assert ask(alice).headers.get("X-Medai-Cache") == "hit"  # the fresh answer replaced the entry


def test_a_failed_answer_is_not_cached(cache_on, ask, stub_backend, alice):
    set_stub_mode(stub_backend, "error")
    assert ask(alice).status_code >= 500
    set_stub_mode(stub_backend, "ok")
    assert "X-Medai-Cache" not in ask(alice).headers


def test_legacy_completions_are_cached_too(cache_on, ask, stub_backend, alice):
    set_stub_mode(stub_backend, "ok")
    body = {"model": "MedicalQA", "prompt": PROMPT, "max_tokens": 4, "temperature": 0}
    first = ask(alice, body, path="/v1/completions")
    again = ask(alice, body, path="/v1/completions")
    assert again.headers.get("X-Medai-Cache") == "hit", again.text
    assert again.json()["choices"] == first.json()["choices"] and again.json()["id"].startswith("cmpl-")


def test_redis_holds_neither_the_prompt_nor_the_answer_in_clear(cache_on, ask, stub_backend, alice):
    import redis
    from django.conf import settings

    # an answer long enough that its bytes cannot turn up by chance in the ciphertext's base64
    # (the stub's usual "OK" did, now and then)
    said = "Give adrenaline 0.5 mg intramuscularly; Xylocache answer marker 4f1c."
    set_stub_mode(stub_backend, "ok", reply={"message": {"role": "assistant", "content": said}})
    answer = ask(alice).json()["choices"][0]["message"]["content"]
    assert answer == said
    client = redis.Redis.from_url(settings.REDIS_URL)
    # every entry (an earlier test's answer may still be stored by the live server after this
    # test's first flush: its put is not waited for), this one's among them
    keys = list(client.scan_iter(match="*:rc:*"))
    assert keys
    for key in keys:
        raw = client.get(key)
        assert raw is not None
        assert b"Xylocache" not in raw and b"Xylocache" not in key
        assert answer.encode() not in raw and b"anaphylaxis" not in raw
