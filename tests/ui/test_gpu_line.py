"""The page's live GPU line, in a real browser: it authenticates /ws/gpu/ with the
``Sec-WebSocket-Protocol`` header (no token in the URL), shows the simulated sample, and says so
when the sample goes stale because the monitor stopped publishing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from apps.gpu.monitor import Monitor
from apps.gpu.providers import SimulatedProvider
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def page(browser, live_medai, alice) -> Iterator[object]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(live_medai + "/")
    yield page
    context.close()


def test_the_gpu_line_is_live_over_the_subprotocol_and_turns_stale_when_the_monitor_stops(page, settings):
    settings.MEDAI_GPU_STALE_AFTER = 2.0
    Monitor(SimulatedProvider(), supervise=False).sample()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.fill("#location", "demo")
    page.click("#login-button")
    line = page.locator("#gpu-status")
    expect(line).to_contain_text("(simulated)")
    expect(line).to_contain_text("pressure LOW")
    assert sockets and all(url.endswith("/ws/gpu/") for url in sockets)  # the token is not in the URL
    # no sample comes after that one: the socket re-sends the status, stale, and the page says so
    expect(line).to_contain_text("STALE", timeout=15_000)
    expect(line).to_have_attribute("data-stale", "true")
