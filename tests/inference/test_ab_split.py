"""A/B traffic splits on agent routes (apps/inference/experiments.py): the assignment (weights,
sticky per user or conversation, a model asked for by name is never split), the arm on every
record and audit event with the route's other models as fallbacks, the comparison's tests and
verdicts on seeded data, and stopping or promoting an arm as an audited admin action."""

from __future__ import annotations

import random
from datetime import timedelta

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.inference import experiments, router, significance
from apps.inference.models import AgentRoute, AgentRouteEntry, InferenceTask
from tests.conftest import records_written, register_model
from tests.support.servers import set_stub_mode

pytestmark = pytest.mark.django_db(transaction=True)

ARMS = ("arm-a", "arm-b")


def _route(weights=(1, 1), sticky="user") -> router.Route:
    eps = tuple(
        router.EndpointInfo(
            id=i + 1,
            name=name,
            kind="openai",
            base_url="http://127.0.0.1:9/v1",
            backend_model="m",
            api_key="",
            context_length=2048,
            vram_mb=0,
            rank=10,
            enabled=True,
            supports_embeddings=False,
        )
        for i, name in enumerate(ARMS)
    )
    return router.Route("MedicalQA", "MedicalQA", eps, "", weights, sticky)


def _split(route: router.Route, keys) -> dict[str, int]:
    counts = dict.fromkeys(ARMS, 0)
    for key in keys:
        counts[experiments.assign(route, key).arm] += 1
    return counts


def test_the_weights_share_the_traffic_and_a_caller_stays_on_one_arm():
    even = _split(_route((1, 1)), [f"u:{i}" for i in range(2000)])
    assert 900 <= even["arm-a"] <= 1100 and even["arm-a"] + even["arm-b"] == 2000
    skewed = _split(_route((3, 1)), [f"u:{i}" for i in range(2000)])
    assert 1400 <= skewed["arm-a"] <= 1600
    route = _route((1, 1))
    assert {experiments.assign(route, "u:7").arm for _ in range(20)} == {experiments.assign(route, "u:7").arm}
    assigned = experiments.assign(route, "u:7")
    assert assigned.candidates[0].name == assigned.arm  # the arm first, the other after it (a fallback)
    assert {e.name for e in assigned.candidates} == set(ARMS)
    assert experiments.assign(_route(()), "u:7").arm == ""  # no weights: no split


def test_sticky_per_conversation_falls_back_to_the_user_without_one():
    route = _route((1, 1), sticky="conversation")
    assert experiments.sticky_key(route, 5, "c0ffee") == "c:c0ffee"
    assert experiments.sticky_key(route, 5, None) == "u:5"
    assert experiments.sticky_key(_route((1, 1)), 5, "c0ffee") == "u:5"


@pytest.fixture
def split(stub_backend):
    for position, name in enumerate(ARMS):
        register_model(name, stub_backend, agents=("MedicalQA",), position=position)
    AgentRouteEntry.objects.update(weight=1)
    router.invalidate()
    return stub_backend


def _ask(live_medai, token, model="MedicalQA"):
    response = httpx.post(
        f"{live_medai}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Dose of amoxicillin?"}]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    records_written()
    return response


def test_each_record_and_event_names_its_arm_and_the_same_user_keeps_it(live_medai, split, alice, bob, token_for):
    set_stub_mode(split, "ok")
    for user in (alice, bob, alice, bob):
        assert _ask(live_medai, token_for(user)).status_code == 200
    arms = {}
    for task in InferenceTask.objects.order_by("created_at"):
        assert task.arm in ARMS and task.model_name == task.arm  # healthy: the assigned arm answered
        arms.setdefault(task.user_id, set()).add(task.arm)
    assert all(len(seen) == 1 for seen in arms.values())  # sticky per user
    route = router.resolve("MedicalQA", None)
    for user in (alice, bob):
        assert arms[user.pk] == {experiments.assign(route, f"u:{user.pk}").arm}
    events = AuditEvent.objects.filter(action="inference.complete")
    assert sorted(e.details["arm"] for e in events) == sorted(t.arm for t in InferenceTask.objects.all())
    # a model asked for by name is not part of the split
    assert _ask(live_medai, token_for(alice), model="arm-b").status_code == 200
    assert InferenceTask.objects.order_by("-created_at").first().arm == ""


def test_an_arm_that_is_down_falls_back_to_the_other_and_the_record_says_both(
    live_medai, stub_backend, alice, token_for
):
    set_stub_mode(stub_backend, "ok")
    route_for_alice = experiments.assign(_route((1, 1)), f"u:{alice.pk}").arm
    for position, name in enumerate(ARMS):
        url = "http://127.0.0.1:9/v1" if name == route_for_alice else stub_backend  # alice's arm is down
        register_model(name, url, agents=("MedicalQA",), position=position)
    AgentRouteEntry.objects.update(weight=1)
    router.invalidate()
    assert _ask(live_medai, token_for(alice)).status_code == 200
    task = InferenceTask.objects.get()
    other = next(a for a in ARMS if a != route_for_alice)
    assert (task.arm, task.model_name) == (route_for_alice, other)


