"""Admins define workflows with their steps inline (a step naming an output that does not exist yet
is refused), and read runs with each step's status and timings, never the document."""

from __future__ import annotations

from typing import Any

import pytest

from apps.accounts.services import authenticate_header
from apps.inference.models import AgentRoute, Workflow
from apps.inference.workflows import runs
from tests.conftest import register_model

pytestmark = pytest.mark.django_db


def _form(steps: list[tuple[str, int, str, str]], name: str = "triage") -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "description": "",
        "active": "on",
        "steps-TOTAL_FORMS": str(len(steps)),
        "steps-INITIAL_FORMS": "0",
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    }
    for i, (step, stage, agent_type, prompt) in enumerate(steps):
        data.update(
            {
                f"steps-{i}-name": step,
                f"steps-{i}-stage": str(stage),
                f"steps-{i}-agent_type": str(AgentRoute.objects.get_or_create(agent_type=agent_type)[0].pk),
                f"steps-{i}-prompt": prompt,
                f"steps-{i}-max_tokens": "",
            }
        )
    return data


def test_a_workflow_is_defined_with_its_steps_inline(admin_client):
    steps = [("clinical", 0, "Clinical", "{document}"), ("merge", 1, "Documentation", "{clinical}")]
    response = admin_client.post("/admin/inference/workflow/add/", _form(steps))
    assert response.status_code == 302, response.content.decode()[:2000]
    workflow = Workflow.objects.get(name="triage")
    assert [(s.name, s.stage) for s in workflow.steps.order_by("stage")] == [("clinical", 0), ("merge", 1)]
    listed = admin_client.get("/admin/inference/workflow/").content.decode()
    assert "Clinical → Documentation" in listed


def test_a_step_using_an_output_of_its_own_stage_is_refused(admin_client):
    steps = [("clinical", 0, "Clinical", "{document}"), ("billing", 0, "Billing", "{clinical}")]
    response = admin_client.post("/admin/inference/workflow/add/", _form(steps))
    assert response.status_code == 200
    assert "uses {clinical}, a step of stage 0" in response.content.decode()
    assert not Workflow.objects.filter(name="triage").exists()


def test_the_name_runs_is_reserved(admin_client):
    response = admin_client.post("/admin/inference/workflow/add/", _form([("a", 0, "Chat", "")], name="runs"))
    assert response.status_code == 200 and not Workflow.objects.filter(name="runs").exists()


def test_a_run_shows_its_steps_timings_but_not_the_document(admin_client, alice, token_for):
    register_model("stub", "http://127.0.0.1:9/v1", agents=("Clinical", "Documentation", "Billing"))
    runs.ensure_discharge_summary()
    principal = authenticate_header(f"Bearer {token_for(alice)}")
    run = runs.start_run(principal, "discharge-summary", {"document": "Mrs. Garcia, chest pain"})
    listed = admin_client.get("/admin/inference/workflowrun/").content.decode()
    assert "discharge-summary" in listed
    page = admin_client.get(f"/admin/inference/workflowrun/{run.pk}/change/").content.decode()
    for step in ("clinical", "documentation", "billing", "merge"):
        assert f"<td>{step}</td>" in page
    assert "pending" in page and "queued" in page
    assert "Garcia" not in page
