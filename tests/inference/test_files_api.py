"""The Files API (``/v1/files``): a JSONL upload of batch requests, checked line by line (a 400
names the line and the field), stored encrypted, listed, read, downloaded and deleted by its owner
alone; answers in OpenAI's own shapes."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from apps.audit.models import AuditEvent
from apps.inference.filebatch_models import FilePart, StoredFile
from tests.support.openai_spec import assert_valid

pytestmark = pytest.mark.django_db

NOTE = "Mrs. Quillfeather, MRN 99887766: is an INR of 4.2 too high?"


def line(custom_id: str, content: str = NOTE, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "Chat", "messages": [{"role": "user", "content": content}], "max_tokens": 4, **body},
    }


def jsonl(*lines: Any) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def upload(client: Any, data: bytes, purpose: str = "batch", name: str = "night.jsonl", **extra: Any) -> Any:
    form = {"file": SimpleUploadedFile(name, data, content_type="application/jsonl"), "purpose": purpose, **extra}
    return client.post("/v1/files", form, format="multipart")


def test_an_upload_answers_an_openai_file_and_is_stored_encrypted(client_for, alice):
    data = jsonl(line("a"), line("b", "second question"))
    response = upload(client_for(alice), data)
    assert response.status_code == 200, response.content
    body = response.json()
    assert_valid("OpenAIFile", body)
    assert body["id"].startswith("file-") and body["object"] == "file"
    assert (body["bytes"], body["filename"], body["purpose"], body["status"]) == (
        len(data),
        "night.jsonl",
        "batch",
        "processed",
    )
    assert body["expires_at"] - body["created_at"] == 30 * 86_400
    stored = StoredFile.objects.get()
    assert (stored.lines, stored.user, stored.location.code) == (2, alice, "demo")
    with connection.cursor() as cursor:  # at rest: neither the prompt nor the filename in clear
        cursor.execute("SELECT data FROM inference_filepart")
        raw = " ".join(row[0] for row in cursor.fetchall())
        cursor.execute("SELECT filename FROM inference_storedfile")
        raw += " ".join(row[0] for row in cursor.fetchall())
    assert "Quillfeather" not in raw and "99887766" not in raw and "night" not in raw
    event = AuditEvent.objects.get(action="file.upload")
    assert (event.actor, event.object_id, event.details["lines"]) == ("alice", str(stored.id), 2)


def test_the_download_is_the_upload_byte_for_byte_and_is_audited(client_for, alice):
    data = b"\xef\xbb\xbf" + jsonl(line("a"), "", line("b", "caf\u00e9 \u2028 \u00e9")).replace(b"\n", b"\r\n", 1)
    client = client_for(alice)
    file_id = upload(client, data).json()["id"]
    response = client.get(f"/v1/files/{file_id}/content", HTTP_ACCEPT="application/binary")  # as the client asks
    assert response.status_code == 200
    assert response.content == data.removeprefix(b"\xef\xbb\xbf")  # the text as uploaded (its BOM aside)
    missing = client.get("/v1/files/file-nope/content", HTTP_ACCEPT="application/binary")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "file_not_found"
    assert response["Cache-Control"] == "no-store"
    assert AuditEvent.objects.filter(action="file.read", object_id=str(uuid.UUID(file_id[5:]))).count() == 1


def test_a_file_is_split_into_parts_of_whole_lines(client_for, alice, settings):
    from apps.inference.filebatch import files

    long = "x" * 100_000
    data = jsonl(*(line(f"id-{i}", f"{long} {i}") for i in range(6)))
    client = client_for(alice)
    file_id = upload(client, data).json()["id"]
    parts = list(FilePart.objects.order_by("index"))
    assert len(parts) >= 3 and all(p.data.endswith("\n") for p in parts)
    assert [p.first_request for p in parts] == sorted(p.first_request for p in parts)
    stored = StoredFile.objects.get()
    assert [x.custom_id for x in files.lines_from(stored, 4)] == ["id-4", "id-5"]
    assert [x.number for x in files.lines_from(stored, 0, 2)] == [1, 2]
    assert client.get(f"/v1/files/{file_id}/content").content == data


@pytest.mark.parametrize(
    "lines, param, words",
    [
        ([line("a"), "{not json"], "line[2]", "not valid JSON"),
        ([line("a"), "[1, 2]"], "line[2]", "JSON object"),
        ([{**line("a"), "extra": 1}], "line[1].extra", "unknown field"),
        ([{k: v for k, v in line("a").items() if k != "custom_id"}], "line[1].custom_id", "required"),
        ([line("a"), line("a")], "line[2].custom_id", "line 1 has the same"),
        ([line("")], "line[1].custom_id", "non-empty"),
        ([{**line("a"), "method": "GET"}], "line[1].method", "POST"),
        ([{**line("a"), "url": "/v1/embeddings"}], "line[1].url", "not served in batches"),
        ([{**line("a"), "body": "hi"}], "line[1].body", "JSON object"),
        ([line("a"), {**line("b"), "body": {"model": "Chat"}}], "line[2].body.messages", "required"),
        ([line("a", stream=True)], "line[1].body.stream", "never streamed"),
        ([line("a", priority="high")], "line[1].body.priority", "metadata.priority"),
        ([line("a", deadline_s=5)], "line[1].body.deadline_s", "completion_window"),
        ([line("a", temperature="hot")], "line[1].body.temperature", ""),
        ([line("a", n=3)], "line[1].body.n", ""),
    ],
)
def test_a_bad_line_is_a_400_naming_its_line_and_field(client_for, alice, lines, param, words):
    response = upload(client_for(alice), jsonl(*lines))
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["param"] == param, error
    number = param.split("]")[0].removeprefix("line[")
    assert error["message"].startswith(f"file, line {number}: ") and words in error["message"], error
    assert not StoredFile.objects.exists()  # nothing stored


@pytest.mark.parametrize(
    "data, param, words",
    [
        (b"\xff\xfe not utf-8\n", "file", "UTF-8"),
        (b"\n  \n", "file", "no request"),
        (b"", "file", ""),
    ],
)
def test_a_file_that_is_no_jsonl_of_requests_is_a_400_naming_file(client_for, alice, data, param, words):
    response = upload(client_for(alice), data)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["param"] == param and words in response.json()["error"]["message"]


def test_only_the_batch_purpose_is_taken(client_for, alice):
    for purpose in ("fine-tune", "assistants", "", "batch_output"):
        response = upload(client_for(alice), jsonl(line("a")), purpose=purpose)
        assert response.status_code == 400, (purpose, response.content)
        assert response.json()["error"]["param"] == "purpose"


def test_the_size_and_line_limits_are_settings(client_for, alice, settings):
    client = client_for(alice)
    settings.MEDAI_FILE_MAX_LINES = 3
    too_many = upload(client, jsonl(*(line(f"r{i}") for i in range(4))))
    assert too_many.status_code == 400 and too_many.json()["error"]["code"] == "too_many_lines"
    assert upload(client, jsonl(*(line(f"r{i}") for i in range(3)))).status_code == 200
    settings.MEDAI_FILE_MAX_BYTES = 2048
    too_big = upload(client, jsonl(*(line(f"s{i}", "y" * 900) for i in range(3))))
    assert too_big.status_code == 413 and too_big.json()["error"]["param"] == "file"


def test_a_form_without_exactly_one_file_or_with_unknown_fields_is_a_400(client_for, alice):
    client = client_for(alice)
    missing = client.post("/v1/files", {"purpose": "batch"}, format="multipart")
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    extra = upload(client, jsonl(line("a")), colour="blue")
    assert extra.status_code == 400 and extra.json()["error"]["param"] == "colour"
    as_json = client.post("/v1/files", {"purpose": "batch"}, format="json")
    assert as_json.status_code == 415


def test_expires_after_shortens_the_retention(client_for, alice):
    client = client_for(alice)
    body = upload(client, jsonl(line("a")), **{"expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"})
    assert body.status_code == 200, body.content
    assert body.json()["expires_at"] - body.json()["created_at"] == 3600
    for anchor, seconds, param in (
        ("created_at", "10", "seconds"),
        ("now", "3600", "anchor"),
        ("created_at", "x", "seconds"),
    ):
        bad = upload(client, jsonl(line("a")), **{"expires_after[anchor]": anchor, "expires_after[seconds]": seconds})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == f"expires_after.{param}", bad.content


def test_list_retrieve_and_delete_in_openai_shapes(client_for, alice):
    client = client_for(alice)
    ids = [upload(client, jsonl(line(f"a{i}")), name=f"f{i}.jsonl").json()["id"] for i in range(3)]
    page = client.get("/v1/files").json()
    assert_valid("ListFilesResponse", page)
    assert [f["id"] for f in page["data"]] == ids[::-1] and page["has_more"] is False
    first = client.get("/v1/files?limit=2").json()
    assert [f["id"] for f in first["data"]] == ids[:0:-1] and first["has_more"] is True
    rest = client.get(f"/v1/files?limit=2&after={first['last_id']}").json()
    assert [f["id"] for f in rest["data"]] == ids[:1] and rest["has_more"] is False
    assert [f["id"] for f in client.get("/v1/files?order=asc").json()["data"]] == ids
    assert client.get("/v1/files?purpose=batch_output").json()["data"] == []
    one = client.get(f"/v1/files/{ids[1]}")
    assert one.status_code == 200 and one.json()["filename"] == "f1.jsonl"
    assert_valid("OpenAIFile", one.json())
    deleted = client.delete(f"/v1/files/{ids[1]}")
    assert deleted.status_code == 200
    assert_valid("DeleteFileResponse", deleted.json())
    assert deleted.json() == {"id": ids[1], "object": "file", "deleted": True}
    assert client.get(f"/v1/files/{ids[1]}").status_code == 404
    assert client.get(f"/v1/files/{ids[1]}/content").status_code == 404
    assert client.delete(f"/v1/files/{ids[1]}").status_code == 404
    assert not FilePart.objects.filter(file_id=uuid.UUID(ids[1][5:])).exists()  # the content is gone
    assert AuditEvent.objects.filter(action="file.delete").count() == 1


@pytest.mark.parametrize(
    "query, param",
    [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=x", "limit"),
        ("order=up", "order"),
        ("purpose=x", "purpose"),
        ("after=file-nope", "after"),
    ],
)
def test_bad_list_parameters_are_400s_naming_them(client_for, alice, query, param):
    response = client_for(alice).get(f"/v1/files?{query}")
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_a_file_is_its_owners_alone(client_for, alice, bob, charlie, audrey):
    file_id = upload(client_for(alice), jsonl(line("a"))).json()["id"]
    for other in (bob, charlie, audrey):
        client = client_for(other)
        assert client.get("/v1/files").json()["data"] == []
        for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
            assert client.get(path).status_code == 404, (other, path)
        assert client.delete(f"/v1/files/{file_id}").status_code in (403, 404)
    assert StoredFile.objects.live().count() == 1


@pytest.mark.parametrize(
    "file_id", ["nope", "file-", "file-xyz", "00000000-0000-0000-0000-000000000000", "file-" + "0" * 32]
)
def test_an_odd_file_id_is_a_404(client_for, alice, file_id):
    response = client_for(alice).get(f"/v1/files/{file_id}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "file_not_found"


def test_an_auditor_cannot_upload(client_for, audrey):
    assert upload(client_for(audrey), jsonl(line("a"))).status_code == 403


@pytest.mark.parametrize(
    "content_type, data",
    [
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=x", b"garbage"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n',
        ),
        ("application/x-www-form-urlencoded", b"purpose=batch&file=x"),
    ],
)
def test_a_broken_multipart_body_is_a_4xx_never_a_500(client_for, alice, content_type, data):
    from django.test import Client

    token = client_for(alice)._credentials["HTTP_AUTHORIZATION"]
    response = Client(raise_request_exception=False).post(
        "/v1/files", data=data, content_type=content_type, HTTP_AUTHORIZATION=token
    )
    assert 400 <= response.status_code < 500, response.content
    assert "error" in response.json()
