"""Agent frameworks built on the OpenAI API call tools through medai on the real bundled model:
LangChain's ChatOpenAI (bind_tools, with_structured_output(method="function_calling")) and
pydantic-ai (tool output). Nothing they send is refused, and the forced call comes back usable."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from tests.conftest import register_model

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

QUESTION = "The patient's heart rate is 72. Record it."


class Vital(BaseModel):
    """A vital sign of the patient."""

    name: str
    value: float


@pytest.fixture
def medai(live_medai, llama_server, alice, api_key_for):
    register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct", agents=("Chat",))
    return f"{live_medai}/v1", api_key_for(alice)


def chat_openai(medai):
    from langchain_openai import ChatOpenAI

    base_url, key = medai
    return ChatOpenAI(
        base_url=base_url, api_key=key, model="smollm2-135m", temperature=0, max_tokens=48, max_retries=0, timeout=120
    )


def test_langchain_bind_tools_gets_the_forced_call(medai):
    message = chat_openai(medai).bind_tools([Vital], tool_choice="Vital").invoke(QUESTION)
    assert message.tool_calls, message
    call = message.tool_calls[0]
    assert call["name"] == "Vital" and set(call["args"]) == {"name", "value"} and call["id"]


def test_langchain_structured_output_through_function_calling(medai):
    vital = chat_openai(medai).with_structured_output(Vital, method="function_calling").invoke(QUESTION)
    assert isinstance(vital, Vital)


def test_pydantic_ai_tool_output(medai):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    base_url, key = medai
    model = OpenAIChatModel("smollm2-135m", provider=OpenAIProvider(base_url=base_url, api_key=key))
    agent = Agent(model, output_type=Vital, model_settings={"temperature": 0, "max_tokens": 48})
    assert isinstance(agent.run_sync(QUESTION).output, Vital)
