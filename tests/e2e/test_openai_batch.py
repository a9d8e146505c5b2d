"""The official ``openai`` client's Batch API round trip, unchanged, against the whole platform as
``make run`` starts it (launcher: web, worker, monitor with its supervised llama-server on the
bundled SmolLM2): ``files.create`` of a 1,000-line JSONL file, ``batches.create``, polling
``batches.retrieve`` while the worker runs the lines from the priority queue (fed to it in parts:
MEDAI_BATCH_MAX at most at once), then ``files.content`` of the output file: one answer per line,
in file order, under its ``custom_id``. Also a cancel with partial results, and a bad line refused
at upload with a 400 the client types.

One platform for the module (it takes a minute to start on two cores); the 1,000 lines, with
``max_tokens`` 2, take a few minutes more. Marked ``e2e``: CI runs it once, in its one ``make
test``. What was measured (the batch's wall time and lines per second) is printed and written to
test-artifacts/batch-e2e.json; it is a record, not an assertion.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.launcher import Launched
from tests.support.openai_spec import assert_valid
from tests.support.servers import ROOT

pytestmark = pytest.mark.e2e

LINES = 1000
MODEL = "smollm2-135m"
FINAL = ("completed", "failed", "expired", "cancelled")
BOUND = 7200.0  # seconds a batch may take before the test gives up (a bound, not a measurement: a
# shared two-core machine under load ran these lines at 0.2 to 0.4 per second)


def _line(i: int, max_tokens: int = 2) -> dict[str, Any]:
    return {
        "custom_id": f"line-{i:04d}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"Reply with one word. Case {i}."}],
            "max_tokens": max_tokens,
            "temperature": 0,
        },
    }


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(x) + "\n" for x in lines).encode()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    launched = Launched(tmp_path_factory.mktemp("batch-e2e"))
    try:
        launched.wait_ready()
        yield launched
    finally:
        launched.stop()


@pytest.fixture(scope="module")
def client(platform: Launched) -> openai.OpenAI:
    secret = platform.manage("apikey", "create", "--user", "clinician", "--location", "demo").strip().splitlines()[-1]
    return openai.OpenAI(base_url=f"{platform.base}/v1", api_key=secret, max_retries=0, timeout=120)


def _wait(client: openai.OpenAI, batch_id: str, seen: list[Any] | None = None) -> Any:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if seen is not None:
            seen.append(batch)
        if batch.status in FINAL:
            return batch
        time.sleep(1.0)
    raise AssertionError(
        f"batch {batch_id} did not end within {BOUND} s (last: {batch.status}, {batch.request_counts})"
    )


def test_a_1000_line_file_round_trips_through_the_official_client(client: openai.OpenAI, platform: Launched) -> None:
    lines = [_line(i) for i in range(LINES)]
    uploaded = client.files.create(file=("night.jsonl", _jsonl(lines)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(_jsonl(lines))
    started = time.monotonic()
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly e2e"},
    )
    assert batch.status == "in_progress" and batch.request_counts.total == LINES
    assert_valid("Batch", batch.model_dump(exclude_none=True))
    seen: list[Any] = []
    done = _wait(client, batch.id, seen)
    elapsed = time.monotonic() - started
    assert done.status == "completed", done
    counts = done.request_counts
    assert counts.total == LINES and counts.completed + counts.failed == LINES
    # A model server starved of CPU (this machine is shared) may miss a health check and be taken
    # out for a moment: a line then fails as the backend's fault (5xx), in the error file. Each
    # line is still answered exactly once, in one file or the other.
    assert counts.failed <= LINES // 100, counts
    failures = (
        [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()] if counts.failed else []
    )
    assert len(failures) == counts.failed
    assert all(f["response"]["status_code"] >= 500 for f in failures), failures[:3]
    assert done.output_file_id and done.usage.output_tokens <= 2 * LINES and done.usage.input_tokens > 0
    completed = [b.request_counts.completed for b in seen]
    assert completed == sorted(completed)  # counts only grow while it runs
    assert {b.status for b in seen} <= {"in_progress", "finalizing", "completed"}

    output = client.files.content(done.output_file_id).text.splitlines()
    assert len(output) == counts.completed
    answers = [json.loads(x) for x in output]
    ids = [a["custom_id"] for a in answers]
    assert ids == sorted(ids)  # in file order
    assert sorted(ids + [f["custom_id"] for f in failures]) == [x["custom_id"] for x in lines]  # every line once
    for answer in answers:
        assert answer["error"] is None and answer["response"]["status_code"] == 200
        body = answer["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == MODEL
        assert isinstance(body["choices"][0]["message"]["content"], str)
        assert 0 < body["usage"]["completion_tokens"] <= 2
    out_file = client.files.retrieve(done.output_file_id)
    assert out_file.purpose == "batch_output" and out_file.bytes == len(
        client.files.content(done.output_file_id).content
    )
    listed = client.batches.list(limit=5)
    assert done.id in [b.id for b in listed.data]

    figures = {
        "lines": LINES,
        "completed": counts.completed,
        "failed": counts.failed,
        "max_tokens": 2,
        "seconds": round(elapsed, 1),
        "lines_per_second": round(LINES / elapsed, 2),
        "polls": len(seen),
    }
    print(f"\nbatch e2e: {figures}")
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    Path(artifacts / "batch-e2e.json").write_text(json.dumps(figures, indent=2))


def test_a_cancelled_batch_answers_every_line_in_its_two_files(client: openai.OpenAI) -> None:
    lines = [_line(i, max_tokens=8) for i in range(300)]
    uploaded = client.files.create(file=("cancel.jsonl", _jsonl(lines)), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = _wait(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    answered = (
        [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
        if done.output_file_id
        else []
    )
    errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert len(answered) + len(errors) == 300  # every line answered once, in one file or the other
    assert len(errors) > 0 and {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    assert {a["custom_id"] for a in answered} | {e["custom_id"] for e in errors} == {x["custom_id"] for x in lines}
    assert done.request_counts.completed == len(answered)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_a_bad_line_is_refused_at_upload_with_a_400_naming_it(client: openai.OpenAI) -> None:
    lines: list[Any] = [_line(0), {**_line(1), "body": {"model": MODEL}}]  # line 2 has no messages
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("bad.jsonl", _jsonl(lines)), purpose="batch")
    assert refused.value.body["param"] == "line[2].body.messages"
    assert "line 2" in refused.value.body["message"]
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("ok.jsonl", _jsonl([_line(0)])), purpose="fine-tune")
    assert purpose.value.body["param"] == "purpose"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-" + "0" * 32, endpoint="/v1/chat/completions", completion_window="24h"
        )
