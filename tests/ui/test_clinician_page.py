"""A clinician signs in on the web page and gets a streamed answer from the real model,
in a real browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.conftest import register_model
from tests.ui.conftest import shoot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def page(browser, live_medai, llama_server, alice):
    register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct", agents=("MedicalQA", "Chat"))
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(live_medai + "/")
    yield page
    context.close()


def test_clinician_signs_in_and_gets_a_streamed_answer(page, tmp_path):
    sign_in(page)
    page.wait_for_selector("#chat-panel:not([hidden])")
    expect(page.locator("#whoami")).to_have_text("alice · clinician @ demo")
    page.wait_for_selector("#model option[value='MedicalQA']", state="attached")
    page.select_option("#model", "MedicalQA")
    page.fill("#max-tokens", "24")
    page.fill("#question", "What is hypertension?")
    page.click("#ask-button")
    expect(page.locator("#status")).to_have_text("Done.", timeout=60_000)
    assert page.inner_text("#answer").strip()
    assert "Answered by smollm2-135m" in page.inner_text("#answer-meta")
    shoot(page, "ask-answer")


def test_wrong_password_shows_the_reason_and_stays_on_sign_in(page):
    page.fill("#username", "alice")
    page.fill("#password", "wrong-password")
    page.fill("#location", "demo")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_contain_text("Invalid username or password")
    assert page.is_hidden("#chat-panel")


def test_sign_out_returns_to_the_sign_in_form_and_revokes_the_token(page):
    sign_in(page)
    page.wait_for_selector("#chat-panel:not([hidden])")
    token = page.evaluate("sessionStorage.getItem('medai.access')")
    page.click("#logout")
    page.wait_for_selector("#login-panel:not([hidden])")
    status = page.evaluate(
        "async (t) => (await fetch('/v1/models', {headers: {Authorization: 'Bearer ' + t}})).status", token
    )
    assert status == 401


def ask_ready(page) -> None:
    sign_in(page)
    page.wait_for_selector("#chat-panel:not([hidden])")
    page.wait_for_selector("#model option[value='MedicalQA']", state="attached")
    page.select_option("#model", "MedicalQA")
    page.fill("#max-tokens", "8")


def test_a_question_of_only_spaces_is_not_sent_and_the_page_says_why(page):
    from apps.inference.models import InferenceTask

    ask_ready(page)
    sent = []
    page.on("request", lambda r: sent.append(r.url) if r.url.endswith("/v1/chat/completions") else None)
    page.fill("#question", "   \n  ")
    page.click("#ask-button")
    expect(page.locator("#question-error")).to_contain_text("only spaces")
    assert page.get_attribute("#question", "aria-invalid") == "true"
    assert not sent and not InferenceTask.objects.exists()
    page.fill("#question", "What is hypertension?")  # typing a real question clears the message
    expect(page.locator("#question-error")).to_have_text("")


def test_the_servers_refusal_of_a_blank_question_is_shown_beside_the_question(page):
    import json

    ask_ready(page)

    def blank_it(route):
        body = json.loads(route.request.post_data)
        body["messages"][0]["content"] = "   "  # as a client without the page's own check would send it
        route.continue_(post_data=json.dumps(body))

    page.route("**/v1/chat/completions", blank_it)
    page.fill("#question", "What is hypertension?")
    page.click("#ask-button")
    expect(page.locator("#question-error")).to_contain_text("must not be blank")
    expect(page.locator("#status")).to_have_text("Not sent to a model.")
