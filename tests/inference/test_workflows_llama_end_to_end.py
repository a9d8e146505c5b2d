"""``discharge-summary`` end to end on a real llama.cpp server (the bundled SmolLM2): started over the
API, its three drafts and then its merge run by the worker entry point from the priority queue,
the merge's prompt made of the drafts the model wrote, the summary the model's own answer."""

from __future__ import annotations

import pytest

from apps.inference.models import InferenceTask
from apps.inference.workflows import runs
from tests.conftest import register_model
from tests.inference.batch_helpers import run_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NOTE = (
    "Discharge note. Mr. Hale, 71, admitted with community-acquired pneumonia. Treated with IV "
    "ceftriaxone, then oral amoxicillin. Afebrile since day 3. Discharged home on day 4 on "
    "amoxicillin 500 mg three times a day for 5 days. Follow-up with his GP in one week."
)


def test_the_discharge_summary_runs_end_to_end_on_llama_cpp(client_for, alice, llama_server):
    register_model(
        "smollm2-135m",
        llama_server,
        served="smollm2-135m-instruct",
        agents=("Clinical", "Documentation", "Billing"),
    )
    runs.ensure_discharge_summary()
    client = client_for(alice)
    created = client.post("/v1/workflows/discharge-summary/runs", {"document": NOTE, "priority": "high"}, format="json")
    assert created.status_code == 202, created.content
    run_id = created.json()["id"]
    assert run_worker() == 4
    body = client.get(f"/v1/workflows/runs/{run_id}").json()
    assert body["status"] == "completed", body
    assert [s["status"] for s in body["steps"]] == ["completed"] * 4
    assert {s["model"] for s in body["steps"]} == {"smollm2-135m"}
    assert all(s["duration_ms"] > 0 for s in body["steps"])
    tasks = {t.request["workflow_step"]: t for t in InferenceTask.objects.filter(batch_id=run_id)}
    merge_prompt = tasks["merge"].request["payload"]["messages"][-1]["content"]
    for name in ("clinical", "documentation", "billing"):
        draft = tasks[name].result["choices"][0]["message"]["content"].strip()
        assert draft and draft in merge_prompt  # the model's drafts are what the merge was given
        assert tasks[name].completion_tokens > 0
    summary = body["result"]["content"]
    assert summary.strip() and summary == tasks["merge"].result["choices"][0]["message"]["content"]
