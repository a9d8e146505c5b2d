"""Which candidates a request may go to, and in what order."""

from __future__ import annotations

import pytest

from apps.gpu import circuit, policy, shared
from apps.gpu.policy import ModelInfo, choose
from apps.inference import router
from tests.conftest import register_model
from tests.gpu.conftest import publish_decision, reading

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinical(fresh_view):
    """Route Clinical: a (rank 1), b (rank 2), c (rank 2), d (rank 3)."""
    eps = {
        name: register_model(name, f"http://127.0.0.1:9/{name}/v1", rank=rank, agents=("Clinical",), position=pos)
        for pos, (name, rank) in enumerate([("a", 1), ("b", 2), ("c", 2), ("d", 3)])
    }
    return eps


def names(choice: policy.Choice) -> list[str]:
    return [e.name for e in choice.candidates]


def candidates() -> tuple[router.EndpointInfo, ...]:
    return router.resolve("Clinical", None).candidates


def test_route_order_is_kept_when_nothing_is_known(clinical):
    assert names(choose(candidates())) == ["a", "b", "c", "d"]


def test_among_equal_ranks_the_lower_latency_ema_goes_first(clinical):
    shared.observe_latency(clinical["b"].pk, 900.0)
    shared.observe_latency(clinical["c"].pk, 120.0)
    shared.observe_latency(clinical["d"].pk, 1.0)  # faster, but a worse rank: stays behind
    assert names(choose(candidates())) == ["a", "c", "b", "d"]


def test_disabled_models_are_skipped(clinical):
    clinical["a"].enabled = False
    clinical["a"].save()
    choice = choose(candidates())
    assert names(choice) == ["b", "c", "d"]


def test_models_the_gpu_policy_excludes_are_skipped_with_the_reason(clinical):
    models = [ModelInfo(e.pk, e.name, e.rank, 0, None) for e in clinical.values()]
    publish_decision([reading(75)], models)  # HIGH: the top 2 by rank
    choice = choose(candidates())
    assert names(choice) == ["a", "b"]
    assert ("c", "not allowed at GPU pressure HIGH") in choice.skipped


def test_unhealthy_backends_are_skipped_until_a_health_check_passes(clinical):
    shared.mark_health(clinical["a"].pk, False, "HTTP 503 on /health")
    choice = choose(candidates())
    assert names(choice) == ["b", "c", "d"]
    assert choice.skipped == (("a", "unhealthy: HTTP 503 on /health"),)
    shared.mark_health(clinical["a"].pk, True, "ok")
    assert names(choose(candidates()))[0] == "a"


def test_a_stale_health_verdict_is_ignored(clinical, monkeypatch):
    shared.mark_health(clinical["a"].pk, False, "timed out")
    real_time = policy.time.time
    monkeypatch.setattr(policy.time, "time", lambda: real_time() + 31)  # 3 health intervals later
    assert names(choose(candidates()))[0] == "a"


def test_circuit_open_backends_are_skipped(clinical, settings):
    for _ in range(settings.MEDAI_CIRCUIT_FAILURES):
        circuit.record_failure(clinical["b"].pk)
    choice = choose(candidates())
    assert names(choice) == ["a", "c", "d"]
    assert choice.skipped == (("b", "circuit open after repeated failures"),)


def test_an_explicitly_named_model_stays_first(clinical):
    shared.observe_latency(clinical["b"].pk, 900.0)
    shared.observe_latency(clinical["c"].pk, 100.0)
    route = router.resolve("b", "Clinical")
    assert names(choose(route.candidates, keep_first=True)) == ["b", "a", "c", "d"]


def test_nothing_left_means_an_empty_choice_with_every_reason(clinical):
    publish_decision([reading(99.9)], [ModelInfo(e.pk, e.name, e.rank, 50_000, None) for e in clinical.values()])
    choice = choose(candidates())
    assert choice.candidates == () and len(choice.skipped) == 4
