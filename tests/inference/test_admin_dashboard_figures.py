"""The admin dashboard's figures (apps/inference/dashboard), from records whose numbers are known:
requests and tokens per location and model over the hour and the day, queue depth by priority,
wait and run time percentiles (nearest rank), per-model failure rate (backend faults only) and
latency, quota use; a superuser sees every organization, other staff only their own."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from apps.accounts.governance import quotas
from apps.accounts.models import Location, Organization, User
from apps.gpu import circuit, shared
from apps.gpu.models import ModelMetric
from apps.inference.dashboard import Scope, page
from apps.inference.dashboard.figures import models, queue, quota_use, timings, traffic
from apps.inference.models import InferenceTask, ModelEndpoint, Priority
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

S = InferenceTask.Status
NOW = timezone.localtime().replace(minute=30, second=0, microsecond=0)


@pytest.fixture
def east(db) -> Location:
    eastside = Organization.objects.create(name="Eastside Clinic")
    return Location.objects.create(organization=eastside, code="east", name="East wing")


@pytest.fixture
def demo_staff(org, demo) -> User:
    return User.objects.create_user("ivy", password=PASSWORD, role="admin", organization=org, is_staff=True)


@pytest.fixture
def root(db) -> User:
    return User.objects.create_superuser("root", password=PASSWORD)


def task(location: Location, minutes_ago: float, **fields: object) -> InferenceTask:
    values: dict[str, object] = {"mode": "sync", "status": S.COMPLETED, "model_name": "smol"}
    values.update(fields)
    return InferenceTask.objects.create(location=location, created_at=NOW - timedelta(minutes=minutes_ago), **values)


@pytest.fixture
def traffic_records(demo, north, east) -> None:
    # demo, the last hour: 3 requests of smol, 90 tokens
    task(demo, 5, prompt_tokens=10, completion_tokens=5, inference_ms=100)
    task(demo, 10, prompt_tokens=20, completion_tokens=10, inference_ms=200)
    task(demo, 50, prompt_tokens=30, completion_tokens=15, inference_ms=300)
    # demo, earlier today: 1 request of smol, 150 tokens
    task(demo, 5 * 60, prompt_tokens=100, completion_tokens=50, inference_ms=400)
    # north, the last hour: 4 requests of big, one backend fault, one refused input, one cancel
    task(north, 20, model_name="big", prompt_tokens=7, completion_tokens=3, inference_ms=1000)
    task(north, 21, model_name="big", status=S.FAILED, http_status=502, error_code="backend_error")
    task(north, 22, model_name="big", status=S.FAILED, http_status=400, error_code="context_length_exceeded")
    task(north, 23, model_name="big", status=S.FAILED, error_code="client_disconnected", prompt_tokens=4)
    # another organization's request, and one two days ago: neither is Demo Hospital's day
    task(east, 15, prompt_tokens=1000, completion_tokens=1000, inference_ms=50)
    task(demo, 48 * 60, prompt_tokens=5000)


def test_traffic_per_location_and_model_over_the_hour_and_the_day(traffic_records, demo_staff):
    t = traffic(Scope.of(demo_staff), NOW)
    by_location = {r["location__code"]: r for r in t["by_location"]}
    assert set(by_location) == {"demo", "north"}  # not Eastside's
    demo, north = by_location["demo"], by_location["north"]
    assert (demo["requests_hour"], demo["requests_day"], demo["tokens_hour"], demo["tokens_day"]) == (3, 4, 90, 240)
    assert (north["requests_hour"], north["requests_day"], north["tokens_hour"], north["tokens_day"]) == (4, 4, 14, 14)
    assert north["failed_day"] == 3
    by_model = {r["model_name"]: r for r in t["by_model"]}
    assert (by_model["smol"]["requests_day"], by_model["smol"]["tokens_day"]) == (4, 240)
    assert (by_model["big"]["requests_hour"], by_model["big"]["tokens_hour"]) == (4, 14)
    assert t["totals"] == {
        "requests_hour": 7,
        "requests_day": 8,
        "tokens_hour": 104,
        "tokens_day": 254,
        "failed_day": 3,
    }
    # 24 clock hours, the current one last: this hour's 5 requests of 7 (two were before :30 − 60 min)
    assert len(t["hourly"]) == 24 and t["hourly"][-1]["start"] <= NOW < t["hourly"][-1]["start"] + timedelta(hours=1)
    assert sum(h["requests"] for h in t["hourly"]) == 8
    assert t["hourly"][-1]["requests"] == 6 and t["hourly"][-1]["tokens"] == 104 - 45 + 0
    assert t["hourly"][-6]["requests"] == 1 and t["hourly"][-6]["tokens"] == 150


def test_a_superuser_sees_every_organization_and_staff_of_none_nothing(traffic_records, root):
    everything = traffic(Scope.of(root), NOW)
    assert {r["location__code"] for r in everything["by_location"]} == {"demo", "north", "east"}
    assert everything["totals"]["tokens_day"] == 254 + 2000
    nobody = User.objects.create_user("nemo", password=PASSWORD, is_staff=True)
    nothing = traffic(Scope.of(nobody), NOW)
    assert nothing["by_location"] == [] and nothing["totals"]["requests_day"] == 0


def test_queue_depth_by_priority_most_urgent_first(demo, east, demo_staff):
    for prio, n in ((Priority.HIGH, 2), (Priority.LOW, 1), (Priority.CRITICAL, 1)):
        for _ in range(n):
            task(demo, 3, mode="async", status=S.QUEUED, priority=prio, queued_at=NOW - timedelta(seconds=90))
    task(demo, 1, mode="async", status=S.QUEUED, priority=Priority.HIGH, queued_at=NOW - timedelta(seconds=30))
    task(demo, 2, mode="async", status=S.PROCESSING)
    task(demo, 2, mode="sync", status=S.PROCESSING)  # a sync request in flight is not queue work
    for _ in range(3):
        task(east, 1, mode="async", status=S.QUEUED, priority=Priority.NORMAL, queued_at=NOW - timedelta(hours=2))
    q = queue(Scope.of(demo_staff), NOW)
    assert q["depth"] == [
        {"priority": "critical", "queued": 1},
        {"priority": "high", "queued": 3},
        {"priority": "normal", "queued": 0},
        {"priority": "low", "queued": 1},
    ]
    assert (q["queued"], q["processing"], q["oldest_wait_s"]) == (5, 1, 90.0)


def test_wait_and_run_time_percentiles_by_nearest_rank(demo, demo_staff):
    for minutes, wait, run in ((5, 10, 400), (6, 20, 100), (7, 40, 300), (8, 30, 200)):
        task(demo, minutes, mode="async", queue_wait_ms=wait, inference_ms=run)
    task(demo, 3 * 60, mode="async", queue_wait_ms=1000, inference_ms=5000)
    task(demo, 9, mode="async", status=S.FAILED, queue_wait_ms=None, inference_ms=9000)  # failed: no run time
    task(demo, 9, mode="sync", queue_wait_ms=0, inference_ms=7)  # sync: not queue work
    t = timings(Scope.of(demo_staff), NOW)
    # hour: waits 10 20 30 40 → p50 the 2nd, p95 the 4th; day adds 1000 → the 3rd and the 5th
    assert t["wait_ms"] == {"hour_p50": 20.0, "hour_p95": 40.0, "day_p50": 30.0, "day_p95": 1000.0}
    assert t["run_ms"] == {"hour_p50": 200.0, "hour_p95": 400.0, "day_p50": 300.0, "day_p95": 5000.0}
    assert t["samples"] == {"wait_hour": 4, "wait_day": 5, "run_hour": 4, "run_day": 5}


def test_no_tasks_no_percentiles(demo_staff):
    t = timings(Scope.of(demo_staff), NOW)
    assert t["wait_ms"] == {"hour_p50": None, "hour_p95": None, "day_p50": None, "day_p95": None}


def test_per_model_failure_rate_latency_and_tokens_per_second(traffic_records, demo_staff):
    smol = ModelEndpoint.objects.create(name="smol", base_url="http://127.0.0.1:9/v1")
    ModelEndpoint.objects.create(name="idle", base_url="http://127.0.0.1:9/v1", rank=200)
    shared.mark_health(smol.pk, True)
    for _ in range(10):
        circuit.record_failure(smol.pk)
    shared.invalidate()
    for minute, p95 in ((40, 310.0), (20, 290.0), (5, 305.0)):
        ModelMetric.objects.create(model_name="smol", bucket_start=NOW - timedelta(minutes=minute), latency_p95_ms=p95)
    rows = {r["name"]: r for r in models(Scope.of(demo_staff), NOW)}
    assert list(rows) == ["smol", "idle", "big"]  # registered by rank, then the unregistered that answered
    big, smol_row, idle = rows["big"], rows["smol"], rows["idle"]
    assert (big["requests"], big["failures"], big["failure_rate"]) == (4, 1, 0.25)
    assert (big["p50_ms"], big["p95_ms"], big["tokens_per_second"]) == (1000.0, 1000.0, 3.0)
    assert big["circuit"] is None and big["enabled"] is None  # no endpoint of that name
    assert (smol_row["requests"], smol_row["failures"], smol_row["failure_rate"]) == (3, 0, 0.0)
    assert (smol_row["p50_ms"], smol_row["p95_ms"], smol_row["tokens_per_second"]) == (200.0, 300.0, 50.0)
    assert smol_row["healthy"] is True and smol_row["circuit"] == circuit.OPEN
    assert smol_row["trend_p95_ms"] == [310.0, 290.0, 305.0]
    assert (idle["requests"], idle["failure_rate"], idle["p50_ms"], idle["circuit"]) == (0, None, None, "closed")


def test_quota_use_of_the_organization_and_its_locations(demo, north, east, org, demo_staff, root):
    quotas.set_quota(organization=org.name, period="day", requests=100, tokens=10_000)
    quotas.set_quota(location="north", period="month", tokens=500)
    quotas.set_quota(location="east", period="day", requests=5)
    quotas.publish()
    from apps.accounts.governance import store

    w = store.windows()
    store.client().hset(store.counter_key(f"o:{org.pk}", w.month), mapping={f"{w.day}:r": 25, f"{w.day}:t": 2500})
    store.client().hset(store.counter_key(f"l:{north.pk}", w.month), mapping={"m:r": 3, "m:t": 125})
    use = quota_use(Scope.of(demo_staff))
    assert use["available"] is True
    rows = {(r["scope"], r["period"]): r for r in use["rows"]}
    assert set(rows) == {("organization 'Demo Hospital'", "day"), ("location 'north'", "month")}
    org_day = rows[("organization 'Demo Hospital'", "day")]
    assert (org_day["used_requests"], org_day["requests_share"], org_day["used_tokens"], org_day["tokens_share"]) == (
        25,
        0.25,
        2500,
        0.25,
    )
    north_month = rows[("location 'north'", "month")]
    assert (north_month["used_tokens"], north_month["tokens_share"], north_month["requests_share"]) == (125, 0.25, None)
    assert len(quota_use(Scope.of(root))["rows"]) == 3


def test_the_page_lays_out_its_charts(traffic_records, demo_staff):
    figures = page(demo_staff, NOW)
    chart = figures["traffic"]["requests_chart"]
    assert len(chart["bars"]) == 24 and chart["max"] == 6  # 6 requests this hour: the axis tops at 6
    assert chart["bars"][-1]["h"] == 120 and chart["bars"][-6]["h"] == 20.0  # 1 of 6
    assert chart["bars"][0]["h"] == 0
    bars = {r["location__code"]: r["bar"] for r in figures["traffic"]["by_location"]}
    assert bars == {"demo": 100.0, "north": round(100 * 14 / 240, 1)}
    assert isinstance(figures["now"], datetime) and figures["scope"].label == "Demo Hospital"
