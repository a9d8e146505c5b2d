"""Real ``manage.py qcluster`` processes on the priority broker: a worker SIGKILLed mid-task loses
nothing (the task is delivered again after its lease and completes, its result written once), and
two clusters sharing the database never run the same task to completion twice.

The clusters are separate processes, so they get a database of their own (a SQLite file, or a
fresh PostgreSQL database when the suite runs on PostgreSQL) prepared by ``manage.py migrate``.
"""

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

import httpx
import pytest

from tests.support.servers import set_stub_mode, start_stub

ROOT = Path(__file__).resolve().parents[2]

SETUP = """
import json, sys
from apps.accounts.models import Location, Organization, User
from apps.accounts.services import issue_tokens
from apps.inference import queue
from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint
org = Organization.objects.create(name="Org")
loc = Location.objects.create(organization=org, code="demo", name="Demo")
user = User.objects.create_user("alice", password="correct-horse-battery", role="clinician", organization=org)
user.locations.add(loc)
ep = ModelEndpoint.objects.create(name="stub-a", base_url=sys.argv[1], context_length=2048)
AgentRouteEntry.objects.create(route=AgentRoute.objects.get_or_create(agent_type="Chat")[0], endpoint=ep)
header = "Bearer " + issue_tokens(user, loc).access_token
ids = [str(queue.submit_task(header, {"agent_type": "Chat", "max_tokens": 4,
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
        return {str(uuid.UUID(str(i))): (s, a)
                for i, s, a in self.rows("SELECT id, status, attempts FROM inference_inferencetask")}


@pytest.fixture
def cluster_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {**os.environ, "MEDAI_VAR_DIR": str(tmp_path), "MEDAI_Q_WORKERS": "1", "MEDAI_QUEUE_LEASE_SECONDS": "3",
           "MEDAI_QUEUE_POLL": "0.5", "MEDAI_BACKEND_RETRIES": "0", "MEDAI_CACHE_PREFIX": f"q3-{uuid.uuid4().hex[:8]}",
           "LOG_LEVEL": "WARNING"}
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


def _setup(env: dict[str, str], stub_url: str, n: int) -> list[str]:
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", SETUP.replace("sys.argv[1]", repr(stub_url))
                          .replace("int(sys.argv[2])", str(n))], cwd=ROOT, env=env, check=True, timeout=120,
                         capture_output=True, text=True).stdout
    return json.loads(out.split("IDS=", 1)[1].strip().splitlines()[0])


def _qcluster(env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_task_whose_worker_was_killed_completes_after_its_lease(cluster_env, tmp_path):  # type: ignore[no-untyped-def]
    stub, url = start_stub("slow")
    clusters: list[subprocess.Popen] = []
    try:
        set_stub_mode(url, "slow", delay=3600)
        store = Store(cluster_env["DATABASE_URL"])
        [task_id] = _setup(cluster_env, url, 1)
        clusters.append(_qcluster(cluster_env, tmp_path / "cluster1.log"))
        _wait(lambda: store.tasks()[task_id][0] == "processing", 60, "the first cluster to start the task")
        _stop(clusters[0], signal.SIGKILL)  # mid-task: the backend call never returns
        set_stub_mode(url, "ok")
        clusters.append(_qcluster(cluster_env, tmp_path / "cluster2.log"))
        _wait(lambda: store.tasks()[task_id][0] == "completed", 90, "the task to be re-delivered and complete")
        assert store.tasks()[task_id] == ("completed", 2)
        # django-q2 acknowledges the delivery (deletes the entry) after the task returns, from its
        # monitor process: shortly after the row says completed, not with it
        _wait(lambda: store.rows("SELECT count(*) FROM inference_queueentry") == [(0,)], 30,
              "the re-delivered entry to be acknowledged")
        result = store.rows("SELECT model_name, finished_at FROM inference_inferencetask")
        assert result[0][0] == "stub-a" and result[0][1] is not None
    finally:
        for proc in clusters:
            _stop(proc, signal.SIGKILL)
        stub.stop()


def test_two_clusters_never_complete_the_same_task_twice(cluster_env, tmp_path):  # type: ignore[no-untyped-def]
    stub, url = start_stub("ok")
    clusters: list[subprocess.Popen] = []
    try:
        store = Store(cluster_env["DATABASE_URL"])
        task_ids = _setup(cluster_env, url, 30)
        clusters = [_qcluster(cluster_env, tmp_path / f"cluster{i}.log") for i in range(2)]
        _wait(lambda: all(s == "completed" for s, _ in store.tasks().values()), 120, "all tasks to complete")
        tasks = store.tasks()
        assert sorted(tasks) == sorted(task_ids)
        assert {attempts for _, attempts in tasks.values()} == {1}
        stats = httpx.get(url.removesuffix("/v1") + "/_stats", timeout=5).json()
        assert stats["requests"] == 30  # each task reached the backend exactly once
    finally:
        for proc in clusters:
            _stop(proc)
        stub.stop()
