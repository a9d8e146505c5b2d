"""The real llama.cpp server fed through the async queue, against the same server called directly.

Starts ``llama-server`` on the bundled SmolLM2-135M-Instruct the way the tests do
(``tests/support/servers.py``: ``--parallel 4``, 2 threads), then:

1. direct: N chat completions (``max_tokens`` 48, temperature 0, the same N prompts every time)
   straight to the server's OpenAI API with an async httpx client at concurrency 1, 2, 4 and 8;
   req/s = N / wall time;
2. through the queue: the same N requests submitted with ``queue.submit_batch`` (the service behind
   ``POST /v1/async/submit-batch``, 100 a call) into a real ``manage.py qcluster`` (2 workers) on
   the durable broker; req/s = N / (first submit → last task finished);
3. ``--rounds`` interleaved rounds (3 by default) of: direct at the best concurrency, then the
   same requests through the queue (each series' prompts marked ``[<round>d]`` or ``[<round>q]``, so
   no prompt is served from the other's cache).

Reports the ratio of the medians, queue / direct at the best concurrency (target ≥ 0.95). Isolated
like bench/queue_throughput.py (temporary ``MEDAI_VAR_DIR``, SQLite and an embedded Redis unless ``DATABASE_URL``/``REDIS_URL``)::

    .venv/bin/python bench/queue_llama.py --requests 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.queue_throughput import _env, drop_database, report, stop_cluster  # noqa: E402


def prompts(n: int) -> list[str]:
    topics = ["anemia", "asthma", "hypertension", "diabetes", "migraine", "gout", "sepsis", "otitis"]
    return [f"In two sentences, what is {topics[i % len(topics)]}? (question {i})" for i in range(n)]


async def _direct(base_url: str, model: str, texts: list[str], concurrency: int, max_tokens: int) -> dict[str, float]:
    import httpx

    todo = list(enumerate(texts))
    tokens = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:

        async def worker() -> None:
            nonlocal tokens
            while todo:
                _, text = todo.pop(0)
                r = await client.post(
                    "/chat/completions",
                    json={
                        "model": model,
                        "max_tokens": max_tokens,
                        "temperature": 0,
                        "seed": 1,
                        "messages": [{"role": "user", "content": text}],
                    },
                )
                r.raise_for_status()
                tokens += r.json()["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "rps": round(len(texts) / elapsed, 3),
        "completion_tokens": tokens,
    }


class BusySlots:
    """Samples the server's ``/slots`` every 25 ms while in use: the mean number of slots
    processing shows how well a series keeps the server's continuous batching fed."""

    def __init__(self, base_url: str) -> None:
        import threading

        self.url = base_url.removesuffix("/v1") + "/slots"
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=2) as client:
            while not self._stop.wait(0.025):
                try:
                    self.samples.append(sum(1 for s in client.get(self.url).json() if s.get("is_processing")))
                except Exception:  # noqa: BLE001 - a missed sample
                    pass

    def __enter__(self) -> BusySlots:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float:
        return round(statistics.fmean(self.samples), 2) if self.samples else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved direct / queue rounds")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medai-qllama-"))
    env, dbname = _env(tmp)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    env["REDIS_URL"] = os.environ["REDIS_URL"]
    from apps.accounts.models import Location, Organization, User
    from apps.accounts.services import authenticate_header, issue_tokens
    from apps.gpu.llamacpp import BUNDLED_MODEL_ALIAS
    from apps.inference import queue
    from apps.inference.models import AgentRoute, AgentRouteEntry, InferenceTask, ModelEndpoint
    from tests.support.servers import start_llama_server

    llama, url = start_llama_server()
    texts = prompts(args.requests)
    out: dict[str, object] = {"database": connection.vendor, "requests": args.requests, "max_tokens": args.max_tokens}
    cluster = None
    try:
        asyncio.run(_direct(url, BUNDLED_MODEL_ALIAS, prompts(8), 4, args.max_tokens))  # warm-up
        direct = [asyncio.run(_direct(url, BUNDLED_MODEL_ALIAS, texts, c, args.max_tokens)) for c in args.concurrency]
        for d in direct:
            print(
                f"direct  c={d['concurrency']}: {d['rps']:.2f} req/s ({d['seconds']} s, {d['completion_tokens']} tokens)",
                flush=True,
            )
        best = max(direct, key=lambda d: d["rps"])

        org = Organization.objects.create(name="Bench")
        loc = Location.objects.create(organization=org, code="bench", name="Bench")
        user = User.objects.create_user("bench", password="bench-password-1", role="integrator", organization=org)
        user.locations.add(loc)
        ep = ModelEndpoint.objects.create(
            name="smollm2", base_url=url, served_model_id=BUNDLED_MODEL_ALIAS, context_length=2048
        )
        AgentRouteEntry.objects.create(route=AgentRoute.objects.get_or_create(agent_type="Chat")[0], endpoint=ep)
        principal = authenticate_header("Bearer " + issue_tokens(user, loc).access_token)
        env.update(MEDAI_Q_WORKERS=str(args.workers), MEDAI_BACKEND_RETRIES="0")
        cluster = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=(tmp / "cluster.log").open("ab"),
            stderr=subprocess.STDOUT,
        )

        def ask(text: str) -> dict[str, object]:
            return {
                "model": "smollm2",
                "max_tokens": args.max_tokens,
                "temperature": 0,
                "seed": 1,
                "messages": [{"role": "user", "content": text}],
            }

        def run_queue(batch: list[str]) -> tuple[float, list]:
            from django.db.models import Max
            from django.utils import timezone

            t0 = timezone.now()
            ids = []
            for start in range(0, len(batch), 100):
                ids += [t.id for t in queue.submit_batch(principal, [ask(x) for x in batch[start : start + 100]])[1]]
            end = time.monotonic() + 600
            while time.monotonic() < end:
                if InferenceTask.objects.filter(id__in=ids, status__in=("completed", "failed")).count() == len(ids):
                    break
                time.sleep(0.25)  # seldom: this process must not take CPU from the model server
            else:
                raise SystemExit("timed out")
            # first submit → last finished_at, from the rows (not from this loop's polling)
            last = InferenceTask.objects.filter(id__in=ids).aggregate(m=Max("finished_at"))["m"]
            elapsed = (last - t0).total_seconds()
            failed = InferenceTask.objects.filter(id__in=ids, status="failed").count()
            if failed:
                raise SystemExit(f"{failed} tasks failed: see {tmp / 'cluster.log'}")
            return elapsed, ids

        run_queue([f"warm-up {i}: {x}" for i, x in enumerate(prompts(8))])
        # Interleaved rounds (the machine is shared and the model server's speed drifts): direct at
        # the best concurrency, then the same requests through the queue; medians are compared.
        rounds = []
        for r in range(args.rounds):
            with BusySlots(url) as busy_d:
                d = asyncio.run(
                    _direct(
                        url, BUNDLED_MODEL_ALIAS, [f"[{r}d] {x}" for x in texts], best["concurrency"], args.max_tokens
                    )
                )
            with BusySlots(url) as busy_q:
                elapsed, ids = run_queue([f"[{r}q] {x}" for x in texts])
            tokens = sum(InferenceTask.objects.filter(id__in=ids).values_list("completion_tokens", flat=True))
            q = {
                "seconds": round(elapsed, 2),
                "rps": round(args.requests / elapsed, 3),
                "completion_tokens": tokens,
                "mean_busy_slots": busy_q.mean,
            }
            d["mean_busy_slots"] = busy_d.mean
            rounds.append({"direct": d, "queue": q})
            print(
                f"round {r}: direct c={d['concurrency']} {d['rps']:.2f} req/s (busy slots {busy_d.mean}), "
                f"queue {q['rps']:.2f} req/s (busy slots {busy_q.mean}) "
                f"({d['completion_tokens']} / {tokens} tokens)",
                flush=True,
            )
        direct_med = statistics.median(x["direct"]["rps"] for x in rounds)
        queue_med = statistics.median(x["queue"]["rps"] for x in rounds)
        out.update(
            direct=direct,
            rounds=rounds,
            best_direct_concurrency=best["concurrency"],
            direct_median_rps=direct_med,
            queue_median_rps=queue_med,
            ratio_queue_vs_best_direct=round(queue_med / direct_med, 3),
        )
    finally:
        if cluster is not None:
            stop_cluster(cluster)
        llama.stop()
        drop_database(env, dbname)
    report("queue_llama", out)


if __name__ == "__main__":
    main()
