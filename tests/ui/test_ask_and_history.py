"""A clinician's day on the Ask and History pages, in a real browser (Debian's Chromium driven by
Playwright) against the bundled model on the real llama.cpp server: the default agent type with
its description, a streamed answer, copy, a follow-up in the same conversation, a rating with a
reason and a comment, a reload that keeps the conversation, the History page's list and search,
and a click there that reopens the conversation on the Ask page and continues it. No URL carries
the questions' words; both pages pass axe-core's check. Screenshots at desktop and phone widths."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from apps.inference.models import AgentRoute, Feedback, InferenceTask
from tests.conftest import records_written, register_model
from tests.ui.conftest import assert_accessible, shoot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

FIRST = "What is the normal adult resting heart rate?"
FOLLOW_UP = "And for children under ten?"
AGAIN = "Which condition raises it most?"
COMMENT = "Missing the range for infants"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
def page(browser, live_medai, llama_server, alice):
    register_model("smollm2-135m", llama_server, served="smollm2-135m-instruct", agents=("Chat", "MedicalQA"))
    AgentRoute.objects.update(is_default=False)
    AgentRoute.objects.filter(agent_type="MedicalQA").update(
        description="Medical questions and answers.", is_default=True, system_prompt="Answer concisely."
    )
    AgentRoute.objects.filter(agent_type="Chat").update(description="General conversation.")
    context = browser.new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_medai)
    page = context.new_page()
    page.set_default_timeout(60_000)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.on("framenavigated", lambda f: urls.append(f.url))
    page.urls = urls  # type: ignore[attr-defined]
    page.goto(live_medai + "/")
    yield page
    context.close()


def count_answer_updates(page) -> None:
    """Count the changes of the newest answer's text as it streams in (window.answerUpdates)."""
    page.evaluate(
        """() => {
        window.answerUpdates = 0;
        new MutationObserver(() => { window.answerUpdates += 1; })
          .observe(document.getElementById('turns'), {subtree: true, childList: true, characterData: true});
      }"""
    )


def ask(page, question: str, tokens: int = 24) -> None:
    page.fill("#max-tokens", str(tokens))
    page.fill("#question", question)
    page.click("#ask-button")
    expect(page.locator("#status")).to_have_text("Done.", timeout=90_000)


def test_ask_follow_up_rate_reload_and_reopen_from_history(page, live_medai):
    sign_in(page)
    page.wait_for_selector("#model option[value='MedicalQA']", state="attached")
    # the route marked default, not the alphabetical first (Chat), with its admin-written description
    expect(page.locator("#model")).to_have_value("MedicalQA")
    expect(page.locator("#agent-description")).to_have_text("Medical questions and answers.")
    page.select_option("#model", "Chat")
    expect(page.locator("#agent-description")).to_have_text("General conversation.")
    page.select_option("#model", "MedicalQA")

    # a streamed answer, kept in the clinician's history under a conversation the address names
    count_answer_updates(page)
    ask(page, FIRST)
    first_answer = page.inner_text("#answer").strip()
    assert first_answer
    assert page.evaluate("window.answerUpdates") > 1  # it came in pieces, as it was generated
    expect(page.locator("#answer-meta")).to_contain_text("Answered by smollm2-135m")
    assert re.fullmatch(rf"{re.escape(live_medai)}/\?conversation={UUID}", page.url), page.url
    conversation_id = page.url.rsplit("=", 1)[1]
    expect(page.locator("#question-label")).to_have_text("Follow-up question")

    # copy puts the answer on the clipboard
    page.locator(".turn").nth(0).locator(".copy-button").click()
    expect(page.locator(".turn").nth(0).locator(".tool-status")).to_have_text("Answer copied.")
    assert page.evaluate("navigator.clipboard.readText()").strip() == first_answer

    # a follow-up in the same conversation: the model is sent the first question and answer too
    ask(page, FOLLOW_UP)
    expect(page.locator(".turn")).to_have_count(2)
    assert page.url.endswith(conversation_id)
    records_written()
    exchanges = list(InferenceTask.objects.filter(conversation_id=conversation_id).order_by("created_at"))
    assert [len(e.request["payload"]["messages"]) for e in exchanges] == [2, 4]  # the route's system prompt first
    assert exchanges[1].request["payload"]["messages"][1:] == [
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": first_answer},
        {"role": "user", "content": FOLLOW_UP},
    ]

    # rate the follow-up's answer: not helpful, incomplete, with a comment
    latest = page.locator(".turn").nth(1)
    latest.get_by_role("button", name="Not helpful").click()
    expect(latest.locator(".tool-status")).to_have_text("Rated not helpful. Thank you.")
    expect(latest.get_by_role("button", name="Not helpful")).to_have_attribute("aria-pressed", "true")
    latest.get_by_label("Incomplete").check()
    latest.get_by_label("Comment for the reviewers (optional)").fill(COMMENT)
    latest.get_by_role("button", name="Send feedback").click()
    expect(latest.locator(".tool-status")).to_have_text("Thank you: your feedback was sent.")
    feedback = Feedback.objects.get()
    assert (feedback.task_id, feedback.rating, feedback.reasons, feedback.comment) == (
        exchanges[1].id,
        "down",
        ["incomplete"],
        COMMENT,
    )
    assert (feedback.model_name, feedback.agent_type) == ("smollm2-135m", "MedicalQA")
    assert_accessible(page, label="the Ask page with a conversation and the feedback form")
    shoot(page, "ask-conversation")

    # a reload keeps the conversation (read back from the history, the rating with it)
    page.reload()
    page.wait_for_selector("#page-content:not([hidden])")
    expect(page.locator(".turn")).to_have_count(2)
    expect(page.locator(".turn .question-text").nth(1)).to_have_text(FOLLOW_UP)
    expect(page.locator(".turn").nth(0).locator(".answer")).to_have_text(first_answer)
    expect(page.locator(".turn").nth(1).get_by_role("button", name="Not helpful")).to_have_attribute(
        "aria-pressed", "true"
    )

    # the History page lists both questions, newest first, and searches them
    page.locator("#main-nav").get_by_role("link", name="History").click()
    page.wait_for_selector("#history-panel:visible")
    items = page.locator("#history-list .history-question")
    expect(items).to_have_text([FOLLOW_UP, FIRST])
    expect(page.locator("#history-list .history-meta").first).to_contain_text("rated not helpful")
    assert_accessible(page, label="the History page")
    shoot(page, "history")
    page.fill("#history-q", "children UNDER ten")
    page.click("#search-button")
    expect(items).to_have_text([FOLLOW_UP])
    expect(page.locator("#history-status")).to_contain_text("1 question or answer holds")
    shoot(page, "history-search")

    # one click reopens the conversation on the Ask page, and a question continues it
    items.first.click()
    page.wait_for_url(re.compile(rf"/\?conversation={conversation_id}$"))
    expect(page.locator(".turn")).to_have_count(2)
    expect(page.locator("#conversation-note")).to_contain_text("Reopened from your history")
    reopened = page.locator(".turn").nth(1)
    expect(reopened.get_by_label("Incomplete")).to_be_checked()
    expect(reopened.get_by_label("Comment for the reviewers (optional)")).to_have_value(COMMENT)
    ask(page, AGAIN, tokens=8)
    expect(page.locator(".turn")).to_have_count(3)
    records_written()
    assert InferenceTask.objects.filter(conversation_id=conversation_id).count() == 3
    shoot(page, "ask-reopened")

    # no URL carried a question's words (they travel in POST bodies and API answers)
    for url in page.urls:  # type: ignore[attr-defined]
        lowered = url.lower()
        assert "heart" not in lowered and "children" not in lowered and "condition" not in lowered, url


