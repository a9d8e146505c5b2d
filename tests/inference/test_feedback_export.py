"""``GET /v1/feedback/export`` and ``manage.py export_feedback`` (apps/inference/feedback_export.py):
the organization's ratings for a training pipeline, without PHI (no comment, question or answer)
unless asked with a purpose of use, which the audit event records; auditors and admins only."""

from __future__ import annotations

import csv
import io
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.accounts.models import User
from apps.audit.models import AuditEvent
from apps.inference.models import Feedback, InferenceTask
from tests.conftest import _user, records_written
from tests.inference.history_helpers import stored_exchange

pytestmark = pytest.mark.django_db

QUESTION = "Mrs. Okafor, eGFR 25: metformin dose?"
ANSWER = "Stop metformin below an eGFR of 30."
COMMENT = "Wrong for Mrs. Okafor: she is on dialysis"
PHI = ("Okafor", "metformin", "dialysis", "eGFR")


@pytest.fixture
def dana(org, demo) -> User:
    return _user("dana", User.Role.ADMIN, org, demo)


@pytest.fixture
def rated(alice, client_for):
    """alice rates two of her exchanges (one with a comment); the second's content is purged since."""
    first = stored_exchange(alice, QUESTION, ANSWER)
    InferenceTask.objects.filter(id=first.id).update(arm="smollm2", answer_chars=len(ANSWER), finish_reason="stop")
    second = stored_exchange(alice, "Another question about Mrs. Okafor", "Another answer")
    client = client_for(alice)
    for task, body in (
        (first, {"rating": "down", "reasons": ["wrong", "unsafe"], "comment": COMMENT}),
        (second, {"rating": "up"}),
    ):
        assert client.post("/v1/feedback", {"exchange_id": str(task.id), **body}, format="json").status_code == 201
    now = timezone.now()
    InferenceTask.objects.filter(id=second.id).update(request=None, result=None, content_purged_at=now)
    return first, second


def _rows(response) -> list[dict]:
    return [json.loads(line) for line in response.content.decode().splitlines()]


def _export_events() -> list[AuditEvent]:
    records_written()
    return list(AuditEvent.objects.filter(action="feedback.export").order_by("seq"))


def test_the_export_holds_no_phi_by_default(client_for, audrey, rated):
    first, second = rated
    response = client_for(audrey).get("/v1/feedback/export")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Cache-Control"] == "no-store"
    text = response.content.decode()
    assert not any(word in text for word in PHI), text
    rows = _rows(response)
    assert [r["exchange_id"] for r in rows] == [str(first.id), str(second.id)]
    down = rows[0]
    assert (down["rating"], down["reasons"], down["has_comment"]) == ("down", ["wrong", "unsafe"], True)
    assert (down["model"], down["agent_type"], down["arm"], down["location"]) == (
        "smollm2",
        "MedicalQA",
        "smollm2",
        "demo",
    )
    assert (down["answer_chars"], down["finish_reason"]) == (len(ANSWER), "stop")
    assert not {"comment", "question", "answer", "user"} & set(down)
    [event] = _export_events()
    assert event.actor == "audrey" and event.purpose_of_use == ""
    assert (event.details["rows"], event.details["include_content"]) == (2, False)


def test_content_needs_a_purpose_of_use(client_for, audrey, rated):
    response = client_for(audrey).get("/v1/feedback/export?include_content=true")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("purpose_of_use_required", "X-Purpose-Of-Use")
    assert _export_events() == []  # nothing was exported


def test_content_with_a_purpose_is_exported_and_audited_with_it(client_for, audrey, rated):
    first, second = rated
    response = client_for(audrey).get("/v1/feedback/export?include_content=true", HTTP_X_PURPOSE_OF_USE="HOPERAT")
    assert response.status_code == 200, response.content
    down, up = _rows(response)
    assert (down["comment"], down["question"], down["answer"], down["content_purged"]) == (
        COMMENT,
        QUESTION,
        ANSWER,
        False,
    )
    # purged since: nothing left to export of its exchange
    assert (up["content_purged"], up["question"], up["answer"], up["comment"]) == (True, "", "", "")
    [event] = _export_events()
    assert event.purpose_of_use == "HOPERAT"
    assert (event.details["include_content"], event.details["purpose"], event.details["rows"]) == (True, "HOPERAT", 2)
    assert "Okafor" not in json.dumps(event.details)


def test_csv_and_pages(client_for, dana, rated):
    first, second = rated
    client = client_for(dana)  # a location admin exports too
    page = client.get("/v1/feedback/export?format=csv&limit=1")
    assert page.status_code == 200 and page["Content-Type"].startswith("text/csv")
    [row] = list(csv.DictReader(io.StringIO(page.content.decode())))
    assert (row["exchange_id"], row["reasons"], row["has_comment"]) == (str(first.id), "wrong;unsafe", "True")
    after = page["X-Medai-Next-After"]
    rest = client.get(f"/v1/feedback/export?limit=1&after={after}")
    assert [r["exchange_id"] for r in _rows(rest)] == [str(second.id)]
    assert "X-Medai-Next-After" not in rest
    filtered = client.get("/v1/feedback/export?rating=up&since=2000-01-01&until=2999-12-31&model=smollm2")
    assert [r["rating"] for r in _rows(filtered)] == ["up"]


def test_clinicians_may_not_export(client_for, alice, rated):
    response = client_for(alice).get("/v1/feedback/export")
    assert response.status_code == 403


@pytest.mark.parametrize(
    "query, param",
    [
        ("format=xml", "format"),
        ("since=yesterday", "since"),
        ("until=2026-13-45", "until"),
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("after=-3", "after"),
        ("rating=sideways", "rating"),
        ("include_content=maybe", "include_content"),
        ("q=okafor", "q"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(client_for, audrey, query, param):
    response = client_for(audrey).get(f"/v1/feedback/export?{query}")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == param


def test_the_command_exports_without_phi_and_with_content_only_for_a_purpose(rated, tmp_path):
    out = StringIO()
    call_command("export_feedback", stdout=out, stderr=StringIO())
    assert len(out.getvalue().splitlines()) == 2 and not any(w in out.getvalue() for w in PHI)
    with pytest.raises(CommandError, match="--purpose"):
        call_command("export_feedback", "--include-content", stdout=StringIO(), stderr=StringIO())
    target = tmp_path / "feedback.csv"
    call_command(
        "export_feedback",
        "--include-content",
        "--purpose",
        "HRESCH",
        "--format",
        "csv",
        "--output",
        str(target),
        stderr=StringIO(),
    )
    rows = list(csv.DictReader(target.open()))
    assert rows[0]["comment"] == COMMENT and rows[0]["question"] == QUESTION
    events = _export_events()
    assert [(e.details["include_content"], e.purpose_of_use) for e in events] == [(False, ""), (True, "HRESCH")]


def test_ratings_keep_the_model_route_and_arm_after_the_exchange_is_purged(alice, client_for):
    task = stored_exchange(alice, QUESTION, ANSWER)
    InferenceTask.objects.filter(id=task.id).update(arm="arm-b")
    client_for(alice).post("/v1/feedback", {"exchange_id": str(task.id), "rating": "up"}, format="json")
    InferenceTask.objects.filter(id=task.id).update(request=None, result=None, content_purged_at=timezone.now())
    feedback = Feedback.objects.get()
    assert (feedback.model_name, feedback.agent_type, feedback.arm) == ("smollm2", "MedicalQA", "arm-b")
