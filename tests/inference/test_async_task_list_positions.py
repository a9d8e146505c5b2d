"""GET /v1/async/tasks shows each queued task's place in the queue (as its status does), read for
the whole page at once: the page costs the same number of queries for 2 tasks as for 12."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.inference import queue
from apps.inference.broker import PriorityBroker
from tests.conftest import register_model
from tests.inference.queue_helpers import submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def model(db, stub_backend):
    register_model("stub-a", stub_backend)


def test_queued_tasks_in_the_list_show_their_position(client_for, alice, bob):
    client = client_for(alice)
    done = submit(client, "answered", "critical")
    low = submit(client, "routine", "low")
    theirs = submit(client_for(bob), "bob's, ahead of alice's normal one", "high")
    normal = submit(client, "normal")
    critical = submit(client, "urgent", "critical")
    broker = PriorityBroker(list_key=queue.list_key())
    [(ack_id, _)] = broker._claim()  # the head: delivered, run, acknowledged
    assert queue.run_task(done, collate=False) == "completed"
    broker.acknowledge(ack_id)

    listed = {t["task_id"]: t["position"] for t in client.get("/v1/async/tasks").json()["results"]}
    assert listed == {critical: 1, normal: 3, low: 4, done: None}  # bob's task counts, unseen
    for task_id, place in listed.items():
        assert client.get(f"/v1/async/status/{task_id}").json()["position"] == place
    assert client_for(bob).get("/v1/async/tasks").json()["results"][0]["position"] == 2
    assert theirs not in listed


def test_the_page_reads_positions_in_one_query(client_for, alice):
    client = client_for(alice)

    def queries_for_the_page() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get("/v1/async/tasks").status_code == 200
        return len(ctx.captured_queries)

    for i in range(2):
        submit(client, f"question {i}")
    queries_for_the_page()  # credentials cached from here on
    few = queries_for_the_page()
    for i in range(2, 12):
        submit(client, f"question {i}")
    assert queries_for_the_page() == few
    assert sorted(t["position"] for t in client.get("/v1/async/tasks").json()["results"]) == list(range(1, 13))
