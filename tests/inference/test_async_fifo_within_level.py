"""Within one priority level the queue is first in, first out."""

from __future__ import annotations

import pytest

from tests.conftest import register_model
from tests.inference.queue_helpers import drain, submit

pytestmark = pytest.mark.django_db


def test_tasks_of_one_level_start_in_submission_order(client_for, alice, bob):
    register_model("stub", "http://127.0.0.1:9/v1")
    a, b = client_for(alice), client_for(bob)
    ids = [submit(a if i % 2 else b, f"normal question {i}") for i in range(30)]
    assert drain() == ids
