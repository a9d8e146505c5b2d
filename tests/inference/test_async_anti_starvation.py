"""Anti-starvation: each MEDAI_QUEUE_AGING_SECONDS a task waits counts as one priority level up."""

from __future__ import annotations

import time

import pytest

from tests.conftest import register_model
from tests.inference.queue_helpers import drain, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def model(db):
    register_model("stub", "http://127.0.0.1:9/v1")


def test_a_low_task_that_waited_long_enough_goes_before_new_high_work(client_for, alice, settings):
    settings.MEDAI_QUEUE_AGING_SECONDS = 0.05
    client = client_for(alice)
    old_low = submit(client, "an old low question", "low")
    time.sleep(0.25)  # more than 3 aging periods: the LOW task now ranks above a fresh HIGH
    new_high = submit(client, "a new high question", "high")
    assert drain() == [old_low, new_high]


def test_without_that_wait_high_work_still_goes_first(client_for, alice):
    client = client_for(alice)
    low = submit(client, "a low question", "low")
    high = submit(client, "a high question", "high")
    assert drain() == [high, low]
