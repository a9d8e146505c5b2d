"""Every page passes axe-core's check (no violation of serious or critical impact) signed out (the
sign-in form) and signed in, at desktop and phone widths, and is keyboard-usable: the skip link
and every navigation link are reached with Tab and show a visible focus outline."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD
from tests.ui.conftest import DESKTOP, PHONE, assert_accessible, sign_in

pytestmark = [pytest.mark.django_db(transaction=True)]

# (path, the element that shows once the page has rendered for a signed-in user)
PAGES = [
    ("/", "#chat-panel"),
    ("/history/", "#history-panel"),
    ("/tasks/", "#tasks-panel"),
    ("/system/", "#system-panel"),
]


@pytest.fixture
def context(browser, live_medai):
    context = browser.new_context(viewport=DESKTOP)
    yield context
    context.close()


def settle(page) -> None:
    """Let the page's scripts fill it in (API calls, the first websocket frames)."""
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)


@pytest.mark.parametrize("path", [p for p, _ in PAGES])
def test_the_sign_in_form_of_every_page_is_accessible(context, live_medai, path):
    page = context.new_page()
    page.goto(live_medai + path)
    page.wait_for_selector("#login-panel:not([hidden])")
    settle(page)
    assert_accessible(page, label=f"{path} signed out")
    page.set_viewport_size(PHONE)
    assert_accessible(page, label=f"{path} signed out, phone")


def test_every_page_signed_in_is_accessible(context, live_medai, alice):
    page = context.new_page()
    page.goto(live_medai + "/")
    sign_in(page)
    for path, ready in PAGES:
        page.goto(live_medai + path)
        page.wait_for_selector(f"{ready}:visible")
        settle(page)
        page.set_viewport_size(DESKTOP)
        assert_accessible(page, label=f"{path} signed in")
        page.set_viewport_size(PHONE)
        assert_accessible(page, label=f"{path} signed in, phone")


def test_the_admin_sign_in_and_index_are_accessible(context, live_medai, django_user_model):
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    page = context.new_page()
    page.goto(live_medai + "/admin/login/")
    assert_accessible(page, label="admin sign-in")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    settle(page)
    assert_accessible(page, label="admin index")


def focused(page) -> dict:
    return page.evaluate(
        """() => { const el = document.activeElement; const s = getComputedStyle(el);
        return {text: (el.textContent || '').trim(), tag: el.tagName, outline: s.outlineStyle,
                width: parseFloat(s.outlineWidth) || 0}; }"""
    )


@pytest.mark.parametrize(("path", "ready"), PAGES)
def test_every_control_is_reached_by_keyboard_with_a_visible_focus(context, live_medai, alice, path, ready):
    page = context.new_page()
    page.goto(live_medai + path)
    sign_in(page)
    page.goto(live_medai + path)  # a fresh page: the focus starts at the document
    page.wait_for_selector(f"{ready}:visible")
    settle(page)
    seen = []
    for _ in range(40):  # Tab through the page until the focus leaves it
        page.keyboard.press("Tab")
        f = focused(page)
        if f["tag"] == "BODY":
            break
        assert f["outline"] != "none" and f["width"] >= 2, f"no visible focus on {f}"
        seen.append(f["text"])
    assert seen[0] == "Skip to content"
    for label in ("Ask", "History", "Tasks", "System", "Log out"):
        assert label in seen, f"{label} not reached by Tab: {seen}"
    # The skip link moves the focus to the content.
    page.reload()
    page.wait_for_selector(f"{ready}:visible")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_assert_accessible_fails_on_a_violation_and_names_it(context):
    page = context.new_page()
    page.set_content(
        '<html lang="en"><head><title>t</title></head><body><main><h1>t</h1>'
        '<label>Unlabelled</label><input id="x"><img src="data:,">'
        '<p style="color:#ccc;background:#fff">faint text</p></main></body></html>'
    )
    with pytest.raises(AssertionError) as failure:
        assert_accessible(page, label="bad page")
    message = str(failure.value)
    assert "image-alt (critical)" in message
    assert "label (critical)" in message
    assert "color-contrast (serious)" in message
