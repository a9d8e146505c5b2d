"""What the Responses API's translation adds over chat completions (issue 12: ≤ 0.5 ms).

The same environment as ``chat_overhead.py`` (its ``Env``: a temporary ``MEDAI_VAR_DIR``, SQLite,
an embedded Redis, the zero-latency stub, one uvicorn process, authentication and recording on).
Interleaved over keep-alive connections, in a random order each round, one fixed prompt:

* ``chat``             ``POST /v1/chat/completions``, ``max_tokens: 16`` (the baseline)
* ``responses``        ``POST /v1/responses``, ``store: false``, ``max_output_tokens: 16`` (the
                       same pipeline and backend call, plus the translation both ways)
* ``responses+store``  the same with ``store: true`` (OpenAI's default): it also waits for its
                       record's commit before answering, so that the next request may continue
                       it (the record writer's batch; a chat answer does not wait)
* streamed: chat and responses (``store: false``), to the last event

"added" is the paired median of (responses − chat) in the same round. In-process, the
translation alone (CreateResponse → chat request → validated; a chat completion → Response) is
timed per call, beside the chat validation it wraps. Figures only, no pass/fail::

    .venv/bin/python bench/responses_overhead.py                 # about 2 minutes here
    .venv/bin/python bench/responses_overhead.py --requests 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import timeit
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chat_overhead import STUB_MODEL, Env, Target, pct  # noqa: E402

QUESTION = "Say OK."


class Post(Target):
    """A fixed POST of ``body`` to ``path`` under medai's /v1."""

    def __init__(self, name: str, base_url: str, token: str, path: str, body: dict[str, Any]) -> None:
        super().__init__(name, base_url, STUB_MODEL, token, stream=bool(body.get("stream")))
        self.method, self.path = "POST", "/v1" + path
        self.body = json.dumps(body).encode()


def in_process(n: int) -> dict[str, float]:
    """Microseconds per call of the translation's pure steps, and of the chat validation inside it."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
    os.environ.setdefault("MEDAI_ENV", "test")
    django.setup()
    from apps.inference import validation
    from apps.inference.responses import output
    from apps.inference.responses import request as responses_request

    body = {"model": STUB_MODEL, "input": QUESTION, "instructions": "Be brief.", "max_output_tokens": 16}
    chat = {
        "model": STUB_MODEL,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}],
        "max_tokens": 16,
    }
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": STUB_MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "OK"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }

    def translate() -> None:
        rr = responses_request.parse(dict(body))
        responses_request.chat_request(rr, [])
        output.from_completion(completion, output.skeleton(rr, "resp_0", STUB_MODEL))

    def chat_only() -> None:
        validation.validate_chat(dict(chat))

    out = {}
    for name, func in (("responses_translation_us", translate), ("chat_validation_us", chat_only)):
        func()
        runs = [timeit.timeit(func, number=n) / n * 1e6 for _ in range(5)]
        out[name] = sorted(runs)[2]
    out["translation_added_us"] = out["responses_translation_us"] - out["chat_validation_us"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="measured requests per series")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--in-process", type=int, default=20_000, help="calls per timing of the translation alone")
    parser.add_argument(
        "--port-base", type=int, default=18240, help="stub, (llama), medai on this port and the next two"
    )
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--http", default="httptools", choices=["httptools", "h11"])
    parser.add_argument("--settings", default="medai.settings")
    args = parser.parse_args()
    args.no_llama = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "argv": sys.argv[1:],
        "commit": subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }
    env = Env(args)
    try:
        creds = env.start_all()
        medai = f"http://127.0.0.1:{env.medai_port}/v1"
        key = creds["api_key"]
        chat = {"model": STUB_MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16}
        resp = {"model": STUB_MODEL, "input": QUESTION, "max_output_tokens": 16, "store": False}
        targets = [
            Post("chat", medai, key, "/chat/completions", chat),
            Post("responses", medai, key, "/responses", resp),
            Post("responses+store", medai, key, "/responses", {**resp, "store": True}),
            Post("chat stream", medai, key, "/chat/completions", {**chat, "stream": True}),
            Post("responses stream", medai, key, "/responses", {**resp, "stream": True}),
        ]
        print(f"{args.requests} requests per series, interleaved ...", flush=True)
        shuffle = random.Random(12).shuffle
        for i in range(args.warmup + args.requests):
            order = list(targets)
            # A random order each round, not a rotation: with a fixed cyclic order each series
            # always follows the same one, and pays for its predecessor's record (the writer's
            # thread commits a non-streamed request's record after a linger, during the next one).
            shuffle(order)
            for target in order:
                target.hit(keep=i >= args.warmup)
        series: dict[str, Any] = {}
        by_name = {t.name: t for t in targets}
        for t in targets:
            series[t.name] = {"median_ms": pct(t.samples, 0.5), "p95_ms": pct(t.samples, 0.95), "errors": t.errors}
        for name, base in (("responses", "chat"), ("responses+store", "chat"), ("responses stream", "chat stream")):
            paired = [a - b for a, b in zip(by_name[name].samples, by_name[base].samples, strict=True)]
            series[name]["added_over"] = base
            series[name]["added_paired_median_ms"] = pct(paired, 0.5)
            series[name]["added_paired_p95_ms"] = pct(paired, 0.95)
        results["latency"] = series
        results["recorded"] = env.django("count")
    finally:
        env.close()
    results["in_process"] = in_process(args.in_process)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"responses_overhead-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\n{'series':<18} {'median ms':>10} {'p95 ms':>8} {'added (paired median) ms':>26}")
    for name, s in results["latency"].items():
        added = f"{s['added_paired_median_ms']:+.3f} over {s['added_over']}" if "added_over" in s else ""
        print(f"{name:<18} {s['median_ms']:>10.3f} {s['p95_ms']:>8.3f} {added:>26}")
    p = results["in_process"]
    print(
        f"\nin process: translation {p['responses_translation_us']:.1f} µs/call, of which the chat validation "
        f"{p['chat_validation_us']:.1f} µs; the translation adds {p['translation_added_us']:.1f} µs"
    )
    print(f"records: {results['recorded']}\nwritten to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
