"""The async queue's speed as ratios to stock django-q2 measured in the same run.

For each database (SQLite, PostgreSQL) this starts, side by side and idle between series:

* medai: one web process (uvicorn, as in production), one ``manage.py qcluster`` (2 workers) on
  medai's priority broker, the zero-latency stub (``bench/stub_backend.py``) as the model;
* the baseline: stock django-q2 (``bench/djq_settings.py``: ``django_q`` alone on its own
  database, a no-op task, 2 workers) with its ORM broker and with its Redis broker, one cluster
  each.

Then it measures:

1. dequeue (the broker's ``dequeue`` + ``acknowledge`` of the head) at 100 and at 10,000 queued,
   alternating blocks, before any cluster runs;
2. idle pickup: one task at a time into the idle cluster, ``POST /v1/async/submit`` sent →
   the worker's ``started_at`` (and ``queued_at`` → ``started_at``);
3. rounds, series rotated each round: django-q2 Redis (``async_task`` one by one), django-q2 ORM,
   medai single submits (one ``POST /v1/async/submit`` per task, ``--clients`` integrators
   sending at once, keep-alive), medai batched (``POST /v1/async/submit-batch``, ``--batch`` a
   request, one client); tasks/s = N / (first submit → last ``finished_at``/``stopped``);
4. a CRITICAL task submitted over HTTP while ~10,000 LOW ones are queued (the cluster paused while
   they are written) and both workers drain them, for the LOW tasks' model and another one.

Redis is ``--redis`` (127.0.0.1:6379 db 5, flushed at the start); PostgreSQL ``--pg``, databases
``--pg-db`` (``medai_bench_q``) and ``<it>_djq`` (created and dropped). Each medai series also
reports the CPU time (user + system) of the web process and of the whole cluster per task. Figures only, no pass/fail::

    .venv/bin/python bench/queue_throughput.py                        # SQLite then PostgreSQL, ~5 min
    .venv/bin/python bench/queue_throughput.py --databases sqlite --tasks 300 --rounds 1
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.tenant import environment, tenant  # noqa: E402


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# --- stock django-q2: run inside a child process with bench.djq_settings ----------------------


def djq_run(n: int, group: str) -> None:
    """``async_task`` n no-op tasks one by one, wait for their results; prints the figures."""
    import django

    django.setup()
    from django.db.models import Max
    from django_q.models import Task
    from django_q.tasks import async_task

    t0 = time.time()
    for i in range(n):
        async_task("bench.djq_settings.noop", i, group=group)
    submitted = time.time()
    deadline = time.monotonic() + 600
    while Task.objects.filter(group=group, success=True).count() < n:
        if time.monotonic() > deadline:
            raise SystemExit("django-q2 timed out")
        time.sleep(0.05)
    last = Task.objects.filter(group=group).aggregate(last=Max("stopped"))["last"].timestamp()
    print(json.dumps({"tasks": n, "submit_per_s": n / (submitted - t0), "tasks_per_s": n / (last - t0)}))


def profile_start(where: str | None, label: str, groups: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """``--profile DIR``: py-spy (samples holding the GIL, collapsed stacks) of medai's web process and of its
    cluster with every child, for one series; stopped by ``profile_stop``."""
    if not where:
        return []
    Path(where).mkdir(parents=True, exist_ok=True)
    spies = []
    for g in ("web", "medai-qcluster"):
        out = Path(where) / f"{label}-{g}.txt"
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        argv = [spy, "record", "--gil", "--format", "raw", "-r", "250", "--subprocesses", "-p", str(groups[g])]
        spies.append(subprocess.Popen([*argv, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(1.0)  # py-spy attaches
    return spies


def profile_stop(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    for spy in spies:
        spy.wait(30)


# --- one database: everything above, in this process with medai's settings --------------------


class Procs:
    """Child processes in their own sessions, logs in the run's directory; stopped on close()."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def signal(self, name: str, sig: int) -> None:
        os.killpg(self.procs[name].pid, sig)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


