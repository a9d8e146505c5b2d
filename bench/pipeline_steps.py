"""Where a chat completion's time goes inside medai: each pipeline step timed on its own.

Same isolated environment as ``chat_overhead.py`` (temporary SQLite, embedded Redis, the stub),
but the steps run in this process, on one event loop, without the HTTP server around them:

    .venv/bin/python bench/pipeline_steps.py [--requests 300]

Steps that touch the database run once through a thread hop and once inline, so the cost of the
hop itself shows; ``gate.authenticate`` + ``plan.plan_chat`` is what the view runs on the loop;
the admission calls, the validation and the backend call (aiohttp; httpx beside it) are timed
alone. Figures only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_overhead import PROMPT, STUB_MODEL, Env, pct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--port-base", type=int, default=18220)
    args = parser.parse_args()
    args.no_llama, args.settings = True, "medai.settings"
    env = Env(args)
    try:
        creds = env.django("setup")
        env.start(
            "stub",
            [sys.executable, str(Path(__file__).parent / "stub_backend.py"), "--port", str(args.port_base)],
            env.stub_url.removesuffix("/v1") + "/_stats",
        )
        os.environ.update(env.env)
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "1"  # the inline variants call the ORM on the loop, on purpose
        import django

        django.setup()
        import uvloop

        timings = uvloop.run(run(creds, args.requests))
    finally:
        env.close()
    print(f"{'step':<46}{'median µs':>10}{'p95 µs':>10}")
    for name, values in timings.items():
        print(f"{name:<46}{statistics.median(values):>10.0f}{pct(values, 0.95):>10.0f}")


async def run(creds: dict[str, str], n: int) -> dict[str, list[float]]:
    from asgiref.sync import sync_to_async

    from apps.accounts.services import authenticate_bearer
    from apps.gpu import circuit, policy, slots
    from apps.inference import backends, recorder, validation
    from apps.inference.models import InferenceTask
    from apps.inference.pipeline import gate, record
    from apps.inference.pipeline.plan import plan_chat, plan_chat_sync
    from apps.inference.pipeline.run import complete_chat
    from apps.inference.validation.chat_request import ChatCompletionRequestSerializer

    body = json.dumps({"model": STUB_MODEL, "messages": PROMPT, "max_tokens": 1}).encode()
    run_sync = sync_to_async(thread_sensitive=False)
    timings: dict[str, list[float]] = {}

    async def timed(name: str, step: Callable[[], Any], warm: int = 20) -> Any:
        result = None
        for i in range(n + warm):
            start = time.perf_counter()
            result = step()
            if hasattr(result, "__await__"):
                result = await result
            if i >= warm:
                timings.setdefault(name, []).append((time.perf_counter() - start) * 1e6)
        return result

    for kind in ("api_key", "jwt"):
        header = f"Bearer {creds[kind]}"

        def sync_plan(h: str = header) -> Any:
            return plan_chat_sync(gate.authenticate_sync(h), body, "bench")

        async def view_plan(h: str = header) -> Any:
            return await plan_chat(await gate.authenticate(h), body, "bench")

        plan = await timed(f"{kind}: authenticate + plan, through the thread hop", lambda f=sync_plan: run_sync(f)())
        await timed(f"{kind}: authenticate + plan, inline", sync_plan)
        await timed(f"{kind}: authenticate + plan_chat (the view's path)", view_plan)
        await timed(f"{kind}: authenticate_bearer alone", lambda k=kind: authenticate_bearer(creds[k]))
    data = json.loads(body)
    await timed("validation.validate_chat (fast path)", lambda: validation.validate_chat(data))
    await timed("ChatCompletionRequestSerializer alone", lambda: ChatCompletionRequestSerializer(data=data).is_valid())
    await timed("complete_chat (admission + aiohttp + bookkeeping)", lambda: complete_chat(plan))
    await timed(
        "record_later (the view's path: queue for the writer)",
        lambda: record.record_later(plan, InferenceTask.Status.COMPLETED, 200),
    )
    await timed(
        "record_outcome, through the thread hop",
        lambda: run_sync(record.record_outcome)(plan, InferenceTask.Status.COMPLETED, 200),
    )
    await timed("record_outcome, inline", lambda: record.record_outcome(plan, InferenceTask.Status.COMPLETED, 200))
    await timed("empty thread hop (default executor)", lambda: run_sync(lambda: None)())
    await timed("empty thread hop (thread-sensitive)", lambda: sync_to_async(lambda: None)())
    endpoint = plan.route.candidates[0]
    payload = {**plan.payload, "model": endpoint.backend_model}
    await timed(
        "aiohttp POST to the stub alone (post_json)", lambda: backends.post_json(endpoint, "/chat/completions", payload)
    )

    import httpx

    client = httpx.AsyncClient(timeout=30)

    async def httpx_post() -> Any:
        response = await client.post(endpoint.base_url + "/chat/completions", json=payload)
        return response.json()

    await timed("httpx POST to the stub alone (for comparison)", httpx_post)
    await timed("admission: policy.choose", lambda: policy.choose(plan.route.candidates, 1))
    await timed("admission: slots.try_acquire + release", lambda: slots.try_acquire(endpoint.id, 1_000_000).release())
    await timed("admission: circuit.allow", lambda: circuit.allow(endpoint.id))
    await client.aclose()
    recorder.writer.flush()
    return timings


if __name__ == "__main__":
    main()
