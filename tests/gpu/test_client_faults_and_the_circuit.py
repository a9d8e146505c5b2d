"""A failure the request caused is that caller's 400 and counts nothing against the backend (no
circuit failure, no failover, no retry); failures of the backend itself still open its circuit.
Over real HTTP against medai's stub, which answers any model server's error on demand."""

from __future__ import annotations

import httpx
import pytest
from django.conf import settings

from apps.gpu import circuit, shared
from tests.conftest import records_written, register_model
from tests.support.metrics import local
from tests.support.servers import set_stub_mode, start_stub

pytestmark = pytest.mark.django_db(transaction=True)

MSG = [{"role": "user", "content": "Summarise the discharge letter."}]
IMAGE_MSG = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What does this X-ray show?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ],
    }
]
IMAGE_500 = {
    "error": {
        "code": 500,
        "type": "server_error",
        "message": "image input is not supported - hint: if this is unexpected, you may need to provide the mmproj",
    }
}


@pytest.fixture
def post(live_medai, alice, bob, token_for, fresh_view):
    tokens = {"alice": token_for(alice), "bob": token_for(bob)}

    def send(body, user="alice"):
        response = httpx.post(
            f"{live_medai}/v1/chat/completions",
            json=body,
            timeout=30,
            headers={"Authorization": f"Bearer {tokens[user]}"},
        )
        records_written()
        return response

    return send


@pytest.fixture
def second():
    proc, url = start_stub()
    yield url
    proc.stop()


def served(url: str) -> int:
    return httpx.get(url.removesuffix("/v1") + "/_stats").json()["requests"]


def test_an_input_the_model_cannot_take_is_the_callers_400_and_never_opens_the_circuit(post, stub_backend, second):
    primary = register_model("text-only", stub_backend, rank=1, agents=("Clinical",), position=0)
    register_model("fallback", second, rank=2, agents=("Clinical",), position=1)
    set_stub_mode(stub_backend, "error", status=500, body=IMAGE_500)
    for _ in range(settings.MEDAI_CIRCUIT_FAILURES + 2):
        response = post({"model": "Clinical", "messages": IMAGE_MSG})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("unsupported_input", "invalid_request_error")
        assert "image input is not supported" in error["message"]
        assert "Retry-After" not in response.headers
    assert served(stub_backend) == settings.MEDAI_CIRCUIT_FAILURES + 2  # once each: no retry
    assert served(second) == 0  # no failover: another model would refuse it too, or answer it blind
    assert circuit.state_of(primary.pk) == (circuit.CLOSED, 0, 0.0)
    assert primary.pk not in shared.view().health
    attempts = "medai_backend_attempts_total"
    assert local(attempts, model="text-only", outcome="client_error") == settings.MEDAI_CIRCUIT_FAILURES + 2
    assert local(attempts, model="text-only", outcome="failure") == 0

    set_stub_mode(stub_backend, "ok")
    plain = post({"model": "Clinical", "messages": MSG}, user="bob")
    assert plain.status_code == 200 and plain.json()["model"] == "text-only"


def test_a_backend_500_not_about_the_input_counts_and_opens_the_circuit(post, stub_backend, second):
    primary = register_model("crashy", stub_backend, rank=1, agents=("Clinical",), position=0)
    register_model("fallback", second, rank=2, agents=("Clinical",), position=1)
    set_stub_mode(
        stub_backend,
        "error",
        status=500,
        body={"error": {"code": 500, "type": "server_error", "message": "got exception: decode failed"}},
    )
    for _ in range(settings.MEDAI_CIRCUIT_FAILURES + 2):
        response = post({"model": "Clinical", "messages": MSG})
        assert response.status_code == 200 and response.json()["model"] == "fallback"
    assert served(stub_backend) == settings.MEDAI_CIRCUIT_FAILURES  # then its circuit opened
    assert circuit.state_of(primary.pk)[0] == circuit.OPEN


def test_a_wrong_backend_api_key_is_the_backends_fault_not_the_callers(post, stub_backend):
    model = register_model("locked", stub_backend)
    set_stub_mode(
        stub_backend,
        "error",
        status=401,
        body={"error": {"code": 401, "type": "authentication_error", "message": "Invalid API Key"}},
    )
    response = post({"model": "locked", "messages": MSG})
    assert response.status_code == 503 and response.json()["error"]["code"] == "backend_unavailable"
    assert "Invalid API Key" in response.json()["error"]["message"]
    assert circuit.state_of(model.pk)[1] == 1


def test_a_served_model_id_the_backend_does_not_know_fails_over(post, stub_backend, second):
    misconfigured = register_model("misnamed", stub_backend, rank=1, agents=("Clinical",), position=0)
    register_model("fallback", second, rank=2, agents=("Clinical",), position=1)
    set_stub_mode(
        stub_backend,
        "error",
        status=404,
        body={
            "object": "error",
            "type": "NotFoundError",
            "code": 404,
            "message": "The model `misnamed` does not exist.",
        },
    )
    response = post({"model": "Clinical", "messages": MSG})
    assert response.status_code == 200 and response.json()["model"] == "fallback"
    assert circuit.state_of(misconfigured.pk)[1] == 1


def test_a_half_open_trial_that_was_the_callers_fault_lets_the_next_request_be_the_trial(post, stub_backend):
    model = register_model("recovering", stub_backend)
    for _ in range(settings.MEDAI_CIRCUIT_FAILURES):
        circuit.record_failure(model.pk)
    circuit.half_open(model.pk)
    set_stub_mode(stub_backend, "error", status=500, body=IMAGE_500)
    assert post({"model": "recovering", "messages": IMAGE_MSG}).status_code == 400
    assert circuit.state_of(model.pk)[0] == circuit.HALF_OPEN  # neither closed nor re-opened by it
    set_stub_mode(stub_backend, "ok")
    assert post({"model": "recovering", "messages": MSG}, user="bob").status_code == 200
    assert circuit.state_of(model.pk)[0] == circuit.CLOSED
