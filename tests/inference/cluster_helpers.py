"""Real ``manage.py qcluster`` processes for the queue tests: each test gets a database of its own
(a SQLite file, or a fresh PostgreSQL database when the suite runs on PostgreSQL) prepared by
``manage.py migrate``, read directly by ``Store`` (no Django in the test process points at it)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

SETUP = """
import json, sys
from apps.accounts.models import Location, Organization, User
from apps.accounts.services import authenticate_header, issue_tokens
from apps.inference import queue
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint
org = Organization.objects.create(name="Org")
loc = Location.objects.create(organization=org, code="demo", name="Demo")
user = User.objects.create_user("alice", password="correct-horse-battery", role="clinician", organization=org)
user.locations.add(loc)
ep = ModelEndpoint.objects.create(name="stub-a", base_url=sys.argv[1], context_length=2048)
AgentRouteEntry.objects.create(route=AgentRoute.objects.get_or_create(agent_type="Chat")[0], endpoint=ep)
principal = authenticate_header("Bearer " + issue_tokens(user, loc).access_token)
ids = [str(queue.submit_task(principal, {"agent_type": "Chat", "max_tokens": 4,
        "messages": [{"role": "user", "content": f"question {i}"}]}).task.id) for i in range(int(sys.argv[2]))]
print("IDS=" + json.dumps(ids))
"""


class Store:
    """The clusters' database, read directly (no Django in this process points at it)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.url.startswith("sqlite"):
            with sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=20) as conn:
                return list(conn.execute(sql))
        import psycopg

        with psycopg.connect(self.url) as conn:
            return list(conn.execute(sql))

    def tasks(self) -> dict[str, tuple[str, int]]:
        return {
            str(uuid.UUID(str(i))): (s, a)
            for i, s, a in self.rows("SELECT id, status, attempts FROM inference_inferencetask")
        }


@pytest.fixture
def cluster_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "MEDAI_VAR_DIR": str(tmp_path),
        "MEDAI_Q_WORKERS": "1",
        "MEDAI_QUEUE_LEASE_SECONDS": "3",
        "MEDAI_QUEUE_POLL": "0.5",
        "MEDAI_BACKEND_RETRIES": "0",
        "MEDAI_CACHE_PREFIX": f"q3-{uuid.uuid4().hex[:8]}",
        "LOG_LEVEL": "WARNING",
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    pg = env.get("DATABASE_URL", "")
    dbname = ""
    if pg.startswith("postgres"):
        import psycopg

        dbname = f"medai_q3_{uuid.uuid4().hex[:10]}"
        admin = pg.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        env["DATABASE_URL"] = pg.rsplit("/", 1)[0] + "/" + dbname
    else:
        env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'cluster.sqlite3'}"
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=180)
    yield env
    if dbname:
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def setup_tasks(env: dict[str, str], stub_url: str, n: int, then: str = "") -> list[str]:
    """Register the stub model, submit ``n`` tasks as alice, run ``then`` (Python, with ``ids``)."""
    script = SETUP.replace("sys.argv[1]", repr(stub_url)).replace("int(sys.argv[2])", str(n))
    script = script.replace('print("IDS="', then + '\nprint("IDS="') if then else script
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.split("IDS=", 1)[1].strip().splitlines()[0])


def qcluster(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def wait_for(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
