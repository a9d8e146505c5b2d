"""A quota is exact across processes: 4 client processes × 50 concurrent clients drive two real
uvicorn web processes sharing one Redis, at one location with a quota of N requests (and, at
another, of T tokens). No more than N requests and T tokens get through, and no fewer than
N − (requests in flight) are admitted; Redis's counters and the database's records agree.

The whole scenario runs once (a module fixture: processes are costly on two cores); each test
reads what it produced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.accounts.fleet import drive, web_processes
from tests.support.own_database import manage_shell, own_database, rows
from tests.support.servers import start_stub

N = 300  # requests per day at "demo"
T = 12_000  # tokens per day at "ward"
CLIENTS = 4 * 50

SETUP = """
from apps.accounts.governance import quotas
from apps.accounts.models import Location, Organization, User
from apps.accounts.services import issue_tokens
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint
org = Organization.objects.create(name="Org")
tokens = {}
for code, name in (("demo", "alice"), ("ward", "bob")):
    loc = Location.objects.create(organization=org, code=code, name=code)
    user = User.objects.create_user(name, password="correct-horse-battery", role="clinician", organization=org)
    user.locations.add(loc)
    tokens[code] = issue_tokens(user, loc).access_token
ep = ModelEndpoint.objects.create(name="stub-a", base_url=STUB_URL, context_length=2048)
AgentRouteEntry.objects.create(route=AgentRoute.objects.get_or_create(agent_type="Chat")[0], endpoint=ep)
quotas.set_quota(location="demo", period="day", requests=N)
quotas.set_quota(location="ward", period="day", tokens=T)
print("DEMO=" + tokens["demo"])
print("WARD=" + tokens["ward"])
print("PKS=" + ",".join(str(pk) for pk in Location.objects.order_by("code").values_list("pk", flat=True)))
"""


def _sum(results: list[dict[str, Any]], key: str) -> int:
    return sum(r[key] for r in results)


def _codes(results: list[dict[str, Any]]) -> dict[str, int]:
    codes: dict[str, int] = {}
    for r in results:
        for code, n in r["codes"].items():
            codes[code] = codes.get(code, 0) + n
    return codes


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("quota-exact")
    stub, stub_url = start_stub()
    env_extra = {
        # only the quotas under test: no bucket, no in-flight cap, one attempt per backend
        "MEDAI_RATE_LIMIT_USER_RATE": "0",
        "MEDAI_RATE_LIMIT_IP_RATE": "0",
        "MEDAI_INFLIGHT_PER_KEY": "0",
        "MEDAI_BACKEND_RETRIES": "0",
        "MEDAI_ADMISSION_QUEUE_MAX": "1000",
        "MEDAI_QUOTA_PROMPT_OVERHEAD": "0",
    }
    try:
        with own_database(tmp, **env_extra) as env:
            out = manage_shell(
                env, SETUP.replace("STUB_URL", repr(stub_url)).replace("=N)", f"={N})").replace("=T)", f"={T})")
            )
            values = dict(line.split("=", 1) for line in out.split() if "=" in line)
            demo_pk, ward_pk = values["PKS"].split(",")
            with web_processes(env, 2, tmp / "web.log") as urls:
                by_requests = drive(urls, "Bearer " + values["DEMO"], until_refused=3, max=200)
                by_tokens = drive(urls, "Bearer " + values["WARD"], until_refused=3, max=200, pause=0.05)
                counters = manage_shell(
                    env,
                    "from apps.accounts.governance import store\n"
                    f"print(store.usage('l:{demo_pk}')['day'], store.usage('l:{ward_pk}')['day'])",
                )
            recorded = {
                code: rows(
                    env,
                    "SELECT COUNT(*), COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM inference_inferencetask t "
                    f"JOIN accounts_location l ON l.id = t.location_id WHERE l.code = '{code}' AND t.status = 'completed'",
                )[0]
                for code in ("demo", "ward")
            }
        yield {"requests": by_requests, "tokens": by_tokens, "counters": counters, "recorded": recorded}
    finally:
        stub.stop()


def test_no_more_than_n_requests_get_through_and_no_fewer_than_n_minus_those_in_flight(run):
    admitted = _sum(run["requests"], "admitted")
    print(
        f"\nrequests quota N={N}: admitted {admitted} of {CLIENTS} concurrent clients; answers {_codes(run['requests'])}"
    )
    assert N - CLIENTS <= admitted <= N
    assert _codes(run["requests"]).get("quota_exceeded", 0) >= CLIENTS  # every client was refused in the end


def test_no_more_than_t_tokens_get_through(run):
    used = _sum(run["tokens"], "tokens")
    admitted = _sum(run["tokens"], "admitted")
    print(f"\ntokens quota T={T}: {used} tokens in {admitted} requests; answers {_codes(run['tokens'])}")
    assert used <= T
    # each request holds its prompt's size plus max_tokens until it is settled: with all 200 clients
    # in flight at most that much can be held back from a quota that is otherwise used up
    hold = len('[{"role":"user","content":"q199"}]') + 1
    assert used >= T - CLIENTS * hold


def test_the_counters_and_the_records_agree_with_what_the_clients_saw(run):
    demo_count, demo_tokens = run["recorded"]["demo"]
    ward_count, ward_tokens = run["recorded"]["ward"]
    assert demo_count == _sum(run["requests"], "admitted")
    assert (ward_count, ward_tokens) == (_sum(run["tokens"], "admitted"), _sum(run["tokens"], "tokens"))
    assert f"{{'requests': {demo_count}, 'tokens': {demo_tokens}}}" in run["counters"]
    assert f"{{'requests': {ward_count}, 'tokens': {ward_tokens}}}" in run["counters"]
