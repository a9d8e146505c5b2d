"""Every page fits a phone: at 390 px wide nothing scrolls sideways, signed out (the sign-in form)
and signed in, and the admin's sign-in and index too. Screenshots of each page at desktop and phone
widths go to test-artifacts/screenshots/ (``layout-<page>-desktop.png``, ``-phone.png``)."""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD
from tests.ui.conftest import PHONE, shoot, sign_in
from tests.ui.test_accessibility import PAGES, settle

pytestmark = [pytest.mark.django_db(transaction=True)]

OVERFLOW = """() => {
  const root = document.documentElement;
  const wide = [...document.querySelectorAll('body *')]
    .filter((el) => el.getBoundingClientRect().right > root.clientWidth + 1 && el.getClientRects().length)
    .filter((el) => !el.closest('.table-wrap, .md-scroll, .skip-link'))  // scroll inside their own box
    .slice(0, 5).map((el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
      (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ').join('.') : ''));
  return {scroll: root.scrollWidth, width: root.clientWidth, wide};
}"""


def assert_fits(page, label: str) -> None:
    fit = page.evaluate(OVERFLOW)
    assert fit["scroll"] <= fit["width"], f"{label} scrolls sideways at {fit['width']} px: {fit}"
    assert not fit["wide"], f"{label}: elements past the right edge: {fit['wide']}"


@pytest.fixture
def phone(browser, live_medai):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    yield context
    context.close()


def test_every_page_fits_a_phone_signed_out_and_in(phone, live_medai, alice):
    page = phone.new_page()
    for path, _ in PAGES:
        page.goto(live_medai + path)
        page.wait_for_selector("#login-panel:not([hidden])")
        assert_fits(page, f"{path} signed out")
    shoot(page, "layout-sign-in")
    sign_in(page)
    for path, ready in PAGES:
        page.goto(live_medai + path)
        page.wait_for_selector(f"{ready}:visible")
        settle(page)
        assert_fits(page, f"{path} signed in")
        shoot(page, "layout-" + (path.strip("/") or "ask"))
        page.set_viewport_size(PHONE)


def test_the_admin_fits_a_phone(phone, live_medai, django_user_model):
    django_user_model.objects.create_superuser("root", password=PASSWORD)
    page = phone.new_page()
    page.goto(live_medai + "/admin/login/")
    assert_fits(page, "admin sign-in")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    settle(page)
    assert_fits(page, "admin index")
    shoot(page, "layout-admin")
    page.set_viewport_size(PHONE)
