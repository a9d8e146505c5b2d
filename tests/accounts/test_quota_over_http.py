"""Over quota on the wire: chat completions answer 429 in OpenAI's error shape with a message that
names the quota and ``Retry-After`` until its window ends; a request without ``max_tokens`` under a
token quota is capped at what was held for it."""

from __future__ import annotations

import json

import httpx
import pytest

from apps.accounts.governance import store
from apps.inference.pipeline import plan
from tests.conftest import records_written, register_model

pytestmark = pytest.mark.django_db(transaction=True)

MSG = [{"role": "user", "content": "What is a normal INR?"}]


def test_the_request_after_the_last_one_of_the_quota_is_429_naming_it(
    live_medai, stub_backend, alice, demo, token_for, quota
):
    register_model("stub-a", stub_backend)
    quota(location="demo", period="day", requests=2)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    url = f"{live_medai}/v1/chat/completions"
    for _ in range(2):
        assert (
            httpx.post(url, json={"model": "stub-a", "messages": MSG}, headers=headers, timeout=30).status_code == 200
        )
    refused = httpx.post(url, json={"model": "stub-a", "messages": MSG}, headers=headers, timeout=30)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded" and error["type"] == "rate_limit_error"
    assert "daily requests quota of location 'demo' is used up" in error["message"]
    w = store.windows()
    assert 0 < int(refused.headers["Retry-After"]) <= w.day_end - w.day_end % 1 + 1
    records_written()
    assert store.usage(f"l:{demo.pk}")["day"] == {"requests": 2, "tokens": 12}  # the stub's 6 tokens each


def test_under_a_token_quota_a_request_without_max_tokens_is_capped_at_its_hold(alice, principal_of, quota, settings):
    settings.MEDAI_QUOTA_DEFAULT_MAX_TOKENS = 77
    register_model("stub-a", "http://127.0.0.1:9/v1")
    body = json.dumps({"model": "stub-a", "messages": MSG}).encode()
    p = principal_of(alice)
    assert "max_tokens" not in plan.plan_chat_sync(p, body).payload  # no token quota: the request as sent
    quota(location="demo", period="month", tokens=100_000)
    assert plan.plan_chat_sync(p, body).payload["max_tokens"] == 77
