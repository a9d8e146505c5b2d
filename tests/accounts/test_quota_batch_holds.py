"""A file batch's lines hold quota as async tasks do, each when it is fed to the queue (not the
whole file at create): a quota that has room for some lines queues those and the rest waits for
it; a create that cannot queue even one line is the quota's 429; a create that fails after
holding some releases them."""

from __future__ import annotations

import pytest

from apps.accounts.governance import store
from apps.inference.filebatch_models import FileBatch
from apps.inference.models import InferenceTask
from tests.conftest import register_model
from tests.inference.batch_helpers import create, line, made, run_worker

pytestmark = pytest.mark.django_db(transaction=True)


def _used(scope: str) -> dict[str, int]:
    return store.usage(scope)["day"]


def test_each_line_holds_its_quota_when_fed_and_settles_when_answered(client_for, alice, demo, quota, stub_backend):
    register_model("stub-a", stub_backend)
    quota(location="demo", period="day", requests=10, tokens=100_000)
    made(client_for(alice), [line("a"), line("b"), line("c")])
    held = _used(f"l:{demo.pk}")
    assert held["requests"] == 3 and held["tokens"] > 12
    run_worker()
    assert _used(f"l:{demo.pk}") == {"requests": 3, "tokens": 18}  # the stub's usage, 6 each


def test_a_quota_with_room_for_some_lines_queues_those_and_the_rest_waits(client_for, alice, demo, quota, settings):
    register_model("stub-a", "http://127.0.0.1:9/v1")
    quota(location="demo", period="day", requests=2, tokens=100_000)
    settings.MEDAI_BATCH_MAX = 4
    batch = made(client_for(alice), [line(f"r{i}") for i in range(4)])
    assert batch["status"] == "in_progress"
    assert batch["errors"]["data"][0]["code"] == "quota_exceeded"
    assert InferenceTask.objects.count() == 2 and _used(f"l:{demo.pk}")["requests"] == 2


def test_a_create_that_can_queue_nothing_is_the_quotas_429(client_for, alice, demo, quota):
    register_model("stub-a", "http://127.0.0.1:9/v1")
    quota(location="demo", period="day", requests=1, tokens=100_000)
    client = client_for(alice)
    made(client, [line("a")])
    refused = create(client, [line("b")])
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "quota_exceeded"
    assert refused["Retry-After"]
    assert FileBatch.objects.count() == 1 and InferenceTask.objects.count() == 1


def test_a_create_that_fails_after_holding_releases_the_holds(client_for, alice, demo, quota, monkeypatch):
    from apps.accounts.services import authenticate_header
    from apps.inference.filebatch import batches, files
    from tests.inference.batch_helpers import jsonl

    register_model("stub-a", "http://127.0.0.1:9/v1")
    quota(location="demo", period="day", requests=10, tokens=100_000)
    principal = authenticate_header(client_for(alice)._credentials["HTTP_AUTHORIZATION"])
    stored = files.upload(principal, data=jsonl(line("a"), line("b")), filename="f.jsonl", purpose="batch")

    def broken(batch):
        raise RuntimeError("the write after the feed failed")

    monkeypatch.setattr(batches, "push_on_commit", broken)
    with pytest.raises(RuntimeError):
        batches.create_batch(
            principal,
            {"input_file_id": stored.public_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        )
    assert not InferenceTask.objects.exists() and not FileBatch.objects.exists()
    assert _used(f"l:{demo.pk}") == {"requests": 0, "tokens": 0}
