"""No log line of a running medai holds PHI or a credential, and each is one JSON record: a uvicorn
web process (access log on), a ``manage.py qcluster`` worker and a ``manage.py monitor`` (health-
checking the backend) run as the launcher runs them, at LOG_LEVEL=DEBUG, their stdout and stderr
captured to files and their var dir in tmp; they are driven with planted
identifiers (a titled name, an MRN, a date of birth, a phone, an email, an SSN, a card number, a
canary word) through every path that could log a request: a failed login whose username is a
planted name, valid and invalid API keys, a JWT, a query string and a path carrying an MRN,
``X-Purpose-Of-Use``, sync chats (streamed and not), an async submit and its result, a backend
that fails echoing the prompt (sync and async), and 400s that echo a field. Then every file the
processes wrote (captured streams, var dir; not the database, tests/security/
test_no_phi_in_clear_in_the_database.py searches that) is searched for every marker.

The search is held to catching a leak: the same search finds a planted line written raw."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inference.cluster_helpers import stop, wait_for
from tests.support.own_database import ROOT, manage_shell, own_database
from tests.support.servers import free_port, set_stub_mode, start_stub, wait_http

CANARY = "Xylocanary7Q"
PROCESSES = ("web", "worker", "monitor")
PATIENT = "Mrs. Hermione Quillfeather"
USERNAME = "hermione.quillfeather"  # a user whose name is itself an identifier
WRONG_PASSWORD = "Wr0ng-Passw0rd-Zebra"
PROMPT = (
    f"{CANARY} note: {PATIENT}, MRN 99887766, DOB 03/14/1961, phone (617) 555-0143, "
    "email h.quillfeather@example.org, SSN 078-05-1120, card 4111 1111 1111 1111; chest pain"
)
# what must not appear anywhere: each planted identifier, in the forms a log line could carry it
MARKERS = [
    CANARY,
    "Quillfeather",
    "Hermione",
    "99887766",
    "03/14/1961",
    "555-0143",
    "h.quillfeather@example.org",
    "078-05-1120",
    "4111 1111 1111 1111",
    "4111111111111111",
    WRONG_PASSWORD,
    "Oncology-Quillfeather",  # the X-Purpose-Of-Use value
]

SETUP = """
import json
from apps.accounts.models import Location, Organization, User
from apps.accounts.services import create_api_key, issue_tokens
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint
org = Organization.objects.create(name="Org")
loc = Location.objects.create(organization=org, code="demo", name="Demo")
alice = User.objects.create_user("alice", password="correct-horse-battery", role="clinician", organization=org)
alice.locations.add(loc)
named = User.objects.create_user(USERNAME, password="correct-horse-battery", role="clinician", organization=org)
named.locations.add(loc)
ep = ModelEndpoint.objects.create(name="stub-a", base_url=STUB_URL, context_length=2048)
AgentRouteEntry.objects.create(route=AgentRoute.objects.get_or_create(agent_type="Chat")[0], endpoint=ep)
_, secret = create_api_key(alice, name="test key", location=loc)
print("SETUP=" + json.dumps({"secret": secret, "jwt": issue_tokens(alice, loc).access_token}))
"""


def find_markers(paths: list[Path], markers: list[str]) -> list[str]:
    """Every (file, marker) hit, case-insensitive, as ``file: marker: …context…``."""
    hits = []
    for path in paths:
        text = path.read_bytes().decode("utf-8", errors="replace")
        lower = text.lower()
        for marker in markers:
            at = lower.find(marker.lower())
            if at >= 0:
                hits.append(f"{path.name}: {marker!r}: …{text[max(0, at - 120) : at + 120]}…")
    return hits


def _written_files(tmp: Path) -> list[Path]:
    # the database (SQLite file and its journals) is another test's; everything else is searched
    return sorted(p for p in tmp.rglob("*") if p.is_file() and ".sqlite3" not in p.name)


def _chat(content: str = PROMPT, **extra: Any) -> dict[str, Any]:
    return {"model": "Chat", "max_tokens": 8, "messages": [{"role": "user", "content": content}], **extra}


def _drive(base: str, stub_url: str, secret: str, jwt: str) -> dict[str, Any]:
    """Every request path that could log a request's content; the status each was answered."""
    key = {"Authorization": f"Bearer {secret}", "X-Purpose-Of-Use": "Oncology-Quillfeather"}
    bearer = {"Authorization": f"Bearer {jwt}", "X-Purpose-Of-Use": "Oncology-Quillfeather"}
    prefix, _, key_secret = secret.rpartition("_")
    invalid_keys = [f"{prefix}_{key_secret[::-1]}", f"medai_zz{CANARY}_{key_secret}", f"sk-{key_secret}"]
    seen: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=30) as c:
        seen["login wrong password"] = c.post(
            "/v1/auth/login", json={"username": USERNAME, "password": WRONG_PASSWORD}
        ).status_code
        seen["login unknown named user"] = c.post(
            "/v1/auth/login", json={"username": f"{USERNAME}.{CANARY}", "password": WRONG_PASSWORD}
        ).status_code
        for n, bad in enumerate(invalid_keys):
            seen[f"invalid key {n}"] = c.post(
                "/v1/chat/completions", json=_chat(), headers={"Authorization": f"Bearer {bad}"}
            ).status_code
        seen["invalid jwt"] = c.get("/v1/auth/me", headers={"Authorization": f"Bearer {jwt[:-6]}AAAAAA"}).status_code
        seen["chat, key, MRN in query"] = c.post(
            "/v1/chat/completions?mrn=MRN%2099887766&patient=Quillfeather", json=_chat(), headers=key
        ).status_code
        seen["chat, jwt"] = c.post("/v1/chat/completions", json=_chat(), headers=bearer).status_code
        with c.stream("POST", "/v1/chat/completions", json=_chat(stream=True), headers=key) as streamed:
            seen["chat streamed"] = streamed.status_code
            assert "[DONE]" in streamed.read().decode()
        seen["tasks, MRN in query"] = c.get("/v1/async/tasks?q=99887766&search=Quillfeather", headers=key).status_code
        seen["path with MRN"] = c.get(f"/v1/patients/99887766/{CANARY}", headers=key).status_code
        seen["400 echoing role"] = c.post(
            "/v1/chat/completions",
            json={"model": "Chat", "messages": [{"role": f"{PATIENT} 99887766", "content": PROMPT}]},
            headers=key,
        ).status_code
        seen["400 echoing model"] = c.post(
            "/v1/chat/completions", json=_chat(model=f"{CANARY}-{PATIENT}"), headers=key
        ).status_code
        seen["400 echoing max_tokens"] = c.post(
            "/v1/chat/completions", json=_chat(max_tokens=f"{CANARY} 99887766"), headers=key
        ).status_code

        submitted = c.post("/v1/async/submit", json=_chat(), headers=key)
        seen["async submit"] = submitted.status_code
        done = submitted.json()["task_id"]
        wait_for(lambda: c.get(f"/v1/async/result/{done}", headers=key).status_code == 200, 30, "the async result")
        result = c.get(f"/v1/async/result/{done}", headers=key)
        seen["async result"] = result.status_code

        echo = {"error": {"message": f"cannot tokenize: {PROMPT}", "type": "invalid_request_error"}}
        set_stub_mode(stub_url, "error", status=400, body=echo)
        seen["backend 400 echo"] = c.post("/v1/chat/completions", json=_chat(max_tokens=9), headers=key).status_code
        failing_submit = c.post("/v1/async/submit", json=_chat(max_tokens=10), headers=key)
        assert failing_submit.status_code == 202, failing_submit.text
        failing = failing_submit.json()["task_id"]

        def failed() -> bool:
            status = c.get(f"/v1/async/status/{failing}", headers=key).json()
            seen["async failing status"] = status
            return status.get("status") == "failed"

        try:
            wait_for(failed, 30, "the async task to fail")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its last status: {seen.get('async failing status')}") from None
        seen["async failed result"] = c.get(f"/v1/async/result/{failing}", headers=key).status_code
        set_stub_mode(stub_url, "error", status=500, body={"error": {"message": f"crashed on {PROMPT}"}})
        seen["backend 500 echo"] = c.post("/v1/chat/completions", json=_chat(max_tokens=11), headers=bearer).status_code
        with c.stream("POST", "/v1/chat/completions", json=_chat(stream=True, max_tokens=12), headers=key) as streamed:
            streamed.read()
            seen["backend 500 echo streamed"] = streamed.status_code
        set_stub_mode(stub_url, "ok")
    return seen


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the scenario once against real processes; what they wrote and what they answered."""
    tmp = tmp_path_factory.mktemp("phi-logs")
    stub, stub_url = start_stub()
    try:
        with own_database(
            tmp, LOG_LEVEL="DEBUG", MEDAI_Q_WORKERS="1", MEDAI_QUEUE_POLL="0.5", MEDAI_BACKEND_RETRIES="0"
        ) as env:
            out = manage_shell(env, SETUP.replace("STUB_URL", repr(stub_url)).replace("USERNAME", repr(USERNAME)))
            creds = json.loads(out.split("SETUP=", 1)[1].splitlines()[0])
            port = free_port()
            argv = [sys.executable, "-m", "uvicorn", "medai.asgi:application", "--host", "127.0.0.1"]
            argv += ["--port", str(port), "--access-log", "--log-level", "debug"]
            streams = {name: (tmp / f"{name}.out").open("wb") for name in PROCESSES}
            errs = {name: (tmp / f"{name}.err").open("wb") for name in PROCESSES}
            web = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=streams["web"], stderr=errs["web"], start_new_session=True
            )
            worker = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"],
                cwd=ROOT,
                env=env,
                stdout=streams["worker"],
                stderr=errs["worker"],
                start_new_session=True,
            )
            # the monitor health-checks the stub backend every second and samples the (simulated) GPU
            monitor = subprocess.Popen(
                [sys.executable, "manage.py", "monitor"],
                cwd=ROOT,
                env={**env, "MEDAI_HEALTH_INTERVAL": "1"},
                stdout=streams["monitor"],
                stderr=errs["monitor"],
                start_new_session=True,
            )
            try:
                base = f"http://127.0.0.1:{port}"
                wait_http(base + "/healthz", 120, web)
                seen = _drive(base, stub_url, creds["secret"], creds["jwt"])
            finally:
                stop(web)
                stop(worker)
                stop(monitor)
                for f in [*streams.values(), *errs.values()]:
                    f.close()
            yield {"tmp": tmp, "seen": seen, **creds}
    finally:
        stub.stop()


def test_the_scenario_reached_every_path(logged: dict[str, Any]) -> None:
    seen = logged["seen"]
    assert seen["login wrong password"] in (400, 401) and seen["login unknown named user"] in (400, 401)
    assert all(seen[f"invalid key {n}"] == 401 for n in range(3)) and seen["invalid jwt"] == 401
    assert seen["chat, key, MRN in query"] == seen["chat, jwt"] == seen["chat streamed"] == 200
    assert seen["async submit"] == 202 and seen["async result"] == 200
    assert seen["400 echoing role"] == seen["400 echoing max_tokens"] == 400 and seen["400 echoing model"] >= 400
    assert seen["backend 400 echo"] == 400 and seen["backend 500 echo"] >= 500
    assert seen["async failed result"] >= 200
    # the processes did log at DEBUG: an empty search would prove nothing
    assert (logged["tmp"] / "web.err").stat().st_size + (logged["tmp"] / "web.out").stat().st_size > 0


def test_no_log_file_holds_a_planted_identifier_or_a_credential(logged: dict[str, Any]) -> None:
    files = _written_files(logged["tmp"])
    secret, jwt = logged["secret"], logged["jwt"]
    credentials = [secret, secret.rpartition("_")[2], jwt, jwt.split(".")[2]]
    hits = find_markers(files, MARKERS + credentials)
    searched = f"{len(files)} files, {sum(p.stat().st_size for p in files)} bytes: {[p.name for p in files]}"
    print(f"searched {searched}")
    assert {f"{name}.{kind}" for name in PROCESSES for kind in ("out", "err")} <= {p.name for p in files}
    assert not hits, f"PHI or a credential in a log ({searched}):\n" + "\n".join(hits)


def test_every_line_of_every_process_is_a_json_record(logged: dict[str, Any]) -> None:
    """At LOG_LEVEL=DEBUG, with uvicorn's access log on: each line one JSON record, the monitor's too."""
    for name in PROCESSES:
        lines = [
            line
            for kind in ("out", "err")
            for line in (logged["tmp"] / f"{name}.{kind}").read_text(errors="replace").splitlines()
            if line.strip()
        ]
        assert lines, f"{name} wrote nothing"
        for line in lines:
            record = json.loads(line)  # raises on a line that is not JSON
            assert {"ts", "level", "logger", "msg"} <= set(record), line


def test_the_search_finds_a_line_written_raw(tmp_path: Path, logged: dict[str, Any]) -> None:
    scratch = tmp_path / "scratch.log"
    for marker in [*MARKERS, logged["secret"], logged["jwt"]]:
        scratch.write_text(f'{{"level": "INFO", "msg": "handled {marker} ok"}}\n')
        assert find_markers([scratch], MARKERS + [logged["secret"], logged["jwt"]]), marker
