"""The async queue's speed: broker dequeue cost by depth, a CRITICAL task behind 10,000 LOW ones,
idle pickup and end-to-end tasks/s through real ``qcluster`` processes on the zero-latency stub.

End to end, tasks are submitted in this process through the queue services the API views call
(``queue.submit_batch``, ``--batch`` tasks a call, as ``POST /v1/async/submit-batch``; and
``queue.submit_task`` one by one), without HTTP; tasks/s is N / (first submit → last completion).

Runs in an isolated environment (a temporary ``MEDAI_VAR_DIR``: SQLite file and embedded Redis
unless ``DATABASE_URL``/``REDIS_URL`` are set; on PostgreSQL a fresh database is created and
dropped). Figures only, no pass/fail::

    .venv/bin/python bench/queue_throughput.py                    # SQLite + embedded Redis
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/medai REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/queue_throughput.py --tasks 1000
    .venv/bin/python bench/queue_throughput.py --tasks 5000 --batch 100   # defaults: 300 single, 40 critical
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _env(tmp: Path) -> tuple[dict[str, str], str]:
    os.environ["MEDAI_VAR_DIR"] = str(tmp)
    os.environ.setdefault("MEDAI_ENV", "test")  # a throwaway var dir: its keys are generated there
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["MEDAI_CACHE_PREFIX"] = f"qbench-{uuid.uuid4().hex[:6]}"
    dbname = ""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        import psycopg

        dbname = f"medai_qbench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        os.environ["DATABASE_URL"] = url.rsplit("/", 1)[0] + "/" + dbname
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{tmp / 'bench.sqlite3'}"
    return dict(os.environ), dbname


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clusters", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100, help="tasks per submit_batch call")
    parser.add_argument("--single-tasks", type=int, default=300, help="also time this many single submits (0: skip)")
    parser.add_argument("--idle-samples", type=int, default=30)
    parser.add_argument("--critical-samples", type=int, default=40, help="CRITICAL behind 10,000 LOW, end to end")
    parser.add_argument("--profile-submit", action="store_true", help="cProfile the submit loop (top 15 by cumtime)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medai-qbench-"))
    env, dbname = _env(tmp)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    env["REDIS_URL"] = os.environ["REDIS_URL"]  # the embedded one this process started, for the clusters
    from apps.accounts.models import Location, Organization, User
    from apps.accounts.services import issue_tokens
    from apps.inference import broker, queue
    from apps.inference.models import AgentRoute, AgentRouteEntry, InferenceTask, ModelEndpoint, QueueEntry
    from tests.support.servers import start_stub

    out: dict[str, object] = {"database": connection.vendor}
    key = queue.list_key()
    b = broker.PriorityBroker(list_key=key)

    def fill(n: int, priority: int = 0) -> None:
        now = timezone.now()
        QueueEntry.objects.bulk_create(
            [
                QueueEntry(
                    key=key,
                    priority=priority,
                    rank=broker.rank_for(priority, now),
                    enqueued_at=now,
                    locked_until=now,
                    payload="x",
                )
                for _ in range(n)
            ],
            batch_size=2000,
        )

    # 1. dequeue cost (claim + ack of the head) at 100 vs 10,000 queued
    for depth in (100, 10_000):
        QueueEntry.objects.all().delete()
        fill(depth + 300)
        times = []
        for _ in range(300):
            t = time.perf_counter()
            [(ack, _)] = b._claim()
            b.acknowledge(ack)
            times.append((time.perf_counter() - t) * 1000)
        out[f"dequeue_ms_median_at_{depth}"] = round(statistics.median(times), 3)
    out["dequeue_ratio_10000_vs_100"] = round(out["dequeue_ms_median_at_10000"] / out["dequeue_ms_median_at_100"], 3)  # type: ignore[operator]

    # 2. a CRITICAL entry behind 10,000 LOW: put → the next claim returns it
    QueueEntry.objects.all().delete()
    fill(10_000)
    lat = []
    for _ in range(100):
        t = time.perf_counter()
        from django.db import transaction

        with transaction.atomic():
            broker.put(key, "critical", priority=3)
        [(ack, payload)] = b._claim()
        lat.append((time.perf_counter() - t) * 1000)
        assert payload == "critical"
        b.acknowledge(ack)
    out["critical_behind_10000_low_ms_p50"] = round(pct(lat, 50), 3)
    out["critical_behind_10000_low_ms_p95"] = round(pct(lat, 95), 3)
    QueueEntry.objects.all().delete()

    # 3. end to end through real clusters on the zero-latency stub
    stub, url = start_stub("ok")
    org = Organization.objects.create(name="Bench")
    loc = Location.objects.create(organization=org, code="bench", name="Bench")
    user = User.objects.create_user("bench", password="bench-password-1", role="integrator", organization=org)
    user.locations.add(loc)
    ep = ModelEndpoint.objects.create(name="stub", base_url=url, context_length=2048)
    AgentRouteEntry.objects.create(route=AgentRoute.objects.get_or_create(agent_type="Chat")[0], endpoint=ep)
    other = ModelEndpoint.objects.create(name="stub-other", base_url=url, context_length=2048)
    AgentRouteEntry.objects.create(route=AgentRoute.objects.get_or_create(agent_type="Urgent")[0], endpoint=other)
    header = "Bearer " + issue_tokens(user, loc).access_token
    queue_max = max(10 * args.tasks, 40_000)
    env.update(
        MEDAI_Q_WORKERS=str(args.workers),
        MEDAI_QUEUE_MAX=str(queue_max),
        MEDAI_BACKEND_RETRIES="0",
        MEDAI_RESULT_TTL="3600",
    )
    clusters = [
        subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=(tmp / f"cluster{i}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        for i in range(args.clusters)
    ]
    from django.conf import settings

    settings.MEDAI_QUEUE_MAX = queue_max

    def ask(text: str, priority: str = "normal", agent: str = "Chat") -> dict[str, object]:
        return {"agent_type": agent, "priority": priority, "messages": [{"role": "user", "content": text}]}

    def submit_many(n: int, prefix: str, priority: str = "normal") -> list:
        """n tasks through queue.submit_batch (the service behind POST /v1/async/submit-batch), args.batch a call."""
        ids: list = []
        for start in range(0, n, args.batch):
            _, tasks = queue.submit_batch(
                header, [ask(f"{prefix}{i}", priority) for i in range(start, min(n, start + args.batch))]
            )
            ids += [t.id for t in tasks]
        return ids

    def signal_clusters(sig: int) -> None:
        for proc in clusters:
            os.killpg(proc.pid, sig)

    try:

        def wait_done(ids: list, timeout: float = 600) -> None:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                # finished; "expired" too: a long run outlives the first results' retention
                if InferenceTask.objects.filter(id__in=ids, status__in=("completed", "expired")).count() == len(ids):
                    return
                time.sleep(0.005)
            raise SystemExit("timed out")

        # warm-up (cluster start, connections)
        warm = [queue.submit_task(header, ask(f"w{i}")).task.id for i in range(10)]
        wait_done(warm, 120)
        # idle pickup: one task at a time into an idle cluster; from the submit's commit (the task
        # cannot be seen before it) to started_at, and from the start of the submit (queued_at,
        # which includes the submit's own writes and commit) to started_at
        pickups, from_submit = [], []
        for i in range(args.idle_samples):
            time.sleep(0.3)
            task = queue.submit_task(header, ask(f"idle{i}")).task
            committed = time.time()  # submit_task returns after its commit; same clock as timezone.now()
            wait_done([task.id], 30)
            t = InferenceTask.objects.get(id=task.id)
            pickups.append((t.started_at.timestamp() - committed) * 1000)
            from_submit.append((t.started_at - t.queued_at).total_seconds() * 1000)
        out["idle_pickup_ms_median"] = round(statistics.median(pickups), 1)
        out["idle_pickup_ms_p95"] = round(pct(pickups, 95), 1)
        out["idle_submit_to_start_ms_median"] = round(statistics.median(from_submit), 1)
        # throughput: submit N through submit-batch, time until all completed (submit → completed)
        if args.profile_submit:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
        t0 = time.perf_counter()
        ids = submit_many(args.tasks, "t")
        submitted = time.perf_counter() - t0
        if args.profile_submit:
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
        wait_done(ids)
        total = time.perf_counter() - t0
        out.update(
            tasks=args.tasks,
            batch=args.batch,
            workers=args.workers,
            clusters=args.clusters,
            submit_per_s=round(args.tasks / submitted, 1),
            end_to_end_tasks_per_s=round(args.tasks / total, 1),
        )
        # the same with one POST /v1/async/submit per task (queue.submit_task)
        if args.single_tasks:
            t0 = time.perf_counter()
            ids = [queue.submit_task(header, ask(f"s{i}")).task.id for i in range(args.single_tasks)]
            submitted = time.perf_counter() - t0
            wait_done(ids)
            total = time.perf_counter() - t0
            out.update(
                single_tasks=args.single_tasks,
                single_submit_per_s=round(args.single_tasks / submitted, 1),
                single_end_to_end_tasks_per_s=round(args.single_tasks / total, 1),
            )
        # a CRITICAL task submitted behind 10,000 queued LOW ones (clusters paused while the LOW ones
        # are written, then resumed): submit (commit) → started_at, for the same model as the LOW
        # tasks and for another one (a worker draining the LOW model must stop for it)
        if args.critical_samples:
            signal_clusters(signal.SIGSTOP)
            try:
                low = submit_many(10_000, "low", "low")
            finally:
                signal_clusters(signal.SIGCONT)
            lat: dict[str, list[float]] = {"Chat": [], "Urgent": []}
            depths = []
            for i in range(args.critical_samples):
                time.sleep(0.05)
                agent = "Chat" if i % 2 else "Urgent"
                depths.append(InferenceTask.objects.filter(status="queued", priority=0).count())
                task = queue.submit_task(header, ask(f"critical{i}", "critical", agent)).task
                end = time.monotonic() + 30
                while time.monotonic() < end:
                    t = InferenceTask.objects.filter(id=task.id).only("started_at", "queued_at").first()
                    if t.started_at:
                        lat[agent].append((t.started_at - t.queued_at).total_seconds() * 1000)
                        break
                    time.sleep(0.002)
            for agent, name in (("Chat", "same_model"), ("Urgent", "other_model")):
                out[f"critical_e2e_{name}_ms_p50"] = round(pct(lat[agent], 50), 1)
                out[f"critical_e2e_{name}_ms_p95"] = round(pct(lat[agent], 95), 1)
            out["critical_e2e_low_queued_min_max"] = [min(depths), max(depths)]
            wait_done(low)
    finally:
        for proc in clusters:
            stop_cluster(proc)
        stub.stop()
        drop_database(env, dbname)
    report("queue_throughput", out)


def stop_cluster(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a qcluster's process group (it drains its workers), SIGKILL if it takes too long."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def drop_database(env: dict[str, str], dbname: str) -> None:
    """Close this process's connection and drop the bench's own PostgreSQL database, if it made one."""
    from django.db import connection

    connection.close()
    if dbname:
        import psycopg

        with psycopg.connect(env["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def report(name: str, out: dict[str, object]) -> None:
    """Print the figures and keep them in bench/results/<name>_<database>.json."""
    print(json.dumps(out, indent=2))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"{name}_{out['database']}.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
