"""An admin signs in to /admin/ in a real browser (Debian's Chromium) and reads the dashboard: the
charts are drawn (inline SVG), the figures are the records', the page's socket authenticates with
the admin session (no token on the page) and keeps the queue and GPU figures live, nothing is
blocked by the CSP, and axe-core finds no serious violation. Screenshots: admin-dashboard-*.png."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from apps.accounts.governance import quotas, store
from apps.accounts.models import Location, Organization, User
from apps.gpu import circuit, shared
from apps.gpu.models import GpuSample, ModelMetric, SimulatedGpu
from apps.gpu.monitor import Monitor
from apps.gpu.providers import SimulatedProvider
from apps.inference.models import InferenceTask, ModelEndpoint, Priority
from tests.conftest import PASSWORD
from tests.ui.conftest import assert_accessible, shoot

pytestmark = pytest.mark.django_db(transaction=True)

S = InferenceTask.Status
WATCH_CSP = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', e => window.__violations.push(e.violatedDirective));
"""


def seed(demo: Location, north: Location) -> None:
    """A day of a small hospital's traffic, deterministic: every hour some requests at each
    location, a few failures, async work with waits, a queue, model metrics, GPU history, quotas."""
    now = timezone.now()
    east = Location.objects.create(
        organization=Organization.objects.create(name="Eastside Clinic"), code="east", name="East wing"
    )
    smol = ModelEndpoint.objects.create(name="smollm2-135m", base_url="http://127.0.0.1:8081/v1", rank=10)
    llama = ModelEndpoint.objects.create(name="llama-3.1-8b", base_url="http://gpu1:8000/v1", kind="vllm", rank=20)
    ModelEndpoint.objects.create(
        name="meditron-7b", base_url="http://gpu2:8000/v1", kind="vllm", rank=30, enabled=False
    )
    rows = []
    for i in range(24 * 6):  # one every 10 minutes per location, heavier during the day
        at = now - timedelta(minutes=10 * i + 3)
        for j, (location, model) in enumerate(((demo, smol), (north, llama), (east, smol))):
            if (i + j) % (2 + j) and i % 7 != 3:
                continue
            failed = (i + j) % 23 == 0
            rows.append(
                InferenceTask(
                    location=location,
                    created_at=at,
                    mode="async" if i % 3 == 0 else "sync",
                    status=S.FAILED if failed else S.COMPLETED,
                    http_status=502 if failed else 200,
                    error_code="backend_error" if failed else "",
                    model_name=model.name,
                    endpoint=model,
                    prompt_tokens=180 + (i * 37 + j * 11) % 420,
                    completion_tokens=0 if failed else 60 + (i * 13) % 240,
                    queue_wait_ms=40 + (i * 53) % 900 if i % 3 == 0 else None,
                    inference_ms=None if failed else 300 + (i * 71 + j * 29) % 1900,
                )
            )
    for prio, n in ((Priority.CRITICAL, 1), (Priority.HIGH, 3), (Priority.NORMAL, 7), (Priority.LOW, 2)):
        for k in range(n):
            rows.append(
                InferenceTask(
                    location=demo if k % 2 else north,
                    created_at=now - timedelta(seconds=20 + 9 * k),
                    queued_at=now - timedelta(seconds=20 + 9 * k),
                    mode="async",
                    status=S.QUEUED,
                    priority=prio,
                )
            )
    InferenceTask.objects.bulk_create(rows)
    for minute in range(60):
        bucket = (now - timedelta(minutes=minute)).replace(second=0, microsecond=0)
        for model, base in ((smol, 420.0), (llama, 1150.0)):
            ModelMetric.objects.create(
                model_name=model.name,
                endpoint=model,
                bucket_start=bucket,
                requests=4,
                latency_p95_ms=base + 120 * math.sin(minute / 5) + (minute * 37) % 40,
            )
    SimulatedGpu.objects.update_or_create(
        index=0, defaults={"name": "Simulated A100 80GB", "memory_total_mb": 81920, "baseline_used_mb": 30000}
    )
    SimulatedGpu.objects.update_or_create(
        index=1, defaults={"name": "Simulated L4 24GB", "memory_total_mb": 24576, "temperature_override_c": 71}
    )
    for minute in range(60):
        wave = math.sin(minute / 8)
        for index, total, used, temp in (
            (0, 81920, 30000 + minute * 180, 50 + 4 * wave),
            (1, 24576, 17000, 68 + 3 * wave),
        ):
            GpuSample.objects.create(
                taken_at=now - timedelta(minutes=60 - minute),
                gpu_index=index,
                name=f"GPU {index}",
                simulated=True,
                memory_total_mb=total,
                memory_used_mb=int(used + 1500 * wave),
                temperature_c=round(temp, 1),
                level="LOW",
                thermal="NORMAL",
            )
    quotas.set_quota(organization="Demo Hospital", period="day", requests=2000, tokens=1_500_000)
    quotas.set_quota(location="north", period="month", tokens=4_000_000)
    quotas.publish()
    w = store.windows()
    org_id = demo.organization_id
    store.client().hset(store.counter_key(f"o:{org_id}", w.month), mapping={f"{w.day}:r": 1430, f"{w.day}:t": 712_000})
    store.client().hset(store.counter_key(f"l:{north.pk}", w.month), mapping={"m:r": 2100, "m:t": 3_710_000})
    shared.mark_health(smol.pk, True)
    shared.mark_health(llama.pk, False, "connect timeout")
    for _ in range(10):
        circuit.record_failure(llama.pk)


@pytest.fixture
def page(browser, live_medai, demo, north, settings) -> Iterator[object]:
    settings.MEDAI_DASHBOARD_REFRESH_SECONDS = 1.0
    User.objects.create_superuser("root", password=PASSWORD)
    seed(demo, north)
    Monitor(SimulatedProvider(), supervise=False).sample()
    context = browser.new_context()
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def test_an_admin_signs_in_and_reads_the_live_dashboard(page, live_medai, demo):
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(live_medai + "/admin/")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector(".md-dash")
    assert page.locator("svg.md-columns").count() == 2
    assert page.locator("svg.md-columns rect.md-column[height]").count() == 48
    assert page.locator(".md-gpu").count() == 2 and page.locator(".md-spark polyline").count() >= 4
    expect(page.locator("#md-live")).to_have_attribute("data-state", "live")
    assert sockets and all(url.endswith("/ws/admin/dashboard/") for url in sockets)  # no token anywhere
    expect(page.locator('[data-live="queue.normal"]')).to_have_text("7")
    expect(page.locator("#md-loc + .md-scroll tbody")).to_contain_text("North clinic")
    # a task queued now shows up without a reload
    InferenceTask.objects.create(
        location=demo, created_at=timezone.now(), queued_at=timezone.now(), mode="async", priority=Priority.CRITICAL
    )
    expect(page.locator('[data-live="queue.critical"]')).to_have_text("2")
    expect(page.locator('[data-live="queue.queued"]')).to_have_text("14")
    assert page.evaluate("window.__violations") == []
    shoot(page, "admin-dashboard")
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # a phone: no horizontal scroll
    assert_accessible(page, ".md-dash", label="the admin dashboard")
