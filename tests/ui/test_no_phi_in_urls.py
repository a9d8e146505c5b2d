"""No PHI in URLs: URLs end up in access logs, proxies and browser history. A clinician asks the
real model a question naming a patient, reads the answer and goes through the other pages; no
request, websocket or navigation URL carries the question's or the answer's text (it travels in
POST bodies and over the websockets' frames)."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

import pytest
from playwright.sync_api import expect

from tests.conftest import register_model
from tests.ui.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PATIENT = "Quenby Vantongeren"
QUESTION = f"Mrs {PATIENT}, 62, has had chest pain since Tuesday. What should be ruled out first?"


def phrases(text: str, n: int = 3) -> set[str]:
    """The text's runs of ``n`` words: any of them in a URL means the text went there."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def normalized(url: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", unquote_plus(unquote_plus(url)).lower()))


@pytest.fixture
def page(browser, live_medai, llama_server, alice):
    register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct", agents=("MedicalQA", "Chat"))
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(60_000)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.on("websocket", lambda ws: urls.append(ws.url))
    page.on("framenavigated", lambda f: urls.append(f.url))
    page.urls = urls  # type: ignore[attr-defined]
    page.goto(live_medai + "/")
    yield page
    context.close()


def test_no_url_carries_the_question_or_the_answer(page, live_medai):
    sign_in(page)
    page.wait_for_selector("#model option[value='MedicalQA']", state="attached")
    page.select_option("#model", "MedicalQA")
    page.fill("#max-tokens", "32")
    page.fill("#question", QUESTION)
    page.click("#ask-button")
    expect(page.locator("#status")).to_have_text("Done.", timeout=60_000)
    answer = page.inner_text("#answer").strip()
    assert answer

    for path in ("/history/", "/tasks/", "/system/", "/"):
        page.goto(live_medai + path)
        page.wait_for_selector("#page-content:not([hidden])")
        page.wait_for_load_state("networkidle")

    secrets = phrases(QUESTION) | phrases(answer) | {PATIENT.lower(), "vantongeren"}
    urls = page.urls  # type: ignore[attr-defined]
    assert any("/v1/chat/completions" in u for u in urls)  # the question did go out (in a POST body)
    leaks = [(u, s) for u in urls for s in secrets if s in normalized(u)]
    assert not leaks, f"PHI in URLs: {leaks[:5]}"
