"""Every HTML page works under its Content-Security-Policy in a real browser (Chromium): the web UI
(sign in, the live GPU line over its websocket), the admin (sign in, a list, an add form with
its widgets) and the API docs (Swagger UI, started from a script file, not inline). A blocked
script, style, image or connection shows up as a ``securitypolicyviolation`` event: none may."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', e =>
  window.__violations.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline')));
"""


@pytest.fixture
def context(browser, live_medai):
    context = browser.new_context()
    context.add_init_script(WATCH)
    messages: list[str] = []
    context.on("console", lambda m: messages.append(m.text))
    context.messages = messages  # type: ignore[attr-defined]
    yield context
    context.close()


def violations(page) -> list[str]:
    csp_console = [m for m in page.context.messages if "Content Security Policy" in m]
    return page.evaluate("window.__violations") + csp_console


def test_the_clinician_page_runs_under_its_csp(context, live_medai, alice):
    page = context.new_page()
    response = page.goto(live_medai + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.fill("#location", "demo")
    page.click("#login-button")
    page.wait_for_selector("#chat-panel:not([hidden])")
    page.wait_for_timeout(1500)  # the GPU websocket connects and reports
    assert violations(page) == []


def test_the_admin_runs_under_its_csp(context, live_medai, django_user_model):
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    page = context.new_page()
    response = page.goto(live_medai + "/admin/login/")
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    page.goto(live_medai + "/admin/inference/inferencetask/")
    page.wait_for_selector("#changelist")
    page.goto(live_medai + "/admin/inference/legalhold/add/")
    page.wait_for_selector("#id_reason")
    page.click("#lookup_id_user")  # the raw-id widget's lookup popup (admin JavaScript)
    page.wait_for_timeout(500)
    assert violations(page) == []


def test_the_api_docs_render_under_their_csp(context, live_medai, django_user_model):
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    page = context.new_page()
    page.goto(live_medai + "/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    page.goto(live_medai + "/api/docs/")
    page.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
    assert "medai API" in page.inner_text(".swagger-ui .info .title")
    assert violations(page) == []
