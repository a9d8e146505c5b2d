"""A GPU sample older than a few sample intervals (``MEDAI_GPU_STALE_AFTER``) is reported stale, with
its age, and the monitor as not running: a minutes-old sample used to be served with
``monitor_running: true`` (this process keeps its last view while Redis is gone, and a dead
monitor's state lives on for its TTL)."""

from __future__ import annotations

import time

import pytest

from apps.gpu import services, shared

pytestmark = pytest.mark.django_db


def _publish_sample(ts: float) -> None:
    shared.publish(
        "state",
        {"ts": ts, "provider": "simulated", "simulated": True, "gpus": [], "policy": {}, "endpoint_names": {}},
        ttl=60,
    )
    shared.invalidate()


def test_a_sample_older_than_the_limit_is_stale_with_its_age_and_the_monitor_not_running(settings, fresh_view):
    settings.MEDAI_GPU_STALE_AFTER = 6.0
    now = time.time()
    _publish_sample(now - 180)
    payload = services.status_payload(now=now)
    assert (payload["stale"], payload["monitor_running"], payload["age_seconds"]) == (True, False, 180.0)
    assert payload["sampled_at"] == pytest.approx(now - 180)


def test_a_fresh_sample_is_not_stale(settings, fresh_view):
    settings.MEDAI_GPU_STALE_AFTER = 6.0
    now = time.time()
    _publish_sample(now - 2)
    payload = services.status_payload(now=now)
    assert (payload["stale"], payload["monitor_running"], payload["age_seconds"]) == (False, True, 2.0)


def test_no_sample_at_all_is_stale_and_has_no_age(fresh_view):
    payload = services.status_payload()
    assert (payload["stale"], payload["monitor_running"], payload["age_seconds"], payload["sampled_at"]) == (
        True,
        False,
        None,
        None,
    )


def test_the_api_and_its_schema_carry_the_staleness(client_for, alice, settings, fresh_view):
    settings.MEDAI_GPU_STALE_AFTER = 6.0
    _publish_sample(time.time() - 120)
    body = client_for(alice).get("/v1/gpu/status").json()
    assert body["stale"] is True and body["monitor_running"] is False and body["age_seconds"] >= 120
    from apps.gpu.api.serializers import GpuStatusSerializer

    assert {"age_seconds", "stale", "monitor_running"} <= set(GpuStatusSerializer().fields)
