"""Single submits that arrive together share one transaction (apps/inference/queue/commit.py), and
each keeps its own answer: its own task and audit event, de-duplication, the overload rule, and a
failure of its own that does not fail the others."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from apps.accounts.services import authenticate_header
from apps.audit.models import AuditEvent
from apps.audit.services import verify_chain
from apps.inference import queue
from apps.inference.errors import ApiError
from apps.inference.models import InferenceTask, QueueEntry
from apps.inference.pipeline.plan import plan_tasks
from apps.inference.queue.commit import Committer, committer
from apps.inference.queue.submit import forget_depth, job_for
from tests.conftest import register_model

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def model(transactional_db):
    register_model("stub", "http://127.0.0.1:9/v1")


def chat(text: str, priority: str = "normal") -> dict[str, Any]:
    return {"model": "stub", "priority": priority, "messages": [{"role": "user", "content": text}]}


def planned(principal: Any, item: dict[str, Any]) -> Any:
    [(plan, deadline_s)] = plan_tasks(principal, [item])
    return job_for(plan, deadline_s, item)


def together(jobs: list[Any]) -> tuple[list[Any], Committer]:
    """Hand the jobs to one loop's committer at once: they are all waiting when it starts writing."""

    async def run() -> tuple[list[Any], Committer]:
        outcomes = await asyncio.gather(*(committer().submit(job) for job in jobs), return_exceptions=True)
        return list(outcomes), committer()

    return asyncio.run(run())


def test_submits_that_arrive_together_share_one_transaction_and_keep_their_own_task(token_for, alice, bob):
    as_alice = authenticate_header(f"Bearer {token_for(alice)}")
    as_bob = authenticate_header(f"Bearer {token_for(bob)}")
    jobs = [planned(as_alice if i % 2 else as_bob, chat(f"question {i}")) for i in range(6)]
    outcomes, c = together(jobs)
    assert c.groups == 1
    assert all(isinstance(o, queue.Submitted) and o.created for o in outcomes)
    ids = [o.task.id for o in outcomes]
    assert len(set(ids)) == 6
    assert {t.id: t.user_id for t in InferenceTask.objects.filter(id__in=ids)} == {
        o.task.id: (alice.pk if i % 2 else bob.pk) for i, o in enumerate(outcomes)
    }
    assert QueueEntry.objects.filter(task_id__in=ids).count() == 6
    # each answer's place in its organization's queue, in the order the submits came
    assert [o.position for o in outcomes] == [1, 2, 3, 4, 5, 6]
    # one audit event per task, naming its own caller, in one intact chain
    events = AuditEvent.objects.filter(action="inference.submit").order_by("seq")
    assert [(e.object_id, e.actor_id) for e in events] == [(str(o.task.id), o.task.user_id) for o in outcomes]
    assert verify_chain().ok


def test_an_identical_submit_in_the_same_group_gets_the_same_task_but_a_colleague_gets_their_own(token_for, alice, bob):
    as_alice = authenticate_header(f"Bearer {token_for(alice)}")
    as_bob = authenticate_header(f"Bearer {token_for(bob)}")
    outcomes, _ = together(
        [planned(as_alice, chat("same")), planned(as_alice, chat("same")), planned(as_bob, chat("same"))]
    )
    first, again, colleague = outcomes
    assert again.task.id == first.task.id and (first.created, again.created) == (True, False)
    assert colleague.task.id != first.task.id and colleague.created
    assert InferenceTask.objects.count() == 2
    # every submit is an access: the dedup hit is audited too, naming the task it was given
    events = list(AuditEvent.objects.filter(action="inference.submit").order_by("seq"))
    assert [(e.object_id, e.actor_id) for e in events] == [
        (str(first.task.id), alice.pk),
        (str(first.task.id), alice.pk),
        (str(colleague.task.id), bob.pk),
    ]
    assert [bool(e.details.get("deduplicated")) for e in events] == [False, True, False]


def test_the_overload_rule_counts_each_submit_of_a_group(token_for, alice, settings):
    settings.MEDAI_QUEUE_MAX = 2
    forget_depth()
    principal = authenticate_header(f"Bearer {token_for(alice)}")
    items = [chat("low 1", "low"), chat("low 2", "low"), chat("low 3", "low"), chat("urgent", "critical")]
    outcomes, _ = together([planned(principal, item) for item in items])
    assert [isinstance(o, queue.Submitted) for o in outcomes] == [True, True, False, True]
    assert isinstance(outcomes[2], ApiError) and outcomes[2].status_code == 429
    assert outcomes[2].code == "queue_full"
    assert InferenceTask.objects.count() == 3
    forget_depth()


def test_a_submit_whose_write_fails_fails_alone(token_for, alice):
    principal = authenticate_header(f"Bearer {token_for(alice)}")
    jobs = [planned(principal, chat(f"fine {i}")) for i in range(3)]
    broken = planned(principal, chat("broken"))
    broken.plan.principal = dataclasses.replace(
        principal, location_pk=987654
    )  # no such location: the row cannot be written
    outcomes, _ = together([jobs[0], broken, jobs[1], jobs[2]])
    assert isinstance(outcomes[1], ApiError) and outcomes[1].status_code == 503
    good = [outcomes[0], outcomes[2], outcomes[3]]
    assert all(isinstance(o, queue.Submitted) and o.created for o in good)
    assert set(InferenceTask.objects.values_list("id", flat=True)) == {o.task.id for o in good}
    assert AuditEvent.objects.filter(action="inference.submit").count() == 3
    assert verify_chain().ok


def test_submits_planned_on_the_loop_all_land(token_for, alice):
    principal = authenticate_header(f"Bearer {token_for(alice)}")

    async def run() -> list[Any]:
        return await asyncio.gather(*(queue.submit_task_async(principal, chat(f"loop {i}")) for i in range(8)))

    outcomes = asyncio.run(run())
    assert len({o.task.id for o in outcomes}) == 8
    assert InferenceTask.objects.filter(status="queued").count() == 8
    assert sorted(o.position for o in outcomes) == list(range(1, 9))
    assert AuditEvent.objects.filter(action="inference.submit").count() == 8
