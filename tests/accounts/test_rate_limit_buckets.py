"""Token buckets per API key, per user and per IP (rate + burst), atomic in Redis: a burst passes,
the next request answers 429 with ``Retry-After``, the bucket refills at its rate; every answer of
a rate-limited endpoint carries ``X-RateLimit-Limit/Remaining/Reset``."""

from __future__ import annotations

import time

import httpx
import pytest

from apps.accounts import governance
from apps.accounts.models import ApiKey, ApiKeyLimit
from apps.accounts.services import authenticate_header
from tests.conftest import register_model

pytestmark = pytest.mark.django_db(transaction=True)

MSG = [{"role": "user", "content": "What is a normal INR?"}]


def test_a_burst_passes_then_429_until_the_bucket_refills(alice, principal_of, settings):
    settings.MEDAI_RATE_LIMIT_USER_RATE, settings.MEDAI_RATE_LIMIT_USER_BURST = 5.0, 3
    p = principal_of(alice)
    remaining = [governance.check_rate_limit(p).headers["X-RateLimit-Remaining"] for _ in range(3)]
    assert remaining == ["2", "1", "0"]
    with pytest.raises(governance.LimitExceeded) as refused:
        governance.check_rate_limit(p)
    assert refused.value.code == "rate_limit_exceeded" and "user" in refused.value.message
    assert refused.value.retry_after == 1 and refused.value.headers["X-RateLimit-Remaining"] == "0"
    time.sleep(0.25)  # 5/s: one request back after 0.2 s
    governance.check_rate_limit(p)


def test_each_ip_has_its_own_bucket_and_the_tightest_bucket_decides(alice, principal_of, settings):
    settings.MEDAI_RATE_LIMIT_IP_RATE, settings.MEDAI_RATE_LIMIT_IP_BURST = 0.01, 2
    p = principal_of(alice)
    for _ in range(2):
        assert governance.check_rate_limit(p, ip="10.0.0.1").headers["X-RateLimit-Limit"] == "2"
    with pytest.raises(governance.LimitExceeded, match="IP address"):
        governance.check_rate_limit(p, ip="10.0.0.1")
    governance.check_rate_limit(p, ip="10.0.0.2")  # another address, the same user


def test_a_keys_own_limits_override_the_default_and_other_keys_keep_theirs(alice, api_key_for):
    a, b = api_key_for(alice), api_key_for(alice)
    ApiKeyLimit.objects.create(api_key=ApiKey.objects.for_secret(a), rate=0.01, burst=1)
    pa, pb = authenticate_header(f"Bearer {a}"), authenticate_header(f"Bearer {b}")
    governance.check_rate_limit(pa)
    with pytest.raises(governance.LimitExceeded, match="API key"):
        governance.check_rate_limit(pa)
    for _ in range(3):
        governance.check_rate_limit(pb)


def test_a_batch_takes_one_unit_per_item_and_a_refusal_takes_none(alice, principal_of, settings):
    settings.MEDAI_RATE_LIMIT_USER_RATE, settings.MEDAI_RATE_LIMIT_USER_BURST = 0.01, 10
    p = principal_of(alice)
    assert governance.check_rate_limit(p, units=7).headers["X-RateLimit-Remaining"] == "3"
    with pytest.raises(governance.LimitExceeded):
        governance.check_rate_limit(p, units=4)
    assert governance.check_rate_limit(p, units=3).headers["X-RateLimit-Remaining"] == "0"


def test_every_chat_answer_carries_the_headers_and_the_429_is_openai_shaped(
    live_medai, stub_backend, alice, token_for, settings
):
    settings.MEDAI_RATE_LIMIT_USER_RATE, settings.MEDAI_RATE_LIMIT_USER_BURST = 0.01, 3
    register_model("stub-a", stub_backend)
    headers = {"Authorization": f"Bearer {token_for(alice)}"}
    url = f"{live_medai}/v1/chat/completions"
    ok = httpx.post(url, json={"model": "stub-a", "messages": MSG}, headers=headers, timeout=30)
    assert ok.status_code == 200
    assert (ok.headers["X-RateLimit-Limit"], ok.headers["X-RateLimit-Remaining"]) == ("3", "2")
    assert int(ok.headers["X-RateLimit-Reset"]) > 0
    unknown = httpx.post(url, json={"model": "nope", "messages": MSG}, headers=headers, timeout=30)
    assert unknown.status_code == 404 and unknown.headers["X-RateLimit-Remaining"] == "1"  # after the step: counted
    stream = httpx.post(url, json={"model": "stub-a", "messages": MSG, "stream": True}, headers=headers, timeout=30)
    assert stream.status_code == 200 and stream.headers["X-RateLimit-Remaining"] == "0"
    refused = httpx.post(url, json={"model": "stub-a", "messages": MSG}, headers=headers, timeout=30)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1 and refused.headers["X-RateLimit-Remaining"] == "0"
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"


def test_async_submit_answers_carry_the_headers(live_medai, stub_backend, alice, token_for):
    register_model("stub-a", stub_backend)
    response = httpx.post(
        f"{live_medai}/v1/async/submit",
        json={"model": "stub-a", "messages": MSG, "max_tokens": 4},
        headers={"Authorization": f"Bearer {token_for(alice)}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    assert response.headers["X-RateLimit-Limit"] == str(100)
    assert int(response.headers["X-RateLimit-Remaining"]) == 99