class Client:
    """One keep-alive HTTP/1.1 connection to medai with the integrator's API key."""

    def __init__(self, port: int, key: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        try:
            self.conn.request("POST", path, raw, self.headers)
            response = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self.conn.close()  # the server closed an idle keep-alive connection: open another
            self.conn.request("POST", path, raw, self.headers)
            response = self.conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None


def ask(text: str, priority: str = "normal", agent: str = "Chat") -> dict[str, Any]:
    return {"agent_type": agent, "priority": priority, "messages": [{"role": "user", "content": text}]}


def _databases(kind: str, tmp: Path, pg: str, db: str) -> tuple[str, str]:
    if kind == "sqlite":
        return f"sqlite:///{tmp / 'medai.sqlite3'}", f"sqlite:///{tmp / 'djq.sqlite3'}"
    import psycopg

    with psycopg.connect(pg + "/postgres", autocommit=True) as conn:
        for name in (db, f"{db}_djq"):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    return f"{pg}/{db}", f"{pg}/{db}_djq"


def _drop_databases(kind: str, pg: str, db: str) -> None:
    if kind != "postgres":
        return
    import psycopg

    with psycopg.connect(pg + "/postgres", autocommit=True) as conn:
        for name in (db, f"{db}_djq"):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in the process group ``pgid`` (a child started
    in its own session: uvicorn, or qcluster with its sentinel, workers, pusher and monitor), from
    ``/proc/<pid>/stat``. What other work on the machine moves least: CPU per task says what a
    change bought where wall-clock rates are noise."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:  # field 5, pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def run_one(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    import redis

    tmp = Path(tempfile.mkdtemp(prefix=f"medai-qbench-{kind}-"))
    redis.from_url(args.redis).flushdb()
    medai_db, djq_db = _databases(kind, tmp, args.pg, args.pg_db)
    queue_max = 40_000
    environment(
        tmp / "var",
        "qbench",
        medai_db,
        args.redis,
        MEDAI_Q_WORKERS=str(args.workers),
        MEDAI_QUEUE_MAX=str(queue_max),
        MEDAI_BACKEND_RETRIES="0",
        MEDAI_RESULT_TTL="3600",
        # governance stays on (its script runs for every submit and result), its buckets off: the
        # bench sends far more than an integrator's default 50 requests/s
        MEDAI_RATE_LIMIT_KEY_BURST="0",
        MEDAI_RATE_LIMIT_USER_BURST="0",
        MEDAI_RATE_LIMIT_IP_BURST="0",
    )
    env = dict(os.environ)
    djq_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.djq_settings", "DJQ_DATABASE_URL": djq_db}
    djq_env.update(DJQ_REDIS_URL=args.redis, DJQ_WORKERS=str(args.workers))
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.db.models import Max
    from django.utils import timezone

    call_command("migrate", verbosity=0)
    subprocess.run([sys.executable, "-m", "django", "migrate", "-v0"], cwd=ROOT, env=djq_env, check=True)

    from apps.inference import broker
    from apps.inference.models import AgentRoute, AgentRouteEntry, InferenceTask, ModelEndpoint, QueueEntry
    from tests.support.servers import free_port, start_stub, wait_http

    try:
        from apps.inference.queue import list_key
    except ImportError:  # the queue package may name it elsewhere
        from apps.inference.queue.submit import list_key

    out: dict[str, Any] = {"database": connection.vendor, "tasks": args.tasks, "rounds": args.rounds}
    key = list_key()
    b = broker.PriorityBroker(list_key=key)

    # 1. dequeue at 100 vs 10,000 queued, alternating blocks, no cluster running
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

    print(f"[{kind}] dequeue at 100 and 10,000 queued ...", flush=True)
    times: dict[int, list[float]] = {100: [], 10_000: []}
    for depth in (100, 10_000, 100, 10_000, 100, 10_000):
        QueueEntry.objects.all().delete()
        fill(depth + args.claims)
        gc.collect()  # the fill's own 10,000 objects: their collection is not the broker's dequeue
        for _ in range(args.claims):
            t = time.perf_counter()
            [(ack, _)] = b.dequeue() or [(None, None)]
            b.acknowledge(ack)
            times[depth].append((time.perf_counter() - t) * 1000)
    out["dequeue_ms_median_at_100"] = statistics.median(times[100])
    out["dequeue_ms_median_at_10000"] = statistics.median(times[10_000])
    out["dequeue_ratio_10000_vs_100"] = out["dequeue_ms_median_at_10000"] / out["dequeue_ms_median_at_100"]
    # a CRITICAL entry put behind 10,000 LOW ones → the next dequeue returns it (the broker alone)
    lat = []
    for _ in range(50):
        t = time.perf_counter()
        with transaction.atomic():
            broker.put(key, "critical", priority=3)
        [(ack, payload)] = b.dequeue()
        lat.append((time.perf_counter() - t) * 1000)
        assert payload == "critical", payload
        b.acknowledge(ack)
    out["broker_critical_behind_10000_ms_p95"] = pct(lat, 95)
    QueueEntry.objects.all().delete()

    # the services
    api_key = tenant().api_key
    stub, stub_url = start_stub("ok")
    for name, agent in (("stub", "Chat"), ("stub-other", "Urgent")):
        endpoint = ModelEndpoint.objects.create(name=name, base_url=stub_url, context_length=2048)
        route, _ = AgentRoute.objects.get_or_create(agent_type=agent)
        AgentRouteEntry.objects.create(route=route, endpoint=endpoint)
    port = free_port()
    procs = Procs(tmp)
    py = sys.executable
    web = [py, "-m", "uvicorn", "medai.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    web += ["--no-access-log", "--log-level", "warning", "--lifespan", "off", "--loop", "uvloop", "--http", "httptools"]
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, procs.start("web", web, env))
        procs.start("medai-qcluster", [py, "manage.py", "qcluster"], env)
        for name in ("redis", "orm"):
            procs.start(f"djq-{name}", [py, "-m", "django", "qcluster"], {**djq_env, "DJQ_BROKER": name})
        clients = [Client(port, api_key) for _ in range(max(args.clients, 1))]

        def submit(client: Client, item: dict[str, Any]) -> str:
            status, body = client.post("/v1/async/submit", item)
            if status != 202:
                raise SystemExit(f"submit answered {status}: {body}")
            return body["task_id"]

        def wait_done(ids: list[str], timeout: float = 600) -> float:
            """Wait until every task finished; the last one's finished_at (epoch seconds)."""
            end = time.monotonic() + timeout
            done = (InferenceTask.Status.COMPLETED, InferenceTask.Status.EXPIRED)
            while InferenceTask.objects.filter(id__in=ids, status__in=done).count() < len(ids):
                if time.monotonic() > end:
                    raise SystemExit("medai timed out")
                time.sleep(0.05)
            failed = InferenceTask.objects.filter(id__in=ids).exclude(status__in=done).count()
            assert not failed, failed
            return InferenceTask.objects.filter(id__in=ids).aggregate(last=Max("finished_at"))["last"].timestamp()

        def djq(broker_name: str, n: int) -> dict[str, Any]:
            group = f"{broker_name}-{uuid.uuid4().hex[:8]}"
            proc = subprocess.run(
                [py, __file__, "--djq-run", str(n), group],
                cwd=ROOT,
                env={**djq_env, "DJQ_BROKER": broker_name},
                check=True,
                capture_output=True,
                text=True,
            )
            return json.loads(proc.stdout.strip().splitlines()[-1])

        def medai_single(n: int, prefix: str) -> dict[str, Any]:
            ids: list[str] = []
            lock = threading.Lock()
            counter = iter(range(n))

            def one_client(client: Client) -> None:
                for i in counter:  # shared: each client takes the next task
                    task_id = submit(client, ask(f"{prefix}{i}"))
                    with lock:
                        ids.append(task_id)

            t0 = time.time()
            threads = [threading.Thread(target=one_client, args=(c,)) for c in clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            submitted = time.time()
            assert len(ids) == n, len(ids)
            last = wait_done(ids)
            return {"tasks": n, "submit_per_s": n / (submitted - t0), "tasks_per_s": n / (last - t0)}

        def submit_batches(n: int, prefix: str, priority: str = "normal") -> list[str]:
            ids: list[str] = []
            for start in range(0, n, args.batch):
                items = [ask(f"{prefix}{i}", priority) for i in range(start, min(n, start + args.batch))]
                status, body = clients[0].post("/v1/async/submit-batch", {"requests": items})
                if status != 202:
                    raise SystemExit(f"submit-batch answered {status}: {body}")
                ids += body["task_ids"]
            return ids

        def medai_batch(n: int, prefix: str) -> dict[str, Any]:
            t0 = time.time()
            ids = submit_batches(n, prefix)
            submitted = time.time()
            last = wait_done(ids)
            return {"tasks": n, "submit_per_s": n / (submitted - t0), "tasks_per_s": n / (last - t0)}

        print(f"[{kind}] warm-up ...", flush=True)
        wait_done([submit(clients[0], ask(f"w{i}")) for i in range(20)], 120)
        for name in ("redis", "orm"):
            djq(name, 20)

        print(f"[{kind}] idle pickup, {args.idle_samples} samples ...", flush=True)
        pickup, queued_to_start = [], []
        for i in range(args.idle_samples):
            time.sleep(0.3)
            sent = time.time()
            task_id = submit(clients[0], ask(f"idle{i}"))
            wait_done([task_id], 30)
            task = InferenceTask.objects.get(id=task_id)
            pickup.append((task.started_at.timestamp() - sent) * 1000)
            queued_to_start.append((task.started_at - task.queued_at).total_seconds() * 1000)
        out["idle_pickup_ms_median"] = statistics.median(pickup)
        out["idle_pickup_ms_p95"] = pct(pickup, 95)
        out["idle_queued_to_start_ms_p95"] = pct(queued_to_start, 95)

        series = {
            "djq_redis": lambda n, r: djq("redis", n),
            "djq_orm": lambda n, r: djq("orm", n),
            "medai_single": lambda n, r: medai_single(n, f"s{r}-"),
            "medai_batch": lambda n, r: medai_batch(n, f"b{r}-"),
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in series}
        names = list(series)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            print(f"[{kind}] round {r + 1}/{args.rounds}: {', '.join(order)}, {args.tasks} tasks each ...", flush=True)
            for name in order:
                groups = {g: procs.procs[g].pid for g in ("web", "medai-qcluster", "djq-redis", "djq-orm")}
                before = {g: cpu_seconds(pid) for g, pid in groups.items()}
                spies = profile_start(args.profile, f"{kind}-{name}-r{r}", groups) if name.startswith("medai") else []
                result = series[name](args.tasks, r)
                profile_stop(spies)
                # CPU per task of each process group over the series (the others idle meanwhile)
                result["cpu_ms_per_task"] = {
                    g: (cpu_seconds(pid) - before[g]) * 1000 / args.tasks for g, pid in groups.items()
                }
                runs[name].append(result)
        out["series"] = runs
        rate = {name: statistics.median(x["tasks_per_s"] for x in v) for name, v in runs.items()}
        out["tasks_per_s_median"] = rate

        def per_round(name: str) -> float:
            return statistics.median(
                m["tasks_per_s"] / d["tasks_per_s"] for m, d in zip(runs[name], runs["djq_redis"], strict=True)
            )

        out["single_over_djq_redis"] = per_round("medai_single")
        out["batch_over_djq_redis"] = per_round("medai_batch")
        out["djq_orm_over_djq_redis"] = per_round("djq_orm")
        out["cpu_ms_per_task_median"] = {
            name: {g: statistics.median(x["cpu_ms_per_task"][g] for x in v) for g in v[0]["cpu_ms_per_task"]}
            for name, v in runs.items()
        }

        if args.critical_samples:
            print(f"[{kind}] CRITICAL behind 10,000 LOW, {args.critical_samples} samples ...", flush=True)
            procs.signal("medai-qcluster", signal.SIGSTOP)
            try:
                submit_batches(10_000, "low", "low")
            finally:
                procs.signal("medai-qcluster", signal.SIGCONT)
            lat_by: dict[str, list[float]] = {"Chat": [], "Urgent": []}
            q2s: dict[str, list[float]] = {"Chat": [], "Urgent": []}
            depths = []
            for i in range(args.critical_samples):
                time.sleep(0.05)
                agent = "Chat" if i % 2 else "Urgent"
                depths.append(InferenceTask.objects.filter(status="queued", priority=0).count())
                sent = time.time()
                task_id = submit(clients[0], ask(f"critical{i}", "critical", agent))
                end = time.monotonic() + 30
                while time.monotonic() < end:
                    task = InferenceTask.objects.filter(id=task_id).only("started_at", "queued_at").first()
                    if task.started_at:
                        lat_by[agent].append((task.started_at.timestamp() - sent) * 1000)
                        q2s[agent].append((task.started_at - task.queued_at).total_seconds() * 1000)
                        break
                    time.sleep(0.002)
            for agent, name in (("Chat", "same_model"), ("Urgent", "other_model")):
                out[f"critical_{name}_ms_median"] = statistics.median(lat_by[agent])
                out[f"critical_{name}_ms_p95"] = pct(lat_by[agent], 95)
                out[f"critical_{name}_queued_to_start_ms_p95"] = pct(q2s[agent], 95)
                out[f"critical_{name}_over_idle_p95"] = out[f"critical_{name}_ms_p95"] / out["idle_pickup_ms_p95"]
            out["critical_low_queued_min_max"] = [min(depths), max(depths)]
            QueueEntry.objects.all().delete()  # nothing left to drain: the clusters stop at once
    finally:
        procs.close()
        stub.stop()
        connection.close()
        _drop_databases(kind, args.pg, args.pg_db)
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# --- the report -------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> None:
    print()
    for kind, r in results["databases"].items():
        rate = r["tasks_per_s_median"]
        print(f"== {kind} ({r['rounds']} rounds x {r['tasks']} tasks a series; medians of the rounds)")
        print(
            f"  django-q2 no-op, Redis broker   {rate['djq_redis']:>7.1f} tasks/s   (baseline)\n"
            f"  django-q2 no-op, ORM broker     {rate['djq_orm']:>7.1f} tasks/s   {r['djq_orm_over_djq_redis']:.2f}x\n"
            f"  medai single submits (HTTP)     {rate['medai_single']:>7.1f} tasks/s   "
            f"{r['single_over_djq_redis']:.2f}x  (target >= 1x)\n"
            f"  medai submit-batch (HTTP)       {rate['medai_batch']:>7.1f} tasks/s   "
            f"{r['batch_over_djq_redis']:.2f}x  (target >= 2x)"
        )
        cpu = r.get("cpu_ms_per_task_median")
        if cpu:
            print("  CPU ms per task (user+system)   web     medai-cluster  djq-redis-cluster  djq-orm-cluster")
            for name in ("djq_redis", "djq_orm", "medai_single", "medai_batch"):
                c = cpu[name]
                print(
                    f"    {name:<28}{c['web']:>6.2f}  {c['medai-qcluster']:>10.2f}  {c['djq-redis']:>14.2f}"
                    f"  {c['djq-orm']:>14.2f}"
                )
        print(
            f"  dequeue at 10,000 / at 100: {r['dequeue_ms_median_at_10000']:.2f} / {r['dequeue_ms_median_at_100']:.2f} ms"
            f" = {r['dequeue_ratio_10000_vs_100']:.2f}x (target <= 1.2x); CRITICAL put behind 10,000 -> dequeued"
            f" p95 {r['broker_critical_behind_10000_ms_p95']:.2f} ms"
        )
        print(
            f"  idle pickup (submit sent -> started) median {r['idle_pickup_ms_median']:.1f}, p95"
            f" {r['idle_pickup_ms_p95']:.1f} ms (queued_at -> started p95 {r['idle_queued_to_start_ms_p95']:.1f})"
        )
        for name in ("same_model", "other_model"):
            if f"critical_{name}_ms_p95" in r:
                print(
                    f"  CRITICAL behind ~10,000 LOW, {name}: median {r[f'critical_{name}_ms_median']:.1f}, p95"
                    f" {r[f'critical_{name}_ms_p95']:.1f} ms = {r[f'critical_{name}_over_idle_p95']:.1f}x the idle"
                    f" p95 (target <= 10x; queued_at -> started p95 {r[f'critical_{name}_queued_to_start_ms_p95']:.1f})"
                )
        print()
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"queue_throughput-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"JSON: {path.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--tasks", type=int, default=500, help="tasks per series and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="workers of each cluster (medai and django-q2)")
    parser.add_argument("--clients", type=int, default=4, help="integrators sending single submits at once")
    parser.add_argument("--batch", type=int, default=100, help="tasks per POST /v1/async/submit-batch")
    parser.add_argument("--claims", type=int, default=150, help="dequeues per block (3 blocks per depth)")
    parser.add_argument("--idle-samples", type=int, default=20)
    parser.add_argument("--critical-samples", type=int, default=30)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/5")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL, no database")
    parser.add_argument("--pg-db", default="medai_bench_q", help="the run's PostgreSQL database (and <name>_djq)")
    parser.add_argument("--profile", help="py-spy each medai series (web and cluster) into this directory")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--djq-run", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.djq_run:
        return djq_run(int(args.djq_run[0]), args.djq_run[1])
    if args.one:
        Path(args.out).write_text(json.dumps(run_one(args.one, args)))
        return
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "commit": subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "databases": {},
    }
    for kind in args.databases.split(","):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:  # each database in a fresh process
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", kind, "--out", f.name], check=True)
            results["databases"][kind] = json.loads(Path(f.name).read_text())
    report(results)


if __name__ == "__main__":
    main()
