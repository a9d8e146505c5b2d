"""/metrics shows each quota's use and limit in its current window (read from Redis at scrape
time) and counts governance's refusals by kind (a quota's 429 here)."""

from __future__ import annotations

import pytest

from apps.accounts import governance
from apps.accounts.governance import Item
from tests.support.metrics import samples, value

pytestmark = pytest.mark.django_db

CHAT = {"model": "any", "messages": [{"role": "user", "content": "Summarise the discharge letter."}]}


def _scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def test_a_quota_refusal_is_counted_and_the_quota_shows_its_use(client, alice, principal_of, token_for, quota):
    quota(location="demo", period="day", requests=1, tokens=100000)
    before = value(_scrape(client), "medai_limit_rejections_total", kind="quota")
    governance.admit(principal_of(alice), items=[Item(10, 10)])  # the day's one request, held
    refused = client.post(
        "/v1/chat/completions",
        CHAT,
        content_type="application/json",
        headers={"Authorization": f"Bearer {token_for(alice)}"},
    )
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"

    text = _scrape(client)
    assert value(text, "medai_limit_rejections_total", kind="quota") == before + 1
    assert value(text, "medai_quota_used", level="location", scope="demo", period="day", kind="requests") == 1
    assert value(text, "medai_quota_used", level="location", scope="demo", period="day", kind="tokens") == 20
    assert value(text, "medai_quota_limit", level="location", scope="demo", period="day", kind="requests") == 1
    assert not any(name.startswith("medai_quota") and ("period", "month") in labels for name, labels in samples(text))
