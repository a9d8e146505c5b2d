"""A file batch of the Batch API against the same requests sent straight to the queue (issue 12:
a 1,000-line batch completes at >= 95% of the throughput of the same requests sent to the queue).

One real ``manage.py qcluster`` (2 workers) on the durable broker, one backend (medai's stub by
default: the queue's and the feed's own costs show; ``--llama``: the bundled llama.cpp server),
then ``--rounds`` interleaved rounds (the order alternates each round, so drift hits both) of:

- queue: the N requests submitted with ``queue.submit_batch`` (the service behind
  ``POST /v1/async/submit-batch``, 100 a call, all at once); throughput = N / (first submit → last
  task finished);
- file batch: the same N requests as a JSONL file, ``files.upload`` and ``batches.create_batch``
  (the services behind ``POST /v1/files`` and ``POST /v1/batches``), fed to the queue in parts by
  the worker's hook (at most MEDAI_BATCH_MAX queued at once); throughput = N / (upload → the batch
  ``completed``, its output file written).

Each series' prompts are marked with its round and kind (no cache helps either). Reports the
ratio of the medians, file batch / queue. Isolated: a temporary ``MEDAI_VAR_DIR``, SQLite and an
embedded Redis (unless ``REDIS_URL`` is set); results in ``bench/results/batch_vs_queue.json``::

    .venv/bin/python bench/batch_vs_queue.py --requests 1000 --rounds 3
    .venv/bin/python bench/batch_vs_queue.py --llama --requests 200 --max-tokens 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--llama", action="store_true", help="the bundled llama.cpp server, not the stub")
    parser.add_argument(
        "--priority", default="", help="the file batch's metadata.priority (default: none, the Batch API's LOW)"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="medai-batchbench-"))
    os.environ.update(
        MEDAI_ENV="development",
        MEDAI_VAR_DIR=str(tmp),
        DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
        DJANGO_SETTINGS_MODULE="medai.settings",
        LOG_LEVEL="WARNING",
        # governance stays on (each path pays its rate-limit and quota round trips) with buckets
        # that this load never empties: the bench measures the queue, not the limits
        **{f"MEDAI_RATE_LIMIT_{who}_{what}": "1000000" for who in ("KEY", "USER", "IP") for what in ("RATE", "BURST")},
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from apps.accounts.models import Location, Organization, User
    from apps.accounts.services import authenticate_header, issue_tokens
    from apps.inference import queue
    from apps.inference.filebatch import batches, files
    from apps.inference.filebatch_models import FileBatch
    from apps.inference.models import AgentRoute, AgentRouteEntry, InferenceTask, ModelEndpoint
    from tests.support.servers import start_llama_server, start_stub

    backend, url = start_llama_server() if args.llama else start_stub()
    served = "smollm2-135m-instruct" if args.llama else ""
    org = Organization.objects.create(name="Bench")
    loc = Location.objects.create(organization=org, code="bench", name="Bench")
    user = User.objects.create_user("bench", password="bench-password-1", role="integrator", organization=org)
    user.locations.add(loc)
    ep = ModelEndpoint.objects.create(name="m", base_url=url, served_model_id=served, context_length=2048)
    AgentRouteEntry.objects.create(route=AgentRoute.objects.get_or_create(agent_type="Chat")[0], endpoint=ep)
    principal = authenticate_header("Bearer " + issue_tokens(user, loc).access_token)
    env = {**os.environ, "MEDAI_Q_WORKERS": str(args.workers), "MEDAI_BACKEND_RETRIES": "0"}
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=(tmp / "cluster.log").open("ab"),
        stderr=subprocess.STDOUT,
    )

    def body(text: str) -> dict[str, Any]:
        return {
            "model": "m",
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "messages": [{"role": "user", "content": text}],
        }

    def texts(tag: str) -> list[str]:
        return [f"[{tag}] Reply with one word. Case {i}." for i in range(args.requests)]

    def wait(done: Any, what: str) -> None:
        end = time.monotonic() + 3600
        while time.monotonic() < end:
            if done():
                return
            time.sleep(0.25)  # seldom: this process must not take CPU from the cluster
        raise SystemExit(f"timed out waiting for {what}: see {tmp / 'cluster.log'}")

    def via_queue(tag: str) -> float:
        from django.db.models import Max
        from django.utils import timezone

        t0 = timezone.now()
        ids: list[Any] = []
        items = [body(t) for t in texts(tag)]
        for start in range(0, len(items), 100):
            ids += [t.id for t in queue.submit_batch(principal, items[start : start + 100])[1]]
        wait(
            lambda: InferenceTask.objects.filter(id__in=ids, status__in=("completed", "failed")).count() == len(ids),
            tag,
        )
        last = InferenceTask.objects.filter(id__in=ids).aggregate(m=Max("finished_at"))["m"]
        return args.requests / (last - t0).total_seconds()

    def via_file(tag: str) -> float:
        from django.utils import timezone

        data = "".join(
            json.dumps({"custom_id": f"{tag}-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body(t)})
            + "\n"
            for i, t in enumerate(texts(tag))
        ).encode()
        t0 = timezone.now()
        stored = files.upload(principal, data=data, filename=f"{tag}.jsonl", purpose="batch")
        made = batches.create_batch(
            principal,
            {
                "input_file_id": stored.public_id,
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                **({"metadata": {"priority": args.priority}} if args.priority else {}),
            },
        )
        wait(lambda: FileBatch.objects.get(pk=made.pk).is_final, tag)
        done = FileBatch.objects.get(pk=made.pk)
        if done.status != "completed" or done.failed_count:
            raise SystemExit(f"batch {done.public_id} ended {done.status} with {done.failed_count} failed")
        from django.db.models import Max, Min

        span = InferenceTask.objects.filter(batch_id=done.pk).aggregate(q=Min("queued_at"), f=Max("finished_at"))
        out.setdefault("file_timeline", []).append(
            {  # seconds from the upload: what the file path spends where
                "created": round((done.created_at - t0).total_seconds(), 3),
                "first_queued": round((span["q"] - t0).total_seconds(), 3),
                "last_finished": round((span["f"] - t0).total_seconds(), 3),
                "completed": round((done.completed_at - t0).total_seconds(), 3),
            }
        )
        return args.requests / (done.completed_at - t0).total_seconds()

    out: dict[str, Any] = {"requests": args.requests, "backend": "llama" if args.llama else "stub", "rounds": []}
    try:
        via_queue("warm-up-q")
        via_file("warm-up-f")
        for r in range(args.rounds):
            order = [("queue", via_queue), ("file", via_file)]
            if r % 2:
                order.reverse()
            result = {kind: round(run(f"{r}{kind[0]}"), 2) for kind, run in order}
            out["rounds"].append(result)
            print(
                f"round {r}: queue {result['queue']} req/s, file batch {result['file']} req/s "
                f"(file timeline, s: {out['file_timeline'][-1]})",
                flush=True,
            )
        queue_med = statistics.median(x["queue"] for x in out["rounds"])
        file_med = statistics.median(x["file"] for x in out["rounds"])
        out.update(
            queue_median_rps=queue_med, file_median_rps=file_med, ratio_file_vs_queue=round(file_med / queue_med, 3)
        )
        print(f"file batch / queue: {out['ratio_file_vs_queue']} (target >= 0.95)")
    finally:
        try:
            os.killpg(cluster.pid, signal.SIGTERM)
            cluster.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(cluster.pid, signal.SIGKILL)
        backend.stop()
        results = ROOT / "bench" / "results"
        results.mkdir(exist_ok=True)
        (results / "batch_vs_queue.json").write_text(json.dumps(out, indent=2))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
