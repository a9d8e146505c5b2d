"""Real ``manage.py qcluster`` processes on the priority broker: a worker SIGKILLed mid-task loses
nothing (the task is delivered again after its lease and completes, its result written once), and
two clusters sharing the database never run the same task to completion twice.

The clusters are separate processes, so they get a database of their own (``cluster_env``, in
tests/inference/cluster_helpers.py).
"""

from __future__ import annotations

import signal
import subprocess

import httpx

from tests.inference.cluster_helpers import Store, qcluster, setup_tasks, stop, wait_for
from tests.support.servers import set_stub_mode, start_stub


def test_a_task_whose_worker_was_killed_completes_after_its_lease(cluster_env, tmp_path):
    stub, url = start_stub("slow")
    clusters: list[subprocess.Popen] = []
    try:
        set_stub_mode(url, "slow", delay=3600)
        store = Store(cluster_env["DATABASE_URL"])
        [task_id] = setup_tasks(cluster_env, url, 1)
        clusters.append(qcluster(cluster_env, tmp_path / "cluster1.log"))
        wait_for(lambda: store.tasks()[task_id][0] == "processing", 60, "the first cluster to start the task")
        stop(clusters[0], signal.SIGKILL)  # mid-task: the backend call never returns
        set_stub_mode(url, "ok")
        clusters.append(qcluster(cluster_env, tmp_path / "cluster2.log"))
        wait_for(lambda: store.tasks()[task_id][0] == "completed", 90, "the task to be re-delivered and complete")
        assert store.tasks()[task_id] == ("completed", 2)
        # django-q2 acknowledges the delivery (deletes the entry) after the task returns, from its
        # monitor process: shortly after the row says completed, not with it
        wait_for(
            lambda: store.rows("SELECT count(*) FROM inference_queueentry") == [(0,)],
            30,
            "the re-delivered entry to be acknowledged",
        )
        result = store.rows("SELECT model_name, finished_at FROM inference_inferencetask")
        assert result[0][0] == "stub-a" and result[0][1] is not None
    finally:
        for proc in clusters:
            stop(proc, signal.SIGKILL)
        stub.stop()


def test_two_clusters_never_complete_the_same_task_twice(cluster_env, tmp_path):
    stub, url = start_stub("ok")
    clusters: list[subprocess.Popen] = []
    try:
        store = Store(cluster_env["DATABASE_URL"])
        task_ids = setup_tasks(cluster_env, url, 30)
        clusters = [qcluster(cluster_env, tmp_path / f"cluster{i}.log") for i in range(2)]
        wait_for(lambda: all(s == "completed" for s, _ in store.tasks().values()), 120, "all tasks to complete")
        tasks = store.tasks()
        assert sorted(tasks) == sorted(task_ids)
        assert {attempts for _, attempts in tasks.values()} == {1}
        stats = httpx.get(url.removesuffix("/v1") + "/_stats", timeout=5).json()
        assert stats["requests"] == 30  # each task reached the backend exactly once
    finally:
        for proc in clusters:
            stop(proc)
        stub.stop()
