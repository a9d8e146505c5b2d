"""The Tasks page in a real browser against a real worker cluster: a batch of 5 submitted from a CSV
file reaches 100% on its progress bar without a reload, queued tasks are cancelled (from the page,
and by another client: the page hears it over /ws/tasks/), a failed or cancelled task is retried,
and a bad CSV is refused with the line and column at fault.

The web process is the test's live server (uvicorn in this process); the worker is a real
``manage.py qcluster`` on the same test database and Redis, so every processing/completed event
crosses processes through the channel layer. The model is medai's deterministic stub backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.db import connection
from playwright.sync_api import expect

from tests.conftest import register_model
from tests.inference.cluster_helpers import stop
from tests.support.own_database import ROOT
from tests.ui.conftest import shoot, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

CSV = """question,priority,max_tokens
What is the normal range of serum potassium?,high,8
"Which drugs interact with warfarin, and how?",normal,8
What is the first-line treatment for CAP?,,8
How is sepsis defined?,low,8
What is a normal INR?,critical,8
"""


@pytest.fixture
def worker(live_medai, tmp_path: Path) -> Iterator[object]:
    """Start a qcluster on the test database when called; stopped (before the database is emptied) at the end."""
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        db = connection.settings_dict
        url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
        env = {
            **os.environ,
            "DATABASE_URL": url if connection.vendor == "postgresql" else f"sqlite:///{db['NAME']}",
            "MEDAI_Q_WORKERS": "1",
            "MEDAI_QUEUE_POLL": "0.5",
            "MEDAI_BACKEND_RETRIES": "0",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("PYTEST_CURRENT_TEST", None)
        log = (tmp_path / "qcluster.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        stop(proc)


@pytest.fixture
def page(browser, live_medai, alice, stub_backend):
    if connection.vendor != "postgresql":
        pytest.skip("a second process shares the test database only on PostgreSQL")
    register_model("stub-a", stub_backend, agents=("MedicalQA", "Chat"))
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(live_medai + "/tasks/")
    yield page
    context.close()


def _ready(page) -> None:
    sign_in(page)
    expect(page.locator("#live-state")).to_have_text("Live")
    page.wait_for_selector("#task-agent option[value='MedicalQA']", state="attached")


def test_a_csv_batch_of_5_reaches_100_percent_live_and_queued_tasks_are_cancelled(
    page, worker, live_medai, token_for, alice, tmp_path
):
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url) if frame == page.main_frame else None)
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    _ready(page)
    assert page.locator("#task-agent").input_value() == "MedicalQA"  # the sensible default, not the first

    # No worker yet: two questions stay queued, each with its place in line.
    page.fill("#task-lines", "Cancel me from the page\nCancel me from another client")
    page.select_option("#task-priority", "low")
    page.click("#submit-button")
    expect(page.locator("#submit-status")).to_contain_text("Queued 2 tasks as batch")
    rows = page.locator("#task-list li")
    expect(rows).to_have_count(2)
    mine = rows.filter(has_text="Cancel me from the page")
    theirs = rows.filter(has_text="Cancel me from another client")
    expect(mine.locator(".badge")).to_have_text("queued · #1 in line")
    expect(theirs.locator(".badge")).to_have_text("queued · #2 in line")
    mine.locator(".task-cancel").click()
    expect(mine.locator(".badge")).to_have_text("cancelled")
    expect(theirs.locator(".badge")).to_have_text("queued · #1 in line")  # its new place, pushed
    # the other client's cancel reaches the page only through the websocket; the place follows
    other_id = theirs.get_attribute("data-task-id")
    cancelled = httpx.post(
        f"{live_medai}/v1/async/cancel/{other_id}", headers={"Authorization": f"Bearer {token_for(alice)}"}, timeout=10
    )
    assert cancelled.status_code == 200
    expect(theirs.locator(".badge")).to_have_text("cancelled")
    shoot(page, "tasks-cancelled")

    # With a worker: 5 questions from a CSV file, followed to 100% without a reload.
    worker()
    csv = tmp_path / "questions.csv"
    csv.write_text(CSV)
    page.set_input_files("#task-csv", str(csv))
    expect(page.locator("#csv-summary")).to_contain_text("5 questions ready to submit")
    page.click("#submit-button")
    expect(page.locator("#submit-status")).to_contain_text("Queued 5 tasks as batch")
    batch_id = page.locator("#batch-list li").first.get_attribute("data-batch-id")
    bar = page.locator(f"#batch-list li[data-batch-id='{batch_id}']")
    expect(bar).to_have_attribute("data-percent", "100", timeout=90_000)
    expect(bar.locator(".batch-text")).to_have_text("5 of 5 done · 5 completed")
    assert bar.locator("progress").evaluate("p => p.value") == 100
    expect(page.locator("#task-list li[data-status='completed']")).to_have_count(5)
    shoot(page, "tasks-batch-done")

    # A completed task's detail: the answer, the model, timings and tokens.
    page.locator("#task-list li", has_text="How is sepsis defined?").locator(".task-open").click()
    detail = page.locator("#task-detail")
    expect(detail).to_be_visible()
    expect(page.locator("#detail-answer")).not_to_be_empty()
    fields = page.locator("#detail-fields")
    expect(fields).to_contain_text("stub-a")
    expect(fields).to_contain_text("Queue wait")
    expect(fields).to_contain_text(" out")
    assert page.locator("#detail-retry").is_hidden() and page.locator("#detail-cancel").is_hidden()
    shoot(page, "tasks-detail")

    # A cancelled task is retried as a new task, which the worker then answers, live.
    page.click("#detail-close")
    mine.locator(".task-open").click()
    page.click("#detail-retry")
    expect(page.locator("#detail-status")).to_contain_text("Queued again as task")
    expect(page.locator("#detail-fields dd[data-status]")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#detail-answer")).not_to_be_empty()
    expect(rows).to_have_count(8)

    assert navigations == [], navigations  # everything above happened without a reload
    assert sockets and all(url.endswith("/ws/tasks/") for url in sockets)  # no token in the URL


def test_a_bad_csv_is_refused_naming_the_line_and_column(page, tmp_path):
    _ready(page)
    bad = tmp_path / "bad.csv"
    bad.write_text('question,priority\nFine question,normal\n,high\nAnother,urgent\n"Unclosed quote,low\n')
    page.set_input_files("#task-csv", str(bad))
    error = page.locator("#submit-error")
    expect(error).to_contain_text("a quoted field is not closed")
    expect(error).to_contain_text("line 5")
    bad = tmp_path / "bad2.csv"  # another file: choosing the same one again fires no change
    bad.write_text("question,priority\nFine question,normal\n,high\nAnother,urgent\n")
    page.set_input_files("#task-csv", str(bad))
    expect(error).to_contain_text('line 3, column "question": empty.')
    expect(error).to_contain_text('line 4, column "priority": "urgent" is not one of low, normal, high, critical.')
    assert page.get_attribute("#task-csv", "aria-invalid") == "true"
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/v1/async/submit" in r.url else None)
    page.click("#submit-button")
    expect(error).to_contain_text("line 4")
    assert not sent  # nothing was sent
    no_header = tmp_path / "no-header.csv"
    no_header.write_text("What is a normal INR?\nHow is sepsis defined?\n")
    page.set_input_files("#task-csv", str(no_header))
    expect(error).to_contain_text('a header with a "question" column')
    shoot(page, "tasks-csv-error")
