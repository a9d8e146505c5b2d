"""The System page in a real browser: per-GPU memory and temperature labelled simulated, pressure
and the models allowed now, the queue by priority and the backends' health and circuit; the GPU
figures follow the monitor live over /ws/gpu/ (no reload), and the page says STALE when the
monitor stops publishing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.sync_api import expect

from apps.gpu import circuit, shared
from apps.gpu.models import PolicySettings, SimulatedGpu
from apps.gpu.monitor import Monitor
from apps.gpu.providers import SimulatedProvider
from tests.conftest import register_model
from tests.inference.queue_helpers import submit
from tests.ui.conftest import assert_accessible, shoot, sign_in

pytestmark = pytest.mark.django_db(transaction=True)


WATCH_CSP = """window.__csp = []; document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));"""


def off_the_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` in a thread of its own: Playwright's sync API keeps an event loop in this one,
    where the monitor's websocket push (async_to_sync) and a submit's on-commit events fail."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


@pytest.fixture
def page(browser, live_medai, alice, settings) -> Iterator[object]:
    settings.MEDAI_GPU_STATE_CACHE_SECONDS = 0.0
    context = browser.new_context()
    context.add_init_script(WATCH_CSP)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(live_medai + "/system/")
    yield page
    context.close()


@pytest.fixture
def gpu(db) -> SimulatedGpu:
    SimulatedGpu.objects.all().delete()
    return SimulatedGpu.objects.create(
        index=0, name="Simulated GPU 0 (no hardware)", memory_total_mb=10_000, baseline_used_mb=500
    )


def test_the_system_page_shows_gpu_policy_queue_and_backends_and_follows_the_monitor_live(
    page, gpu, alice, client_for, settings
):
    settings.MEDAI_GPU_STALE_AFTER = 60.0
    big = register_model("big-model", "http://127.0.0.1:9/v1", rank=1)
    big.vram_mb = 6_000
    big.save()
    broken = register_model("broken-model", "http://127.0.0.1:9/v1", rank=2)
    broken.vram_mb = 300
    broken.save()
    PolicySettings.objects.update(recovery_hold_seconds=0)
    monitor = Monitor(SimulatedProvider(), supervise=False)
    SimulatedGpu.objects.filter(index=0).update(memory_used_override_percent=20, temperature_override_c=48)
    off_the_loop(monitor.sample)
    shared.mark_health(big.pk, True, "ok")
    shared.mark_health(broken.pk, False, "ConnectError")
    for _ in range(settings.MEDAI_CIRCUIT_FAILURES):
        circuit.record_failure(broken.pk)
    client = client_for(alice)
    for text, priority in (("a", "critical"), ("b", "high"), ("c", "high"), ("d", "low")):
        off_the_loop(submit, client, text, priority)

    sign_in(page)
    card = page.locator(".gpu-card[data-gpu='0']")
    expect(card).to_contain_text("simulated")
    expect(card).to_contain_text("20% · 2000 of 10000 MB")
    expect(card).to_contain_text("48 °C")
    expect(page.locator("#system-freshness")).to_have_attribute("data-state", "live")
    expect(page.locator("#system-freshness")).to_contain_text("simulated")
    expect(page.locator("#pressure-level")).to_have_text("Low")
    expect(page.locator("#allowed-models")).to_have_text("all enabled models")
    expect(page.locator("#queue-table tr[data-priority='high'] .org")).to_have_text("2")
    expect(page.locator("#queue-table tr[data-priority='critical'] .mine")).to_have_text("1")
    expect(page.locator("#queue-org-total")).to_have_text("4")
    expect(page.locator("#backend-rows tr[data-model='big-model']")).to_contain_text("Up")
    broken_row = page.locator("#backend-rows tr[data-model='broken-model']")
    expect(broken_row).to_contain_text("Down")
    expect(broken_row).to_contain_text("Open")
    assert_accessible(page, label="system page, live")
    shoot(page, "system")

    # The monitor sees the GPU fill up: the page follows without a reload.
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    SimulatedGpu.objects.filter(index=0).update(memory_used_override_percent=95, temperature_override_c=88)
    off_the_loop(monitor.sample)
    expect(card).to_contain_text("95% · 9500 of 10000 MB")
    expect(card).to_contain_text("88 °C")
    expect(page.locator("#pressure-level")).to_have_text("Critical")
    expect(page.locator("#allowed-models")).to_have_text("broken-model")
    expect(page.locator("#backend-rows tr[data-model='big-model']")).to_contain_text("No (GPU pressure)")
    assert sockets == []  # the same socket carried it: no reconnect, no reload
    assert page.evaluate("window.__csp") == []  # everything ran under the page's CSP
    shoot(page, "system-critical")


def test_the_system_page_says_stale_when_the_monitor_stops(page, gpu, settings):
    settings.MEDAI_GPU_STALE_AFTER = 2.0
    off_the_loop(Monitor(SimulatedProvider(), supervise=False).sample)
    sign_in(page)
    freshness = page.locator("#system-freshness")
    expect(page.locator(".gpu-card[data-gpu='0']")).to_contain_text("simulated")
    # no sample comes after that one
    expect(freshness).to_have_attribute("data-state", "stale", timeout=15_000)
    expect(freshness).to_contain_text("STALE")
    expect(page.locator("#system-age")).to_contain_text("stale after 2")
    assert_accessible(page, label="system page, stale")
    shoot(page, "system-stale")


def test_with_no_monitor_at_all_the_page_says_so(page):
    sign_in(page)
    expect(page.locator("#system-freshness")).to_contain_text("STALE: no GPU sample")
    expect(page.locator("#gpu-list")).to_contain_text("No GPU sample yet.")
    expect(page.locator("#backend-rows")).to_contain_text("No model endpoint is enabled.")
