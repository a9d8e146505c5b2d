"""Shared by the web UI tests: Debian's Chromium driven by Playwright (never a downloaded browser),
signing in, and screenshots at desktop and phone widths.

Screenshots go to ``$MEDAI_SCREENSHOT_DIR`` (default ``test-artifacts/screenshots/`` at the top
of the repository, gitignored, kept by CI): ``<name>-desktop.png`` and ``<name>-phone.png``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PASSWORD

CHROMIUM = os.environ.get("MEDAI_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(
    os.environ.get("MEDAI_SCREENSHOT_DIR", Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots")
)


# Module-scoped, not session-wide: Playwright's sync API runs an event loop in this thread while
# the browser is open, and asyncio.run() in a later test module would refuse to start under it.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread, which makes Django refuse
    # the fixtures' ORM calls; they are plain sync calls, so allow them (Playwright's documented fix).
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def sign_in(page, username: str = "alice", password: str = PASSWORD, location: str = "demo") -> None:
    page.fill("#username", username)
    page.fill("#password", password)
    page.fill("#location", location)
    page.click("#login-button")
    page.wait_for_selector("#page-content:not([hidden])")


def shoot(page, name: str) -> list[Path]:
    """Full-page PNGs of ``page`` as it is now, at desktop then phone width (the viewport is put
    back afterwards). Returns the files written."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    before = page.viewport_size or DESKTOP
    written = []
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        path = SCREENSHOTS / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        written.append(path)
    page.set_viewport_size(before)
    return written


# Impacts that fail assert_accessible (axe-core's scale: minor, moderate, serious, critical).
FAILING_IMPACTS = ("serious", "critical")


def axe_violations(page, context: str | None = None) -> list[dict]:
    """axe-core's violations on ``page`` as it is now (all of axe's default rules: WCAG 2.x A and
    AA, and best practices), inside ``context`` (a CSS selector) if given. axe-core's script comes
    from the ``axe-playwright-python`` wheel (requirements-dev.txt); Playwright's evaluate runs it
    outside the page's Content-Security-Policy."""
    from axe_playwright_python.base import AXE_SCRIPT

    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE_SCRIPT)
    results = page.evaluate(
        "(context) => axe.run(context || document, {resultTypes: ['violations']})",
        context,
    )
    return results["violations"]


def describe_violations(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} [{v['helpUrl']}]")
        for node in v["nodes"][:5]:
            lines.append(f"    {', '.join(map(str, node['target']))}: {node.get('failureSummary', '').strip()}")
    return "\n".join(lines)


def assert_accessible(page, context: str | None = None, *, label: str = "") -> None:
    """Fail with axe-core's descriptions when ``page`` (or the part under the CSS selector
    ``context``) has an accessibility violation of serious or critical impact. Call it once the
    page shows what you want checked: axe sees only what is rendered (hidden parts are skipped)."""
    found = [v for v in axe_violations(page, context) if v.get("impact") in FAILING_IMPACTS]
    where = label or page.url
    assert not found, f"accessibility violations on {where}:\n{describe_violations(found)}"
