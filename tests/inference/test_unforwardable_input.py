"""What the JSON parser accepts but no model server can be sent (a lone surrogate, NaN) is a 400
naming the field, on sync chat and at async submit, so it never reaches a worker. (Found by the
fuzz test, tests/test_fuzz_api.py.)"""

from __future__ import annotations

import pytest

from apps.inference.models import InferenceTask
from tests.conftest import register_model

pytestmark = pytest.mark.django_db(transaction=True)  # sync chat validates in a thread of its own

SURROGATE = '{"agent_type": "Chat", "messages": [{"role": "user", "content": "x\\ud800"}]}'
KEY = '{"agent_type": "Chat", "messages": [{"role": "user", "content": "x"}], "model": {"\\udfff": 1}}'
NAN = '{"agent_type": "Chat", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "text", "x": NaN}}'


@pytest.mark.parametrize(
    ("body", "param"), [(SURROGATE, "messages[0].content"), (KEY, "model.\\udfff"), (NAN, "response_format.x")]
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/async/submit"])
def test_input_that_cannot_be_forwarded_is_a_400_naming_the_field(client_for, alice, stub_backend, path, body, param):
    register_model("stub-a", stub_backend)
    response = client_for(alice).post(path, body, content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    if path == "/v1/async/submit" and body is NAN:  # DRF's strict parser: NaN is not JSON at all
        assert error["code"] == "invalid_json"
    else:
        assert error["param"] == param
    assert not InferenceTask.objects.filter(mode="async").exists()
