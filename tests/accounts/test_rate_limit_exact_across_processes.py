"""A rate limit is exact across processes: 4 client processes × 50 concurrent clients share one API
key whose bucket (rate R, burst B, set in admin as the key's own limits) is kept in one Redis for
two real uvicorn web processes. Over a run of W seconds no more than B + R·W requests get through,
and, as the clients never stop asking, no fewer than B + R·(W − 1)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.accounts.fleet import drive, web_processes
from tests.support.own_database import manage_shell, own_database
from tests.support.servers import start_stub

RATE, BURST, SECONDS = 10.0, 50, 4.0

SETUP = f"""
from apps.accounts.models import ApiKeyLimit, Location, Organization, User
from apps.accounts.services import create_api_key
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint
org = Organization.objects.create(name="Org")
loc = Location.objects.create(organization=org, code="demo", name="Demo")
user = User.objects.create_user("alice", password="correct-horse-battery", role="integrator", organization=org)
user.locations.add(loc)
key, secret = create_api_key(user, name="lab system", location=loc)
ApiKeyLimit.objects.create(api_key=key, rate={RATE}, burst={BURST})
ep = ModelEndpoint.objects.create(name="stub-a", base_url=STUB_URL, context_length=2048)
AgentRouteEntry.objects.create(route=AgentRoute.objects.get_or_create(agent_type="Chat")[0], endpoint=ep)
print("SECRET=" + secret)
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("rate-exact")
    stub, stub_url = start_stub()
    env_extra = {
        "MEDAI_RATE_LIMIT_USER_RATE": "0",  # only the key's bucket under test
        "MEDAI_RATE_LIMIT_IP_RATE": "0",
        "MEDAI_INFLIGHT_PER_KEY": "0",
        "MEDAI_ADMISSION_QUEUE_MAX": "1000",
    }
    try:
        with own_database(tmp, **env_extra) as env:
            out = manage_shell(env, SETUP.replace("STUB_URL", repr(stub_url)))
            secret = out.split("SECRET=", 1)[1].split()[0]
            with web_processes(env, 2, tmp / "web.log") as urls:
                yield drive(urls, "Bearer " + secret, seconds=SECONDS, pause=0.005)
    finally:
        stub.stop()


def test_no_more_than_the_burst_plus_the_refill_get_through_and_no_fewer(run):
    admitted = sum(r["admitted"] for r in run)
    window = max(r["answered_last"] for r in run) - min(r["sent_first"] for r in run)
    refused = sum(r["codes"].get("rate_limit_exceeded", 0) for r in run)
    print(
        f"\nkey bucket rate {RATE}/s burst {BURST}: admitted {admitted} in {window:.2f} s "
        f"(bound {BURST + RATE * window:.0f}), {refused} refused"
    )
    assert admitted <= BURST + RATE * window
    assert admitted >= BURST + RATE * (SECONDS - 1)
    assert refused > 0
    assert set(code for r in run for code in r["codes"]) <= {"rate_limit_exceeded"}
