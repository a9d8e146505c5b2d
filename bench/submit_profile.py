"""cProfile of medai's web process serving ``POST /v1/async/submit`` as ``queue_throughput.py``'s
single-submit series sends it (``--clients`` integrators at once, keep-alive, an API key), no
cluster running (the tasks stay queued: the submit path alone).

The web process is uvicorn as in production (``--loop uvloop --http httptools``, no access log)
with ``cProfile`` in every thread (the event loop and the pool that writes the submits), timed by
each thread's CPU clock (what the machine's other work moves least); it is
stopped with SIGINT after the submits, then the top functions are printed (own time and
cumulative). Also the web
process's CPU per submit, from ``/proc``. Figures only::

    .venv/bin/python bench/submit_profile.py --submits 2000
    .venv/bin/python bench/submit_profile.py --pg-db medai_queue_bench --redis redis://127.0.0.1:6379/3
    .venv/bin/python bench/submit_profile.py --no-profile      # CPU per submit without cProfile's cost
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.queue_throughput import Client, Procs, _databases, _drop_databases, ask, cpu_seconds  # noqa: E402
from bench.tenant import environment, tenant  # noqa: E402


def serve_profiled(out: str, port: int) -> None:
    """uvicorn (as production runs it) in this process, every thread profiled: the event loop and the
    thread pool that writes the submits (``cProfile`` alone sees only the thread that enabled it).
    The merged stats go to ``out`` when uvicorn stops (SIGINT)."""
    import cProfile

    import uvicorn

    profiles: list[cProfile.Profile] = []

    def boot(frame: object, event: str, arg: object) -> None:  # each new thread's first event
        sys.setprofile(None)
        profile = cProfile.Profile(time.thread_time)  # CPU time: what other work on the machine moves least
        profiles.append(profile)
        profile.enable()

    threading.setprofile(boot)
    main_profile = cProfile.Profile(time.thread_time)
    main_profile.enable()
    try:
        uvicorn.run(
            "medai.asgi:application",
            host="127.0.0.1",
            port=port,
            access_log=False,
            log_level="warning",
            lifespan="off",
            loop="uvloop",
            http="httptools",
        )
    finally:
        main_profile.disable()

        class Snapshot:
            def __init__(self, profile: cProfile.Profile) -> None:
                profile.snapshot_stats()
                self.stats = profile.stats

            def create_stats(self) -> None:
                pass

        merged = pstats.Stats(Snapshot(main_profile))
        for profile in profiles:
            merged.add(Snapshot(profile))
        merged.dump_stats(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submits", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--pg-db", help="PostgreSQL database (created and dropped); default SQLite")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/5", help="flushed at the start")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--no-profile", action="store_true", help="uvicorn without cProfile: CPU per submit only")
    parser.add_argument("--keep", help="copy the .prof file here")
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)  # OUT PORT: the profiled web process
    args = parser.parse_args()
    if args.serve:
        return serve_profiled(args.serve[0], int(args.serve[1]))

    import redis

    kind = "postgres" if args.pg_db else "sqlite"
    tmp = Path(tempfile.mkdtemp(prefix="medai-submitprof-"))
    redis.from_url(args.redis).flushdb()
    medai_db, _ = _databases(kind, tmp, args.pg, args.pg_db or "")
    environment(
        tmp / "var",
        "subprof",
        medai_db,
        args.redis,
        MEDAI_QUEUE_MAX="40000",
        MEDAI_RATE_LIMIT_KEY_BURST="0",
        MEDAI_RATE_LIMIT_USER_BURST="0",
        MEDAI_RATE_LIMIT_IP_BURST="0",
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint
    from tests.support.servers import free_port, wait_http

    key = tenant().api_key
    endpoint = ModelEndpoint.objects.create(name="stub", base_url="http://127.0.0.1:9/v1", context_length=2048)
    route, _ = AgentRoute.objects.get_or_create(agent_type="Chat")
    AgentRouteEntry.objects.create(route=route, endpoint=endpoint)
    connection.close()

    prof = tmp / "web.prof"
    port = free_port()
    py = sys.executable
    if args.no_profile:
        web = [py, "-m", "uvicorn", "medai.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
        web += ["--no-access-log", "--log-level", "warning", "--lifespan", "off", "--loop", "uvloop"]
        web += ["--http", "httptools"]
    else:
        web = [py, __file__, "--serve", str(prof), str(port)]
    procs = Procs(tmp)
    try:
        proc = procs.start("web", web, dict(os.environ))
        wait_http(f"http://127.0.0.1:{port}/healthz", 60, proc)
        clients = [Client(port, key) for _ in range(max(args.clients, 1))]

        def send(n: int, prefix: str) -> float:
            counter = iter(range(n))

            def one(client: Client) -> None:
                for i in counter:
                    status, body = client.post("/v1/async/submit", ask(f"{prefix}{i}"))
                    assert status == 202, (status, body)

            t0 = time.perf_counter()
            threads = [threading.Thread(target=one, args=(c,)) for c in clients]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - t0

        send(args.warmup, "warm")
        before = cpu_seconds(proc.pid)
        took = send(args.submits, "s")
        cpu = cpu_seconds(proc.pid) - before
        print(
            f"== {kind}: {args.submits} submits, {args.clients} clients: {args.submits / took:.1f} submits/s, "
            f"web CPU {cpu * 1000 / args.submits:.2f} ms a submit"
            + ("" if args.no_profile else " (under cProfile: read the proportions)")
        )
        procs.signal("web", signal.SIGINT)
        proc.wait(60)
    finally:
        procs.close()
        _drop_databases(kind, args.pg, args.pg_db or "")
    if not args.no_profile:
        if args.keep:
            shutil.copy(prof, args.keep)
        stats = pstats.Stats(str(prof))
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
