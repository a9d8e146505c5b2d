"""The official ``openai`` client's files and batches resources, unchanged, over real HTTP (uvicorn
in this process) against the stub backend, the worker run in-process: every call it makes
(``files.create`` multipart, ``files.content`` with ``Accept: application/binary``, ``batches``
create, retrieve, list, cancel) and the errors it types. The real model and the whole platform:
tests/e2e/test_openai_batch.py."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import register_model
from tests.inference.batch_helpers import jsonl, line, run_worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(live_medai, stub_backend, alice, api_key_for):
    register_model("stub-a", stub_backend)
    return openai.OpenAI(base_url=f"{live_medai}/v1", api_key=api_key_for(alice), max_retries=0, timeout=30)


def test_the_official_clients_round_trip(client):
    uploaded = client.files.create(file=("night.jsonl", jsonl(*(line(f"c{i}") for i in range(3)))), purpose="batch")
    assert (uploaded.object, uploaded.purpose, uploaded.filename) == ("file", "batch", "night.jsonl")
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert uploaded.id in [f.id for f in client.files.list()]
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"a": "b"}
    )
    assert batch.status == "in_progress" and batch.request_counts.total == 3 and batch.metadata == {"a": "b"}
    run_worker()
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3 and done.error_file_id is None
    answers = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert [a["custom_id"] for a in answers] == ["c0", "c1", "c2"]
    assert client.files.content(uploaded.id).content == jsonl(*(line(f"c{i}") for i in range(3)))
    page = client.batches.list(limit=1)
    assert [b.id for b in page.data] == [batch.id]
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted is True and deleted.id == uploaded.id


def test_the_official_clients_cancel_and_errors(client):
    uploaded = client.files.create(file=("c.jsonl", jsonl(line("a"), line("b"))), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(batch.id).status == "cancelling"
    done = client.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.output_file_id is None
    errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert [e["error"]["code"] for e in errors] == ["batch_cancelled"] * 2
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_" + "0" * 32)
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-" + "0" * 32)
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("bad.jsonl", jsonl(line("a"), {**line("b"), "method": "GET"})), purpose="batch")
    assert bad.value.body["param"] == "line[2].method"
    with pytest.raises(openai.BadRequestError) as window:
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]
    assert window.value.body["param"] == "completion_window"
