"""Fair shares in the queue: within a priority level, locations take turns in the order the broker
delivers (and so the order workers claim and collate), so one location's backlog does not make
another's task wait behind all of it. Strict priority between levels and FIFO within a location
hold as before. (alice and bob work at demo, charlie at north.)"""

from __future__ import annotations

import pytest

from apps.inference.models import QueueEntry
from tests.conftest import register_model
from tests.inference.queue_helpers import drain, submit

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def model(db):
    register_model("stub", "http://127.0.0.1:9/v1")


@pytest.fixture(autouse=True)
def long_turns(settings):
    """A turn far longer than this test's submits take (on a slow machine too), so the order does
    not depend on the clock; one aging period, so strict priority still holds within it."""
    settings.MEDAI_QUEUE_FAIR_TURN_SECONDS = 60.0


def test_a_task_from_another_location_goes_ahead_of_a_backlog(client_for, alice, charlie):
    demo, north = client_for(alice), client_for(charlie)
    backlog = [submit(demo, f"demo question {i}", "low") for i in range(6)]
    theirs = [submit(north, f"north question {i}", "low") for i in range(2)]
    assert drain() == [backlog[0], theirs[0], backlog[1], theirs[1], *backlog[2:]]


def test_a_batch_takes_turns_with_a_single_task_from_elsewhere(client_for, alice, charlie):
    demo, north = client_for(alice), client_for(charlie)
    response = demo.post(
        "/v1/async/submit-batch",
        {
            "requests": [
                {"agent_type": "Chat", "messages": [{"role": "user", "content": f"batch item {i}"}], "priority": "low"}
                for i in range(5)
            ]
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    batch = response.json()["task_ids"]
    single = submit(north, "one question from north", "low")
    assert drain() == [batch[0], single, *batch[1:]]


def test_two_users_of_one_location_share_its_turns(client_for, alice, bob, charlie):
    demo_a, demo_b, north = client_for(alice), client_for(bob), client_for(charlie)
    a = [submit(demo_a, f"alice {i}", "normal") for i in range(2)]
    b = submit(demo_b, "bob", "normal")
    c = submit(north, "charlie", "normal")
    assert drain() == [a[0], c, a[1], b]  # the turns are the location's, FIFO within it


def test_priority_still_comes_before_the_turns(client_for, alice, charlie):
    demo, north = client_for(alice), client_for(charlie)
    backlog = [submit(demo, f"demo question {i}", "low") for i in range(3)]
    north_normal = submit(north, "north normal", "normal")
    demo_high = submit(demo, "demo high", "high")
    assert drain() == [demo_high, north_normal, *backlog]


def test_every_entry_carries_its_tasks_location(client_for, alice, charlie):
    submit(client_for(alice), "from demo")
    submit(client_for(charlie), "from north")
    assert sorted(QueueEntry.objects.values_list("location_id", flat=True)) == sorted(
        [alice.locations.get().pk, charlie.locations.get().pk]
    )


def test_with_no_turn_the_queue_is_first_come_first_served_across_locations(client_for, alice, charlie, settings):
    settings.MEDAI_QUEUE_FAIR_TURN_SECONDS = 0
    demo, north = client_for(alice), client_for(charlie)
    backlog = [submit(demo, f"demo question {i}", "low") for i in range(3)]
    theirs = submit(north, "north question", "low")
    assert drain() == [*backlog, theirs]
