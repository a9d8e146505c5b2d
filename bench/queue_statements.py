"""SQL statements per queue step, counted (not timed): a single submit, its delivery, its run, its
acknowledgement; then a batch of 100 run by a worker, per task.

What ``queue_throughput.py``'s single and batched series cost the database, step by step, in one
process against the zero-latency stub (``bench/stub_backend.py``), on a throw-away SQLite file
or PostgreSQL database. Every statement sent through Django's cursors is counted, in every
thread (the submit's group commit and the worker's database steps run on threads of their own):
what ``CaptureQueriesContext`` would list on each connection, savepoints included (SQLite's
``BEGIN IMMEDIATE`` and PostgreSQL's implicit ``BEGIN`` are not sent through a cursor)::

    .venv/bin/python bench/queue_statements.py                     # SQLite
    .venv/bin/python bench/queue_statements.py --pg-db medai_queue_bench --redis redis://127.0.0.1:6379/3
    .venv/bin/python bench/queue_statements.py --sql               # and each statement, shortened
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.tenant import environment, tenant  # noqa: E402

_seen: list[str] = []
_lock = threading.Lock()


def _count_statements() -> None:
    """Count every statement sent through a Django cursor wrapper, in any thread."""
    from django.db.backends import utils

    execute, executemany = utils.CursorWrapper.execute, utils.CursorWrapper.executemany

    def counted_execute(self: Any, sql: str, params: Any = None) -> Any:
        with _lock:
            _seen.append(sql)
        return execute(self, sql, params)

    def counted_executemany(self: Any, sql: str, param_list: Any) -> Any:
        with _lock:
            _seen.append("[executemany] " + sql)
        return executemany(self, sql, param_list)

    utils.CursorWrapper.execute = counted_execute  # type: ignore[method-assign]
    utils.CursorWrapper.executemany = counted_executemany  # type: ignore[method-assign]


class Step:
    def __init__(self, name: str, results: dict[str, list[str]]) -> None:
        self.name, self.results = name, results

    def __enter__(self) -> Step:
        with _lock:
            _seen.clear()
        return self

    def __exit__(self, *exc: Any) -> None:
        with _lock:
            self.results[self.name] = list(_seen)


def _short(sql: str) -> str:
    sql = re.sub(r'"[a-z_]+"\."([a-z_]+)"', r"\1", sql)
    sql = re.sub(r"\s+", " ", sql)
    return sql[:150]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server URL")
    parser.add_argument("--pg-db", help="count on this PostgreSQL database (created and dropped); default SQLite")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/5", help="flushed at the start")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--sql", action="store_true", help="print each statement, shortened")
    args = parser.parse_args()

    import redis

    tmp = Path(tempfile.mkdtemp(prefix="medai-qstmts-"))
    redis.from_url(args.redis).flushdb()
    if args.pg_db:
        import psycopg

        with psycopg.connect(args.pg + "/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{args.pg_db}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.pg_db}"')
        database = f"{args.pg}/{args.pg_db}"
    else:
        database = f"sqlite:///{tmp / 'medai.sqlite3'}"
    environment(
        tmp / "var",
        "qstmts",
        database,
        args.redis,
        MEDAI_BACKEND_RETRIES="0",
        MEDAI_RATE_LIMIT_KEY_BURST="0",
        MEDAI_RATE_LIMIT_USER_BURST="0",
        MEDAI_RATE_LIMIT_IP_BURST="0",
        MEDAI_QUEUE_DRAIN_SECONDS="30",
    )
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from apps.accounts.services import authenticate_header
    from apps.inference import broker, queue
    from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint
    from apps.inference.queue.commit import submit_task_async
    from tests.support.servers import start_stub

    key = tenant().api_key
    stub, stub_url = start_stub("ok")
    endpoint = ModelEndpoint.objects.create(name="stub", base_url=stub_url, context_length=2048)
    route, _ = AgentRoute.objects.get_or_create(agent_type="Chat")
    AgentRouteEntry.objects.create(route=route, endpoint=endpoint)
    principal = authenticate_header(f"Bearer {key}")
    the_broker = broker.PriorityBroker(list_key=queue.list_key())

    def ask(text: str) -> dict[str, Any]:
        return {"agent_type": "Chat", "messages": [{"role": "user", "content": text}]}

    def deliver_run_ack(results: dict[str, list[str]] | None, prefix: str = "") -> str:
        steps = results if results is not None else {}
        with Step(f"{prefix}deliver", steps):
            [(ack, package)] = the_broker._claim()
        task_id = queue_entry_task(ack)
        with Step(f"{prefix}run_task", steps):
            state = queue.run_task(task_id)
        with Step(f"{prefix}acknowledge", steps):
            the_broker.acknowledge(ack)
        return state

    def queue_entry_task(ack: int) -> str:
        from apps.inference.models import QueueEntry

        return str(QueueEntry.objects.filter(pk=ack).values_list("task_id", flat=True).get())

    _count_statements()
    results: dict[str, list[str]] = {}
    try:
        # warm-up: caches (credentials, the route snapshot), the audit chain's head row, the loop
        for i in range(3):
            asyncio.run(submit_task_async(principal, ask(f"warm {i}")))
            deliver_run_ack(None)
        with Step("single submit", results):
            submitted = asyncio.run(submit_task_async(principal, ask("one")))
        assert submitted.created
        state = deliver_run_ack(results)
        assert state == "completed", state
        # a batch: submitted at once, then drained by one worker's run (collation, refills)
        batch_steps: dict[str, list[str]] = {}
        with Step("batch submit", batch_steps):
            queue.submit_batch(principal, [ask(f"b{i}") for i in range(args.batch)])
        with Step("batch runs", batch_steps):
            runs = 0
            while True:
                delivered = the_broker._claim()
                if not delivered:
                    break
                [(ack, _)] = delivered
                queue.run_task(queue_entry_task(ack))
                the_broker.acknowledge(ack)
                runs += 1
    finally:
        stub.stop()
        vendor = connection.vendor
        connection.close()
        if args.pg_db:
            import psycopg

            with psycopg.connect(args.pg + "/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{args.pg_db}" WITH (FORCE)')
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"== {vendor}: statements per step (savepoints included)")
    for name, stmts in results.items():
        print(f"  {name:<16} {len(stmts):>3}")
        if args.sql:
            for sql in stmts:
                print(f"      {_short(sql)}")
    total = sum(len(v) for v in results.values())
    print(f"  {'one task, all':<16} {total:>3}")
    n = args.batch
    print(f"== {vendor}: a batch of {n} ({runs} deliveries)")
    print(
        f"  batch submit     {len(batch_steps['batch submit']):>3}  ({len(batch_steps['batch submit']) / n:.2f} a task)"
    )
    print(f"  runs + acks      {len(batch_steps['batch runs']):>3}  ({len(batch_steps['batch runs']) / n:.2f} a task)")
    if args.sql:
        for sql, count in Counter(_short(s) for s in batch_steps["batch runs"]).most_common():
            print(f"      {count:>4}  {sql}")


if __name__ == "__main__":
    main()
