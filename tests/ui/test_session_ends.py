"""The shared workstation: the session lives in the tab (sessionStorage), so a new tab or browser
is signed out and nothing of it is left in cookies or localStorage; after MEDAI_UI_IDLE_SECONDS
without activity the page warns, then signs out and the server revokes the session (its refresh
token no longer works), even when the tab's access token had expired meanwhile."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.ui.conftest import assert_accessible, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

REFRESH = """async (token) => (await fetch('/v1/auth/refresh', {method: 'POST',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify({refresh_token: token})})).status"""


@pytest.fixture
def context(browser, live_medai):
    context = browser.new_context()
    context.set_default_timeout(20_000)
    yield context
    context.close()


def test_a_new_tab_or_browser_is_signed_out_and_nothing_is_left_outside_the_tab(browser, context, live_medai, alice):
    page = context.new_page()
    page.goto(live_medai + "/")
    sign_in(page)
    assert page.evaluate("sessionStorage.getItem('medai.access')")
    assert page.evaluate("Object.keys(localStorage)") == []
    assert not [c for c in context.cookies() if c["name"] not in ("csrftoken",)]  # no session cookie
    for path in ("/", "/system/"):  # the same tab keeps its session from page to page
        page.goto(live_medai + path)
        page.wait_for_selector("#page-content:not([hidden])")

    second_tab = context.new_page()
    second_tab.goto(live_medai + "/")
    expect(second_tab.locator("#login-panel")).to_be_visible()
    expect(second_tab.locator("#page-content")).to_be_hidden()
    assert second_tab.evaluate("sessionStorage.getItem('medai.access')") is None

    page.close()  # the tab closes: its session is gone with it
    reopened = context.new_page()
    reopened.goto(live_medai + "/system/")
    expect(reopened.locator("#login-panel")).to_be_visible()

    other = browser.new_context()
    try:
        elsewhere = other.new_page()
        elsewhere.goto(live_medai + "/")
        expect(elsewhere.locator("#login-panel")).to_be_visible()
    finally:
        other.close()


def test_inactivity_warns_then_signs_out_and_revokes_the_session(context, live_medai, alice, settings):
    settings.MEDAI_UI_IDLE_SECONDS = 8  # (the environment's minimum is 30; the page reads the setting)
    page = context.new_page()
    page.goto(live_medai + "/")
    sign_in(page)
    refresh = page.evaluate("sessionStorage.getItem('medai.refresh')")
    warning = page.locator("#idle-warning")
    expect(warning).to_be_visible(timeout=10_000)
    expect(warning).to_contain_text("you will be signed out in")
    assert_accessible(page, label="the idle warning")
    # activity puts it off
    page.keyboard.press("Shift")
    expect(warning).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('medai.access')")

    logouts = []
    page.on("requestfinished", lambda r: logouts.append(r) if r.url.endswith("/v1/auth/logout") else None)
    expect(warning).to_be_visible(timeout=10_000)
    expect(page.locator("#login-panel")).to_be_visible(timeout=10_000)
    expect(page.locator("#login-reason")).to_have_text("You were signed out after 8 seconds without activity.")
    expect(page.locator("#page-content")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('medai.access')") is None
    assert [r.response().status for r in logouts] == [204]
    assert page.evaluate(REFRESH, refresh) == 401  # revoked on the server, not only forgotten here


def test_an_idle_tab_whose_access_token_expired_still_revokes_its_session(context, live_medai, alice, settings):
    settings.MEDAI_UI_IDLE_SECONDS = 4
    page = context.new_page()
    page.goto(live_medai + "/")
    sign_in(page)
    first_refresh = page.evaluate("sessionStorage.getItem('medai.refresh')")
    page.evaluate("sessionStorage.setItem('medai.access', 'expired.access.token')")  # as after 15 idle minutes
    logouts = []
    page.on("requestfinished", lambda r: logouts.append(r) if r.url.endswith("/v1/auth/logout") else None)
    expect(page.locator("#login-panel")).to_be_visible(timeout=15_000)
    # The access token was refreshed (by the sign-out, or by a page script that met the 401 first),
    # then the session was logged out with the refresh token in force: that one is refused now.
    assert logouts and logouts[-1].response().status == 204
    final_refresh = logouts[-1].post_data_json["refresh_token"]
    assert page.evaluate(REFRESH, final_refresh) == 401
    assert page.evaluate(REFRESH, first_refresh) == 401
    assert page.evaluate("sessionStorage.getItem('medai.refresh')") is None
