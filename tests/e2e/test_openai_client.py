"""The official `openai` client, unchanged, against medai in front of a real llama.cpp server."""

from __future__ import annotations

import openai
import pytest

from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUESTION = [{"role": "user", "content": "Name one symptom of the common cold."}]


@pytest.fixture
def client(live_medai, llama_server, alice, api_key_for):
    register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct", agents=("Chat", "MedicalQA"))
    return openai.OpenAI(base_url=f"{live_medai}/v1", api_key=api_key_for(alice), max_retries=0, timeout=60)


def test_openai_client_gets_an_answer_from_the_real_model(client):
    completion = client.chat.completions.create(model="MedicalQA", messages=QUESTION, max_tokens=16)
    assert completion.model == "smollm2-135m"
    assert completion.choices[0].message.content.strip()
    assert completion.usage.completion_tokens > 0
    records_written()  # written after the answer, in the background
    task = InferenceTask.objects.get()
    assert task.status == "completed" and task.completion_tokens == completion.usage.completion_tokens
    assert task.prompt_tokens == completion.usage.prompt_tokens > 0


def test_openai_client_streams_from_the_real_model(client):
    stream = client.chat.completions.create(model="smollm2-135m", messages=QUESTION, max_tokens=16, stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert "".join(pieces).strip()
    records_written()  # a stream's record: by the background writer after [DONE]
    task = InferenceTask.objects.get()
    assert task.stream and task.status == "completed" and task.completion_tokens > 0


def test_openai_client_lists_models(client):
    ids = {m.id for m in client.models.list()}
    assert {"smollm2-135m", "MedicalQA", "Chat"} <= ids


def test_openai_client_sees_typed_errors(client, live_medai):
    with pytest.raises(openai.NotFoundError) as missing:  # as OpenAI answers an unknown model
        client.chat.completions.create(model="no-such-model", messages=QUESTION)
    assert missing.value.code == "model_not_found" and missing.value.body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="smollm2-135m", messages=[{"role": "user", "content": "  "}])
    assert bad.value.body["param"] == "messages[0].content"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live_medai}/v1", api_key="mk_bad_key", max_retries=0).models.list()


def test_agent_type_as_extra_body_field(client):
    completion = client.chat.completions.create(
        model="smollm2-135m", messages=QUESTION, max_tokens=4, extra_body={"agent_type": "Chat", "priority": "high"}
    )
    assert completion.choices[0].message.content is not None
    records_written()
    task = InferenceTask.objects.get()
    assert task.agent_type == "Chat" and task.priority == 2
