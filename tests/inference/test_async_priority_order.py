"""The broker delivers CRITICAL > HIGH > NORMAL > LOW, whatever is already queued."""

from __future__ import annotations

import pytest

from tests.conftest import register_model
from tests.inference.queue_helpers import drain, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def model(db, settings):
    register_model("stub", "http://127.0.0.1:9/v1")
    # 200 submits from one user: faster than the user's bucket refills on a quick machine (this
    # file is about the order, tests/accounts/test_rate_limit_* about the limits)
    settings.MEDAI_RATE_LIMIT_USER_BURST = 0
    settings.MEDAI_RATE_LIMIT_KEY_BURST = 0


def test_critical_tasks_start_before_every_low_task_still_queued(client_for, alice):
    client = client_for(alice)
    lows = [submit(client, f"low question {i}", "low") for i in range(200)]
    # a worker already took some LOW work before the urgent requests arrived
    started_low = drain(limit=10)
    assert started_low == lows[:10]
    criticals = [submit(client, f"urgent question {i}", "critical") for i in range(5)]
    order = drain()
    assert order[:5] == criticals
    assert order[5:] == lows[10:]


def test_levels_are_served_in_strict_order(client_for, alice):
    client = client_for(alice)
    ids = {level: submit(client, f"question at {level}", level) for level in ("low", "normal", "high", "critical")}
    assert drain() == [ids["critical"], ids["high"], ids["normal"], ids["low"]]
