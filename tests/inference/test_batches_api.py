"""The Batch API on the priority queue (``/v1/batches``), against medai's stub backend: a batch's
lines become tasks of the queue through the queue's own batch submit, fed gradually (never more
than MEDAI_BATCH_MAX of them queued, never the queue past half of MEDAI_QUEUE_MAX), at the
batch's priority and deadline; the output and error files are written in OpenAI's format when the
last line ends; cancel, expiry, failures and refusals each end up in the error file."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.inference import queue
from apps.inference.filebatch import feed
from apps.inference.filebatch_models import FileBatch, StoredFile
from apps.inference.models import InferenceTask, Priority, TaskBatch
from tests.conftest import register_model
from tests.inference.batch_helpers import content, create, line, live, made, run_worker, tasks_of
from tests.support.openai_spec import assert_valid

pytestmark = pytest.mark.django_db(transaction=True)  # the queue's after-commit hooks feed the batches


@pytest.fixture
def client(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend)
    return client_for(alice)


def test_a_batch_is_created_in_progress_its_lines_queued_at_low_priority(client):
    batch = made(client, [line("a"), line("b"), line("c", "Name one vital sign.")])
    assert_valid("Batch", batch)
    assert batch["id"].startswith("batch_") and batch["object"] == "batch"
    assert (batch["status"], batch["endpoint"], batch["completion_window"]) == (
        "in_progress",
        "/v1/chat/completions",
        "24h",
    )
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 0}
    assert batch["expires_at"] - batch["created_at"] == 86_400 and batch["in_progress_at"] >= batch["created_at"]
    tasks = list(tasks_of(batch["id"]))
    assert len(tasks) == 3  # identical lines "a" and "c" are two requests: no de-duplication
    assert {(t.status, t.priority, t.dedup_key) for t in tasks} == {("queued", Priority.LOW, "")}
    expires = FileBatch.objects.get().expires_at
    assert all(abs((t.deadline - expires).total_seconds()) < 2 for t in tasks)  # the batch's expiry
    assert sorted(t.request["custom_id"] for t in tasks) == ["a", "b", "c"]
    assert TaskBatch.objects.get().holds_results is True
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"file.upload", "batch.create", "inference.submit_batch"} <= actions


def test_the_round_trip_writes_the_answers_in_file_order_under_their_custom_ids(client):
    lines = [line(f"q-{i}", f"question {i}") for i in range(5)]
    batch = made(client, lines, metadata={"ward": "3B"})
    assert run_worker() == 5
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert_valid("Batch", done)
    assert done["status"] == "completed" and done["request_counts"] == {"total": 5, "completed": 5, "failed": 0}
    assert "error_file_id" not in done and done["metadata"] == {"ward": "3B"}
    assert done["usage"]["input_tokens"] == 25 and done["usage"]["output_tokens"] == 5  # the stub's 5 + 1 each
    assert done["finalizing_at"] and done["completed_at"] >= done["finalizing_at"]
    output = content(client, done["output_file_id"])
    assert [o["custom_id"] for o in output] == [f"q-{i}" for i in range(5)]
    for o in output:
        assert o["id"].startswith("batch_req_") and o["error"] is None
        assert o["response"]["status_code"] == 200
        assert o["response"]["body"]["object"] == "chat.completion"
        assert o["response"]["body"]["choices"][0]["message"]["content"] == "OK"
        assert InferenceTask.objects.filter(id=o["response"]["request_id"], status="completed").exists()
    file = client.get(f"/v1/files/{done['output_file_id']}").json()
    assert file["purpose"] == "batch_output" and file["filename"] == f"{batch['id']}_output.jsonl"
    assert TaskBatch.objects.get().holds_results is False  # retention takes the tasks now
    event = AuditEvent.objects.get(action="batch.finish")
    assert event.details["status"] == "completed" and event.actor == "alice"


def test_a_long_file_is_fed_gradually_never_more_than_the_batch_max_queued(client, settings):
    settings.MEDAI_BATCH_MAX = 4
    batch = made(client, [line(f"r{i}", f"question {i}") for i in range(11)])
    assert tasks_of(batch["id"]).count() == 4  # the first part, at once
    seen: list[int] = []
    assert run_worker(each=lambda: seen.append(live(batch["id"]))) == 11
    assert max(seen) <= 4 and tasks_of(batch["id"]).count() == 11
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 11
    assert [o["custom_id"] for o in content(client, done["output_file_id"])] == [f"r{i}" for i in range(11)]
    assert AuditEvent.objects.filter(action="inference.submit_batch").count() >= 3  # each part, one event


def test_the_feed_leaves_half_the_queue_to_other_work(client, settings):
    settings.MEDAI_QUEUE_MAX = 10
    batch = made(client, [line(f"r{i}") for i in range(8)])
    assert tasks_of(batch["id"]).count() == 5  # the queue kept at half its limit
    other = client.post(
        "/v1/async/submit", {"agent_type": "Chat", "messages": [{"role": "user", "content": "now"}]}, format="json"
    )
    assert other.status_code == 202  # interactive work still queues (no emergency mode)
    run_worker()
    assert client.get(f"/v1/batches/{batch['id']}").json()["request_counts"]["completed"] == 8


def test_metadata_priority_sets_the_lines_priority(client):
    batch = made(client, [line("a")], metadata={"priority": "high"})
    assert tasks_of(batch["id"]).get().priority == Priority.HIGH
    bad = create(client, [line("a")], metadata={"priority": "urgent"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "metadata.priority"


@pytest.mark.parametrize(
    "fields, status, param",
    [
        ({"endpoint": "/v1/embeddings"}, 400, "endpoint"),
        ({"endpoint": "/v1/responses"}, 400, "endpoint"),
        ({"completion_window": "48h"}, 400, "completion_window"),
        ({"completion_window": 24}, 400, "completion_window"),
        ({"input_file_id": "file-" + "0" * 32}, 404, "input_file_id"),
        ({"input_file_id": None}, 400, "input_file_id"),
        ({"colour": "blue"}, 400, "colour"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, 400, "metadata"),
        ({"metadata": {"k": 3}}, 400, "metadata.k"),
        ({"metadata": "x"}, 400, "metadata"),
        ({"output_expires_after": {"anchor": "created_at", "seconds": 60}}, 400, "output_expires_after.seconds"),
        ({"output_expires_after": 5}, 400, "output_expires_after"),
    ],
)
def test_a_bad_create_is_a_400_naming_the_field(client, fields, status, param):
    response = create(client, [line("a")], **fields)
    assert response.status_code == status, response.content
    assert response.json()["error"]["param"] == param
    assert not FileBatch.objects.exists() and not InferenceTask.objects.exists()


def test_a_line_for_an_unknown_model_is_refused_at_create_naming_the_line(client):
    response = create(client, [line("a"), line("b", model="no-such-model")])
    assert response.status_code == 404, response.content
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "line[2].body.model"
    assert "line 2" in error["message"]


def test_an_output_file_cannot_be_the_input_of_a_batch(client):
    batch = made(client, [line("a")])
    run_worker()
    output = client.get(f"/v1/batches/{batch['id']}").json()["output_file_id"]
    response = client.post(
        "/v1/batches",
        {"input_file_id": output, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        format="json",
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "input_file_id"


def test_cancel_stops_the_batch_and_answers_the_rest_in_the_error_file(client, settings):
    settings.MEDAI_BATCH_MAX = 4
    batch = made(client, [line(f"r{i}") for i in range(10)])
    first = tasks_of(batch["id"]).order_by("queued_at").first()
    assert queue.run_task(str(first.id), collate=False) == "completed"  # one answered before the cancel
    InferenceTask.objects.filter(id=tasks_of(batch["id"]).filter(status="queued").first().id).update(
        status="processing"
    )  # one running on a worker while the cancel comes
    cancelling = client.post(f"/v1/batches/{batch['id']}/cancel")
    assert cancelling.status_code == 200, cancelling.content
    assert_valid("Batch", cancelling.json())
    assert cancelling.json()["status"] == "cancelling" and cancelling.json()["cancelling_at"]
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "cancelling"  # one still runs
    assert live(batch["id"]) == 1
    running = tasks_of(batch["id"]).get(status="processing")
    InferenceTask.objects.filter(id=running.id).update(status="queued")
    assert queue.run_task(str(running.id), collate=False) == "completed"  # it finishes: the batch ends
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "cancelled" and done["cancelled_at"]
    assert done["request_counts"] == {"total": 10, "completed": 2, "failed": 0}
    assert len(content(client, done["output_file_id"])) == 2
    errors = content(client, done["error_file_id"])
    assert len(errors) == 8 and {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert tasks_of(batch["id"]).count() == 4  # nothing more was fed after the cancel
    again = client.post(f"/v1/batches/{batch['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "batch_not_cancellable"
    assert AuditEvent.objects.filter(action="batch.cancel").count() == 1
    assert AuditEvent.objects.filter(action="inference.cancel").count() == 2  # the two still queued


def test_a_batch_with_nothing_running_is_cancelled_at_once(client):
    batch = made(client, [line("a"), line("b")])
    assert client.post(f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelling"
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "cancelled" and "output_file_id" not in done
    assert [e["custom_id"] for e in content(client, done["error_file_id"])] == ["a", "b"]


def test_failed_lines_go_to_the_error_file_with_the_backends_answer(client, stub_backend):
    from tests.support.servers import set_stub_mode

    batch = made(client, [line("ok-1"), line("bad-1"), line("ok-2")])
    ids = {t.request["custom_id"]: str(t.id) for t in tasks_of(batch["id"])}
    assert queue.run_task(ids["ok-1"], collate=False) == "completed"
    set_stub_mode(stub_backend, "reject400")
    assert queue.run_task(ids["bad-1"], collate=False) == "failed"
    set_stub_mode(stub_backend, "ok")
    assert queue.run_task(ids["ok-2"], collate=False) == "completed"
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "completed" and done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert [o["custom_id"] for o in content(client, done["output_file_id"])] == ["ok-1", "ok-2"]
    [error] = content(client, done["error_file_id"])
    assert error["custom_id"] == "bad-1" and error["error"] is None
    assert error["response"]["status_code"] == 400 and error["response"]["request_id"] == ids["bad-1"]
    assert error["response"]["body"]["error"]["message"]


def test_the_completion_window_expires_what_did_not_run(client, settings):
    settings.MEDAI_BATCH_MAX = 2
    batch = made(client, [line(f"r{i}") for i in range(5)])
    first = tasks_of(batch["id"]).order_by("queued_at").first()
    assert queue.run_task(str(first.id), collate=False) == "completed"  # fed one more meanwhile
    past = timezone.now() - timedelta(seconds=1)  # the window is over (as a day later)
    FileBatch.objects.update(expires_at=past)
    tasks_of(batch["id"]).filter(status="queued").update(deadline=past)
    queue.expire_and_purge()  # the queue's minute sweep expires the queued lines, whose hook ends the batch
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "expired" and done["expired_at"]
    assert done["request_counts"] == {"total": 5, "completed": 1, "failed": 4}
    errors = content(client, done["error_file_id"])
    assert [e["custom_id"] for e in errors] == ["r1", "r2", "r3", "r4"]
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}


def test_a_window_that_ends_with_nothing_queued_is_expired_by_the_schedule(client):
    batch = made(client, [line("a")])
    run_worker()
    assert client.get(f"/v1/batches/{batch['id']}").json()["status"] == "completed"
    other = made(client, [line("b"), line("c")])
    FileBatch.objects.filter(pk=other["id"].removeprefix("batch_")).update(expires_at=timezone.now())
    tasks_of(other["id"]).update(status="failed", error_code="x", finished_at=timezone.now())  # ended, hooks missed
    assert feed.sweep()["batches"] == 1
    assert client.get(f"/v1/batches/{other['id']}").json()["status"] == "expired"


def test_line_results_outlive_the_queues_retention_until_the_output_is_written(client, settings):
    settings.MEDAI_BATCH_MAX = 1
    batch = made(client, [line("a"), line("b")])
    first = tasks_of(batch["id"]).get()
    with pytest.MonkeyPatch.context() as patch:  # the second line is held up: the batch stays open
        patch.setattr(feed, "headroom", lambda: 0)
        assert queue.run_task(str(first.id), collate=False) == "completed"
    queue.expire_and_purge(timezone.now() + timedelta(hours=2))  # long past MEDAI_RESULT_TTL
    first.refresh_from_db()
    assert first.content_purged_at is None and first.result  # kept for the output file
    feed.sweep()  # the schedule feeds the second line
    run_worker()
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert [o["custom_id"] for o in content(client, done["output_file_id"])] == ["a", "b"]
    queue.expire_and_purge(timezone.now() + timedelta(hours=2))
    first.refresh_from_db()
    assert first.content_purged_at is not None  # written out: the queue's retention applies again


def test_a_line_refused_when_fed_is_answered_in_the_error_file(client, settings, stub_backend):
    from apps.inference.models import ModelEndpoint

    settings.MEDAI_BATCH_MAX = 2
    register_model("stub-b", stub_backend, agents=())
    batch = made(client, [line("a"), line("b"), line("c", model="stub-b"), line("d")])
    ModelEndpoint.objects.filter(name="stub-b").delete()  # its model is gone by the time it is fed
    from apps.inference import router

    router.invalidate()
    run_worker()
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    assert [o["custom_id"] for o in content(client, done["output_file_id"])] == ["a", "b", "d"]
    [refused] = content(client, done["error_file_id"])
    assert refused["custom_id"] == "c" and refused["response"]["request_id"] is None
    assert refused["response"]["status_code"] == 404
    assert refused["response"]["body"]["error"]["code"] == "model_not_found"


def test_a_model_disabled_meanwhile_holds_the_rest_until_it_is_back(client, settings):
    from apps.inference import router
    from apps.inference.models import ModelEndpoint

    settings.MEDAI_BATCH_MAX = 2
    batch = made(client, [line(f"r{i}") for i in range(4)])
    ModelEndpoint.objects.update(enabled=False)
    router.invalidate()
    InferenceTask.objects.filter(status="queued").update(status="failed", finished_at=timezone.now())
    feed.sweep()
    held = client.get(f"/v1/batches/{batch['id']}").json()
    assert held["status"] == "in_progress" and held["errors"]["data"][0]["code"] == "no_model_available"
    ModelEndpoint.objects.update(enabled=True)
    router.invalidate()
    feed.sweep()
    run_worker()
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "completed" and done["request_counts"] == {"total": 4, "completed": 2, "failed": 2}


def test_an_owner_who_is_deactivated_stops_her_batch(client, alice, settings):
    settings.MEDAI_BATCH_MAX = 2
    batch = made(client, [line(f"r{i}") for i in range(6)])
    alice.is_active = False
    alice.save()
    run_worker()
    done = FileBatch.objects.get()
    assert done.status == "failed" and done.unfed_code == "user_inactive"
    assert tasks_of(batch["id"]).count() == 2  # only the part queued while she could
    assert done.completed_count == 2 and done.failed_count == 4


def test_a_rate_limited_part_waits_and_goes_later(client, settings):
    from apps.accounts import governance

    settings.MEDAI_BATCH_MAX = 4
    batch = made(client, [line(f"r{i}") for i in range(8)])
    calls = {"n": 0}
    real = governance.admit

    def limited(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 3:  # the first top-up and its halves are refused for now
            raise governance.LimitExceeded("rate_limit_exceeded", "Too many requests.", 1)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(governance, "admit", limited)
        run_worker(limit=2)
        waiting = client.get(f"/v1/batches/{batch['id']}").json()
        assert waiting["status"] == "in_progress"
        assert waiting["errors"]["data"][0]["code"] == "rate_limit_exceeded"
        run_worker()
        feed.sweep()
        run_worker()
    done = client.get(f"/v1/batches/{batch['id']}").json()
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 8
    assert "errors" not in done


def test_batches_are_listed_newest_first_in_pages(client):
    ids = [made(client, [line("a")])["id"] for _ in range(3)]
    page = client.get("/v1/batches").json()
    assert_valid("ListBatchesResponse", page)
    assert [b["id"] for b in page["data"]] == ids[::-1] and page["has_more"] is False
    first = client.get("/v1/batches?limit=2").json()
    assert [b["id"] for b in first["data"]] == ids[:0:-1] and first["has_more"] is True
    rest = client.get(f"/v1/batches?limit=2&after={first['last_id']}").json()
    assert [b["id"] for b in rest["data"]] == ids[:1] and rest["has_more"] is False
    for query in ("limit=0", "limit=101", "after=batch_nope", "after=" + "batch_" + "0" * 32):
        bad = client.get(f"/v1/batches?{query}")
        assert bad.status_code == 400, query


@pytest.mark.parametrize("batch_id", ["nope", "batch_", "batch_zz", "0" * 32, "batch_" + "0" * 32])
def test_an_odd_batch_id_is_a_404(client, batch_id):
    for path in (f"/v1/batches/{batch_id}", f"/v1/batches/{batch_id}/cancel"):
        response = client.get(path) if not path.endswith("cancel") else client.post(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "batch_not_found"


def test_an_input_file_cannot_be_deleted_while_its_batch_runs(client):
    batch = made(client, [line("a")])
    assert client.delete(f"/v1/files/{batch['input_file_id']}").status_code == 409
    run_worker()
    assert client.delete(f"/v1/files/{batch['input_file_id']}").status_code == 200
    assert client.get(f"/v1/batches/{batch['id']}").json()["input_file_id"] == batch["input_file_id"]


def test_files_past_their_retention_are_purged_unless_held(client, alice):
    from apps.inference.retention import place_hold

    batch = made(client, [line("a")])
    run_worker()
    StoredFile.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    hold = place_hold(None, reason="case 12", user=alice)
    assert feed.sweep()["files_purged"] == 0
    from apps.inference.retention import release_hold

    release_hold(None, hold)
    assert feed.sweep()["files_purged"] == 2  # the input and the output
    assert client.get(f"/v1/files/{batch['input_file_id']}").status_code == 404
    assert AuditEvent.objects.filter(action="file.purge").exists()


def test_the_hook_reads_an_open_file_batch_and_its_live_count_as_the_orm_does(client, settings):
    """``feed._open_with_live`` (the hook's one precompiled statement) against the plain ORM."""
    from apps.inference.filebatch import feed
    from apps.inference.filebatch_models import FileBatch
    from apps.inference.models import LIVE_STATUSES

    settings.MEDAI_BATCH_MAX = 4
    batch = made(client, [line(f"r{i}") for i in range(6)])
    pk = FileBatch.objects.get().pk
    for _ in range(2):
        row = feed._open_with_live(pk)
        stored = FileBatch.objects.get(pk=pk)
        assert row == {
            "pk": pk,
            "status": stored.status,
            "fed": stored.fed,
            "total": stored.total,
            "unfed_code": stored.unfed_code,
            "expires_at": stored.expires_at,
            "live": InferenceTask.objects.filter(batch_id=pk, status__in=LIVE_STATUSES).count(),
        }
        assert row["live"] == 4 and row["expires_at"].tzinfo is not None
        feed._open_batch.forget()  # compiled anew: the same answer
    InferenceTask.objects.filter(batch_id=pk).update(status=InferenceTask.Status.FAILED)
    assert feed._open_with_live(pk)["live"] == 0
    # a batch that is no file batch (a plain submit batch), or one that ended: nothing to do
    other = client.post(
        "/v1/async/submit-batch",
        {"requests": [{"agent_type": "Chat", "messages": [{"role": "user", "content": "hi"}]}]},
        format="json",
    )
    assert other.status_code == 202, other.content
    assert feed._open_with_live(uuid.UUID(other.json()["batch_id"])) is None
    FileBatch.objects.filter(pk=pk).update(status=FileBatch.Status.COMPLETED)
    assert feed._open_with_live(pk) is None
    assert client.get(f"/v1/batches/{batch['id']}").status_code == 200
