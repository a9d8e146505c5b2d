"""The official `openai` client's legacy ``client.completions.create``, unchanged, against medai in
front of the real llama.cpp server on the bundled model: stream and not, a list of prompts, and
the errors it types. Answers are checked against OpenAI's own CreateCompletionResponse."""

from __future__ import annotations

import openai
import pytest

from apps.inference.models import InferenceTask
from tests.conftest import records_written, register_model
from tests.support.openai_spec import assert_valid

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PROMPT = "The three most common symptoms of the flu are"


@pytest.fixture
def client(live_medai, llama_server, alice, api_key_for):
    register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct", agents=("Chat", "MedicalQA"))
    return openai.OpenAI(base_url=f"{live_medai}/v1", api_key=api_key_for(alice), max_retries=0, timeout=60)


def test_openai_client_gets_a_text_completion_from_the_real_model(client):
    completion = client.completions.create(model="MedicalQA", prompt=PROMPT, max_tokens=8, temperature=0)
    assert_valid("CreateCompletionResponse", completion.model_dump(exclude_unset=True))
    assert completion.object == "text_completion" and completion.model == "smollm2-135m"
    assert completion.choices[0].text.strip() and completion.choices[0].finish_reason in ("length", "stop")
    assert 0 < completion.usage.completion_tokens <= 8 and completion.usage.prompt_tokens > 0
    records_written()
    task = InferenceTask.objects.get()
    assert (task.kind, task.status, task.agent_type) == ("completions", "completed", "MedicalQA")
    assert task.completion_tokens == completion.usage.completion_tokens
    assert task.prompt_tokens == completion.usage.prompt_tokens


def test_a_list_of_prompts_answers_one_choice_each_with_their_usage(client):
    prompts = ["Aspirin is used to", "Insulin is a hormone that"]
    completion = client.completions.create(model="smollm2-135m", prompt=prompts, max_tokens=4, temperature=0)
    assert_valid("CreateCompletionResponse", completion.model_dump(exclude_unset=True))
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.text for c in completion.choices)
    alone = [client.completions.create(model="smollm2-135m", prompt=p, max_tokens=4, temperature=0) for p in prompts]
    assert [c.text for c in completion.choices] == [a.choices[0].text for a in alone]  # each its own prompt's answer
    assert completion.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    assert completion.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)


def test_openai_client_streams_a_text_completion_from_the_real_model(client):
    stream = client.completions.create(
        model="smollm2-135m",
        prompt=PROMPT,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text.strip()
    assert {c.object for c in chunks} == {"text_completion"} and {c.model for c in chunks} == {"smollm2-135m"}
    final = chunks[-1]
    assert final.usage is not None and final.usage.completion_tokens > 0
    assert_valid("CreateCompletionResponse", final.model_dump(exclude_unset=True))
    records_written()  # a stream's record: by the background writer after [DONE]
    task = InferenceTask.objects.get()
    assert (task.kind, task.stream, task.status) == ("completions", True, "completed")
    assert task.completion_tokens == final.usage.completion_tokens
    same = client.completions.create(model="smollm2-135m", prompt=PROMPT, max_tokens=8, temperature=0)
    assert same.choices[0].text == text  # greedy: the stream says what the plain answer says


def test_openai_client_sees_typed_errors_naming_the_field(client):
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="no-such-model", prompt=PROMPT)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="smollm2-135m", prompt=PROMPT, echo=True)
    assert bad.value.code == "unsupported_parameter" and bad.value.body["param"] == "echo"
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="smollm2-135m", prompt=PROMPT, n=2)
    assert bad.value.body["param"] == "n"