def _seed(agent_type: str, arm: str, n: int, latency: tuple[int, int], failures: int, user: User) -> None:
    rng = random.Random(arm)
    now = timezone.now()
    rows = []
    for i in range(n):
        failed = i < failures
        rows.append(
            InferenceTask(
                mode="sync",
                status="failed" if failed else "completed",
                agent_type=agent_type,
                arm=arm,
                model_name=arm,
                user=user,
                location=user.locations.first(),
                latency_ms=None if failed else rng.randint(*latency),
                created_at=now - timedelta(minutes=i),
            )
        )
    InferenceTask.objects.bulk_create(rows)


def test_the_comparison_finds_a_real_difference_and_not_an_absent_one(alice):
    _seed("MedicalQA", "arm-a", 120, (80, 160), failures=6, user=alice)
    _seed("MedicalQA", "arm-b", 120, (150, 260), failures=7, user=alice)
    result = experiments.compare("MedicalQA")
    assert [a.arm for a in result.arms] == ["arm-a", "arm-b"]
    latency, failure, ratings = result.tests
    assert latency.p_value is not None and latency.p_value < 0.001 and latency.verdict.startswith("arm-a is faster")
    assert failure.p_value is not None and failure.p_value > 0.5
    assert failure.verdict.startswith("no significant difference")
    assert "too few ratings" in ratings.verdict
    # the same latencies on both arms: no verdict for either
    InferenceTask.objects.all().delete()
    _seed("MedicalQA", "arm-a", 100, (100, 200), failures=0, user=alice)
    _seed("MedicalQA", "arm-b", 100, (100, 200), failures=0, user=alice)
    assert experiments.compare("MedicalQA").tests[0].verdict.startswith("no significant difference")


def test_the_statistics_match_reference_values():
    # scipy.stats.mannwhitneyu([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], method="asymptotic") → U = 0, p ≈ 0.0122
    u, p = significance.mann_whitney([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    assert u == 0 and abs(p - 0.0122) < 0.001
    # 40/100 vs 60/100: z = -2.828, p = 0.00468 (pooled two-proportion z-test)
    z, p = significance.two_proportions(40, 100, 60, 100)
    assert abs(z + 2.828) < 0.001 and abs(p - 0.00468) < 0.0001


def test_promoting_an_arm_ends_the_split_and_is_audited(split, org):
    root = User.objects.create_superuser(
        "root", password="root-password-for-tests-7781", organization=org, role="admin"
    )
    client = Client(HTTP_USER_AGENT="firefox-admin")
    client.force_login(root)
    route = AgentRoute.objects.get(agent_type="MedicalQA")
    winner = AgentRouteEntry.objects.get(route=route, endpoint__name="arm-b")
    response = client.post(
        "/admin/inference/agentrouteentry/", {"action": "promote_arm", "_selected_action": [str(winner.pk)], "index": 0}
    )
    assert response.status_code == 302
    entries = {e.endpoint.name: (e.position, e.weight) for e in AgentRouteEntry.objects.select_related("endpoint")}
    assert entries == {"arm-b": (0, 0), "arm-a": (1, 0)}
    assert router.resolve("MedicalQA", None).candidates[0].name == "arm-b"
    records_written()  # the admin action's event goes through the background writer
    [event] = AuditEvent.objects.filter(action="admin.action")
    assert event.actor == "root" and event.details["action"] == "promote_arm"
    page = client.get(f"/admin/inference/agentroute/{route.pk}/change/")
    assert page.status_code == 200 and b"A/B split" in page.content


def test_the_assigned_arm_is_tried_first_even_when_the_other_is_faster(live_medai, split, alice, token_for):
    """The policy prefers the lower latency among models of one rank; an assigned arm is kept first."""
    from apps.gpu import shared

    set_stub_mode(split, "ok")
    route = router.resolve("MedicalQA", None)
    mine = experiments.assign(route, f"u:{alice.pk}").arm
    other = next(e for e in route.candidates if e.name != mine)
    shared.observe_latency(other.id, 0.001)  # the other arm looks far faster to this process
    for e in route.candidates:
        if e.name == mine:
            shared.observe_latency(e.id, 5000.0)
    for _ in range(3):
        assert _ask(live_medai, token_for(alice)).status_code == 200
    assert set(InferenceTask.objects.values_list("model_name", flat=True)) == {mine}
