"""``/v1/models`` gives each agent type its admin-written description and marks the one the Ask
page selects first: the route an admin marked ``is_default`` (at most one), else MedicalQA, never
the alphabetical first."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from apps.inference import router
from apps.inference.models import AgentRoute
from tests.conftest import register_model

pytestmark = pytest.mark.django_db


def _agents(client) -> dict[str, dict]:
    data = client.get("/v1/models").json()["data"]
    return {m["id"]: m["medai"] for m in data if m["medai"]["kind"] == "agent_type"}


def test_medicalqa_is_the_default_unless_an_admin_chose_another(client_for, alice):
    AgentRoute.objects.update(is_default=False)
    register_model("smollm2", "http://127.0.0.1:9/v1", agents=("Billing", "Chat", "MedicalQA"))
    AgentRoute.objects.filter(agent_type="Billing").update(description="Coding and billing questions.")
    router.invalidate()
    agents = _agents(client_for(alice))
    assert [name for name, a in agents.items() if a["default"]] == ["MedicalQA"]
    assert agents["Billing"]["description"] == "Coding and billing questions."

    AgentRoute.objects.filter(agent_type="Chat").update(is_default=True)
    router.invalidate()
    assert [name for name, a in _agents(client_for(alice)).items() if a["default"]] == ["Chat"]


def test_a_disabled_default_gives_way(client_for, alice):
    AgentRoute.objects.update(is_default=False)
    register_model("smollm2", "http://127.0.0.1:9/v1", agents=("Chat", "MedicalQA"))
    AgentRoute.objects.filter(agent_type="Chat").update(is_default=True, enabled=False)
    router.invalidate()
    assert [name for name, a in _agents(client_for(alice)).items() if a["default"]] == ["MedicalQA"]


def test_only_one_route_is_the_default():
    AgentRoute.objects.update(is_default=False)
    AgentRoute.objects.create(agent_type="First", is_default=True)
    second = AgentRoute(agent_type="Second", is_default=True)
    with pytest.raises(ValidationError, match="default already"):
        second.full_clean()
