"""A worker process's task events reach a browser's socket on the web process, through Redis (the
channels-redis layer): real processes as the launcher runs them, uvicorn on ``medai.asgi`` and
``manage.py qcluster`` on a database of their own, a websocket client on ``/ws/tasks/``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.inference.cluster_helpers import stop
from tests.support.own_database import ROOT, manage_shell, own_database
from tests.support.servers import free_port, start_stub, wait_http

SETUP = """
from apps.accounts.models import Location, Organization, User
from apps.accounts.services import issue_tokens
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint
org = Organization.objects.create(name="Org")
loc = Location.objects.create(organization=org, code="demo", name="Demo")
user = User.objects.create_user("alice", password="correct-horse-battery", role="clinician", organization=org)
user.locations.add(loc)
ep = ModelEndpoint.objects.create(name="stub-a", base_url=STUB_URL, context_length=2048)
AgentRouteEntry.objects.create(route=AgentRoute.objects.get_or_create(agent_type="Chat")[0], endpoint=ep)
print("TOKEN=" + issue_tokens(user, loc).access_token)
"""


def test_a_workers_events_reach_a_socket_on_the_web_process(tmp_path: Path) -> None:
    stub, stub_url = start_stub()
    procs: list[subprocess.Popen] = []
    try:
        with own_database(tmp_path, MEDAI_Q_WORKERS="1", MEDAI_QUEUE_POLL="0.5", MEDAI_BACKEND_RETRIES="0") as env:
            token = manage_shell(env, SETUP.replace("STUB_URL", repr(stub_url))).split("TOKEN=", 1)[1].split()[0]
            port = free_port()
            log = (tmp_path / "processes.log").open("ab")
            argv = [sys.executable, "-m", "uvicorn", "medai.asgi:application", "--port", str(port)]
            procs.append(
                subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            )
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/healthz", 120, procs[0])
            with connect(f"ws://127.0.0.1:{port}/ws/tasks/", subprotocols=["bearer", token], open_timeout=30) as ws:
                assert json.loads(ws.recv(timeout=30))["type"] == "hello"
                body = {
                    "requests": [
                        {"agent_type": "Chat", "max_tokens": 4, "messages": [{"role": "user", "content": f"q{i}"}]}
                        for i in range(3)
                    ]
                }
                submitted = httpx.post(
                    base + "/v1/async/submit-batch", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
                )
                assert submitted.status_code == 202, submitted.text
                batch_id, task_ids = submitted.json()["batch_id"], submitted.json()["task_ids"]
                # the worker starts only now: every later event comes from its process
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "manage.py", "qcluster"],
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                seen: dict[str, list[str]] = {t: [] for t in task_ids}
                last_batch: dict = {}
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and not all(s[-1:] == ["completed"] for s in seen.values()):
                    frame = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
                    if frame["type"] == "task.update":
                        seen[frame["data"]["task_id"]].append(frame["data"]["status"])
                        assert frame["data"]["batch_id"] == batch_id
                        last_batch = frame["data"]["batch"]
            for proc in reversed(procs):  # before their database is dropped
                stop(proc)
        assert all(statuses == ["queued", "processing", "completed"] for statuses in seen.values()), seen
        assert (last_batch["completed"], last_batch["progress_percent"]) == (3, 100.0)
    finally:
        for proc in reversed(procs):
            stop(proc)
        stub.stop()
