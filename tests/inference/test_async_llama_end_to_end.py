"""End to end through a real llama.cpp server: submitted over the API, run by the worker entry
point with collation, answered in the OpenAI shape with real token counts."""

from __future__ import annotations

import pytest

from apps.inference import tasks
from apps.inference.models import InferenceTask
from tests.conftest import register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db


def test_a_batch_of_questions_is_answered_by_llama_cpp_through_the_queue(client_for, alice, llama_server):
    register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct", agents=("Chat",))
    client = client_for(alice)
    ids = [submit(client, f"Name one vital sign. ({i})", "normal", max_tokens=8) for i in range(3)]
    assert tasks.run_inference(ids[0]) == "completed"  # the other two ride along (same model)
    for task_id in ids:
        body = client.get(f"/v1/async/result/{task_id}").json()
        assert body["model"] == "smollm2-135m"
        assert isinstance(body["choices"][0]["message"]["content"], str)
        assert body["usage"]["completion_tokens"] > 0
    assert {t.completion_tokens > 0 for t in InferenceTask.objects.all()} == {True}
