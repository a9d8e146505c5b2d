"""A workflow run on the priority queue, through the real worker path against medai's stub backend:
the steps of a stage are tasks queued together (at the run's priority, with its deadline, each on
its agent type's route), the next stage is queued from the queue's after-commit hook once they all
ended, its prompts made of their outputs; the last stage's output is the result. A failed step
fails the run naming the step; a route's fallback model answers in its place first."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.inference import queue
from apps.inference.models import InferenceTask, Priority, TaskBatch, WorkflowRun
from apps.inference.workflows import advance, runs
from tests.conftest import records_written, register_model
from tests.inference.batch_helpers import run_worker
from tests.support.servers import set_stub_mode, start_stub

pytestmark = pytest.mark.django_db(transaction=True)  # the queue's after-commit hooks advance the runs

NOTE = "Mr. Hale, 71, admitted with community-acquired pneumonia; treated with ceftriaxone; discharged on day 4."
AGENTS = ("Clinical", "Documentation", "Billing")


@pytest.fixture
def client(client_for, alice, stub_backend):
    register_model("stub-a", stub_backend, agents=AGENTS)
    runs.ensure_discharge_summary()
    return client_for(alice)


def start(client: Any, name: str = "discharge-summary", **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/workflows/{name}/runs", {"document": NOTE, **body}, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def tasks_by_step(run_id: str) -> dict[str, InferenceTask]:
    return {t.request["workflow_step"]: t for t in InferenceTask.objects.filter(batch_id=run_id)}


def backend_log(url: str) -> list[str]:
    return httpx.get(url.removesuffix("/v1") + "/_stats", timeout=5).json()["log"]


def test_the_discharge_summary_drafts_in_parallel_then_merges_the_drafts(client, stub_backend):
    billing_stub, billing_url = start_stub()
    try:
        register_model("stub-billing", billing_url, agents=(), rank=5)
        from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint

        AgentRouteEntry.objects.filter(route__agent_type="Billing").delete()
        AgentRouteEntry.objects.create(
            route=AgentRoute.objects.get(agent_type="Billing"), endpoint=ModelEndpoint.objects.get(name="stub-billing")
        )
        set_stub_mode(
            billing_url,
            "ok",
            reply={"message": {"content": "J18.9 pneumonia, unspecified organism"}},
        )
        set_stub_mode(stub_backend, "ok", log=[])
        created = start(client)
        assert set(created) == {"id", "object", "status"}
        assert (created["object"], created["status"]) == ("workflow.run", "queued")
        queued = client.get(f"/v1/workflows/runs/{created['id']}").json()
        assert [(s["name"], s["stage"], s["status"]) for s in queued["steps"]] == [
            ("clinical", 0, "queued"),
            ("documentation", 0, "queued"),
            ("billing", 0, "queued"),
            ("merge", 1, "pending"),
        ]
        stage0 = tasks_by_step(created["id"])
        assert set(stage0) == {"clinical", "documentation", "billing"}  # all three queued at once
        assert {t.agent_type for t in stage0.values()} == set(AGENTS)
        assert all(NOTE in t.request["payload"]["messages"][-1]["content"] for t in stage0.values())

        assert run_worker() == 4  # three drafts, then the merge the hook queued when they ended

        done = client.get(f"/v1/workflows/runs/{created['id']}").json()
        assert done["status"] == "completed", done
        assert {s["status"] for s in done["steps"]} == {"completed"}
        for s in done["steps"]:
            assert s["task_id"] and s["started_at"] and s["finished_at"] and s["duration_ms"] is not None
        assert done["started_at"] and done["finished_at"] and done["duration_ms"] is not None
        merge = tasks_by_step(created["id"])["merge"]
        assert merge.agent_type == "Documentation"
        prompt = merge.request["payload"]["messages"][-1]["content"]
        # the merge's prompt is made of the three drafts' outputs, each under its step's name
        assert "## billing (Billing)\nJ18.9 pneumonia, unspecified organism" in prompt
        assert "## clinical (Clinical)\nOK" in prompt and "## documentation (Documentation)\nOK" in prompt
        assert NOTE not in prompt  # the merge template uses the drafts, not the note
        assert backend_log(stub_backend)[-1] == prompt  # and that is what the model was sent
        assert done["result"] == {"content": "OK"}  # the merge's answer
        assert done["error"] is None
    finally:
        billing_stub.stop()


def test_the_steps_are_queued_at_the_runs_priority_with_its_deadline(client):
    created = start(client, priority="high", deadline_s=600)
    tasks = list(InferenceTask.objects.filter(batch_id=created["id"]))
    assert {t.priority for t in tasks} == {Priority.HIGH}
    run = WorkflowRun.objects.get(pk=created["id"])
    assert all(abs((t.deadline - run.deadline).total_seconds()) < 2 for t in tasks)
    assert TaskBatch.objects.get(pk=created["id"]).holds_results is True  # kept for the merge
    records_written()
    actions = list(AuditEvent.objects.values_list("action", flat=True))
    assert "workflow.run.create" in actions and actions.count("inference.submit_batch") == 1


def test_a_failed_step_fails_the_run_naming_the_step_and_queues_no_merge(client_for, alice, stub_backend, settings):
    settings.MEDAI_BACKEND_RETRIES = 0
    register_model("stub-a", stub_backend, agents=("Clinical", "Documentation"))
    broken_stub, broken_url = start_stub("error503")
    try:
        register_model("stub-broken", broken_url, agents=("Billing",))
        runs.ensure_discharge_summary()
        client = client_for(alice)
        created = start(client)
        run_worker()
        body = client.get(f"/v1/workflows/runs/{created['id']}").json()
        assert body["status"] == "failed"
        assert body["error"]["code"] == "step_failed"
        assert body["error"]["message"].startswith("Step 'billing' (Billing) failed: ")
        assert "stub-broken" in body["error"]["message"]  # the backend's readable reason
        steps = {s["name"]: s for s in body["steps"]}
        assert steps["billing"]["status"] == "failed" and steps["billing"]["error"]["code"] == "backend_unavailable"
        assert steps["merge"]["status"] == "skipped" and steps["merge"]["task_id"] is None
        assert body["result"] is None
        assert "merge" not in tasks_by_step(created["id"])
        assert TaskBatch.objects.get(pk=created["id"]).holds_results is False  # retention takes them now
        records_written()
        finish = AuditEvent.objects.get(action="workflow.run.finish")
        assert (finish.details["status"], finish.details["error_code"]) == ("failed", "step_failed")
    finally:
        broken_stub.stop()


def test_a_routes_fallback_model_answers_for_a_step_whose_first_model_fails(client_for, alice, stub_backend, settings):
    settings.MEDAI_BACKEND_RETRIES = 0
    broken_stub, broken_url = start_stub("error503")
    try:
        register_model("stub-broken", broken_url, agents=AGENTS, rank=1)
        register_model("stub-a", stub_backend, agents=AGENTS, position=1)
        runs.ensure_discharge_summary()
        client = client_for(alice)
        created = start(client)
        run_worker()
        body = client.get(f"/v1/workflows/runs/{created['id']}").json()
        assert body["status"] == "completed", body
        assert {s["model"] for s in body["steps"]} == {"stub-a"}
    finally:
        broken_stub.stop()


def test_a_step_still_queued_at_the_deadline_fails_the_run(client):
    created = start(client, deadline_s=5)
    later = timezone.now() + timezone.timedelta(seconds=10)
    queue.expire_and_purge(now=later)  # the minute schedule, past the deadline
    body = client.get(f"/v1/workflows/runs/{created['id']}").json()
    assert body["status"] == "failed"
    assert body["error"]["code"] == "deadline_exceeded"
    assert "still queued at the run's deadline" in body["error"]["message"]


def test_a_cancelled_run_cancels_its_queued_steps_and_queues_nothing_more(client):
    created = start(client)
    cancelled = client.post(f"/v1/workflows/runs/{created['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["status"] == "cancelled"
    assert {t.status for t in InferenceTask.objects.filter(batch_id=created["id"])} == {"cancelled"}
    assert run_worker() == 0
    assert client.post(f"/v1/workflows/runs/{created['id']}/cancel").status_code == 409
    assert WorkflowRun.objects.get(pk=created["id"]).status == "cancelled"


def test_a_stage_held_up_by_the_quota_waits_and_the_schedule_queues_it(client, demo, settings):
    from apps.accounts.governance import quotas

    quotas.set_quota(location=demo.code, period="day", requests=3)
    quotas.publish()
    created = start(client)
    assert run_worker() == 3  # the drafts; the merge would be the fourth request of the day
    body = client.get(f"/v1/workflows/runs/{created['id']}").json()
    assert body["status"] == "running" and body["stage"] == 1
    assert "Waiting to queue stage 1" in body["waiting"]
    assert {s["name"]: s["status"] for s in body["steps"]}["merge"] == "pending"
    quotas.set_quota(location=demo.code, period="day", requests=10)
    quotas.publish()
    assert advance.sweep()["runs"] == 1  # the minute schedule
    assert run_worker() == 1
    done = client.get(f"/v1/workflows/runs/{created['id']}").json()
    assert done["status"] == "completed" and done["waiting"] is None


def test_an_owner_deactivated_mid_run_gets_no_later_stage(client, alice, stub_backend):
    created = start(client)
    set_stub_mode(stub_backend, "ok")

    def deactivate() -> None:
        if not alice.is_active:
            return
        type(alice).objects.filter(pk=alice.pk).update(is_active=False)
        alice.is_active = False

    run_worker(each=deactivate)
    run = WorkflowRun.objects.get(pk=created["id"])
    assert run.status == "failed" and run.error_code == "user_inactive"
    assert "merge" not in tasks_by_step(created["id"])


def test_the_hook_finds_an_open_run_by_its_id_and_nothing_else(client):
    """``advance._open_run`` (the hook's statement, compiled once) against the ORM."""
    import uuid

    pk = uuid.UUID(start(client)["id"])
    for _ in range(2):
        found = advance._open_run.get(pk)
        assert found is not None and found.pk == WorkflowRun.objects.get().pk
        advance._open_run.forget()
    assert advance._open_run.get(uuid.uuid4()) is None
    WorkflowRun.objects.filter(pk=pk).update(status=WorkflowRun.Status.CANCELLED)
    assert advance._open_run.get(pk) is None
