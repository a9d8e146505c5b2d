"""The async API's quota holds: made at submit under the task's id, settled by the worker with the
real usage, released by a cancel, an expiry, a de-duplicated submission or a refused batch."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.governance import store
from apps.inference import queue
from tests.conftest import register_model
from tests.inference.queue_helpers import ask, submit

pytestmark = pytest.mark.django_db


@pytest.fixture
def limited(demo, quota):
    """A quota at demo, and a model to route to (none is called unless a test runs the task)."""
    register_model("stub-a", "http://127.0.0.1:9/v1")
    quota(location="demo", period="day", requests=5, tokens=100_000)
    return f"l:{demo.pk}"


def _used(scope: str) -> dict[str, int]:
    return store.usage(scope)["day"]


def test_a_task_holds_its_quota_from_submit_until_the_worker_settles_its_real_usage(
    client_for, alice, stub_backend, demo, quota
):
    register_model("stub-a", stub_backend)
    quota(location="demo", period="day", requests=5, tokens=100_000)
    limited = f"l:{demo.pk}"
    task_id = submit(client_for(alice), "What is a normal INR?")
    held = _used(limited)
    assert held["requests"] == 1 and held["tokens"] > 4  # the prompt's estimate plus max_tokens 4
    assert store.client().get(store.prefix() + f"h:{task_id}").startswith("H|")
    assert queue.run_task(task_id) == "completed"
    assert _used(limited) == {"requests": 1, "tokens": 6}  # the stub's usage: 5 + 1


def test_cancelling_a_queued_task_releases_its_hold(client_for, alice, limited, django_capture_on_commit_callbacks):
    client = client_for(alice)
    task_id = submit(client, "Cancel me")
    with django_capture_on_commit_callbacks(execute=True):  # released once the cancel is committed
        assert client.post(f"/v1/async/cancel/{task_id}").status_code == 200
    assert _used(limited) == {"requests": 0, "tokens": 0}


def test_an_expired_task_releases_its_hold(client_for, alice, limited):
    submit(client_for(alice), "Too late", deadline_s=1)
    queue.expire_and_purge(timezone.now() + timedelta(seconds=5))
    assert _used(limited) == {"requests": 0, "tokens": 0}


def test_an_identical_submission_reuses_the_task_and_holds_nothing_more(client_for, alice, limited):
    client = client_for(alice)
    first = submit(client, "Same question")
    after_first = _used(limited)
    assert submit(client, "Same question") == first
    assert _used(limited) == after_first


def test_a_batch_holds_one_request_per_distinct_task(client_for, alice, limited):
    items = [{"agent_type": "Chat", "max_tokens": 4, "messages": [{"role": "user", "content": q}]} for q in "aab"]
    response = client_for(alice).post("/v1/async/submit-batch", {"requests": items}, format="json")
    assert response.status_code == 202, response.content
    assert _used(limited)["requests"] == 2  # the repeated item is answered with the same task


def test_a_batch_over_the_quota_is_refused_whole_and_holds_nothing(client_for, alice, limited):
    items = [
        {"agent_type": "Chat", "max_tokens": 4, "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(6)
    ]
    response = client_for(alice).post("/v1/async/submit-batch", {"requests": items}, format="json")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "quota_exceeded"
    assert "daily requests quota of location 'demo'" in response.json()["error"]["message"]
    assert int(response["Retry-After"]) > 0
    assert _used(limited) == {"requests": 0, "tokens": 0}


def test_a_submission_refused_after_its_hold_was_made_releases_it(client_for, alice, limited, settings):
    settings.MEDAI_QUEUE_MAX = 1
    client = client_for(alice)
    submit(client, "first", "low")
    held = _used(limited)
    response = ask(client, "second", "low")  # the queue is full: 429 queue_full, after the hold was made
    assert response.status_code == 429 and response.json()["error"]["code"] == "queue_full"
    assert _used(limited) == held