def test_a_new_conversation_starts_afresh_and_signing_out_clears_the_page(page):
    sign_in(page)
    page.wait_for_selector("#model option[value='MedicalQA']", state="attached")
    ask(page, FIRST, tokens=8)
    first = page.url.rsplit("=", 1)[1]
    page.click("#new-conversation")
    expect(page.locator(".turn")).to_have_count(0)
    assert page.url.endswith("/")
    expect(page.locator("#question-label")).to_have_text("Question")
    ask(page, FOLLOW_UP, tokens=8)
    assert page.url.rsplit("=", 1)[1] != first
    records_written()
    assert InferenceTask.objects.filter(conversation_id=first).count() == 1
    page.click("#logout")
    page.wait_for_selector("#login-panel:not([hidden])")
    assert page.locator(".turn").count() == 0  # nothing of it stays on a shared workstation
    assert "conversation" not in page.url


def test_stop_keeps_what_was_streamed_and_it_can_be_rated_and_followed_up(page):
    sign_in(page)
    page.wait_for_selector("#model option[value='MedicalQA']", state="attached")
    page.fill("#max-tokens", "400")
    page.fill("#question", "Describe the full workup of a first seizure in an adult, step by step.")
    page.click("#ask-button")
    expect(page.locator("#answer")).not_to_be_empty(timeout=90_000)
    page.click("#stop-button")
    expect(page.locator("#status")).to_have_text("Stopped.")
    expect(page.locator("#answer-meta")).to_have_text("Stopped: the answer is what came until then.")
    shown = page.inner_text("#answer")
    turn = page.locator(".turn").nth(0)
    turn.get_by_role("button", name="Helpful", exact=True).click()
    expect(turn.locator(".tool-status")).to_have_text("Rated helpful. Thank you.")
    records_written()
    [stopped] = InferenceTask.objects.filter(conversation_id__isnull=False)
    assert stopped.status == InferenceTask.Status.CANCELLED
    kept = stopped.result["choices"][0]["message"]["content"]
    assert kept.strip() and kept.startswith(shown.strip()[:20])  # what was streamed until Stop
    assert Feedback.objects.get().task_id == stopped.id
    ask(page, "Shorter, please.", tokens=8)  # the stopped answer is part of the conversation
    records_written()
    assert InferenceTask.objects.filter(conversation_id=stopped.conversation_id).count() == 2
