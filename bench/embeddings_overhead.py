"""What medai adds on top of llama.cpp's own ``/v1/embeddings``: latency and throughput, same run.

Sets up an isolated environment as ``chat_overhead.py`` does (a temporary ``MEDAI_VAR_DIR`` with
SQLite and its own embedded Redis; an organization, location, integrator, API key and JWT), starts
a llama-server on the bundled SmolLM2 exactly as the embedded default runs its embeddings server
(``EMBEDDINGS_SERVER_ARGS``: ``--embeddings --pooling mean``, ``EMBEDDINGS_PARALLEL`` slots of
``EMBEDDINGS_CONTEXT`` tokens), the zero-latency stub (``bench/stub_backend.py``) and medai (one
uvicorn process, as in production), registers both as models that declare embeddings, then:

* latency: the same requests (one text; a batch of 8 texts; each as base64, the official client's
  default, and as floats) to llama.cpp directly and through
  medai (API key), interleaved in one loop, rotating who goes first each round, so that drift and
  warm caches hit all alike; also the stub directly and through medai, and medai's ``/healthz``
  (the floor of the same server): medai's own cost without llama.cpp's variance. "added" is the
  medai median minus the direct median; "paired" the median of per-round differences;
* throughput: requests/s of one text (base64) at N in flight, llama.cpp directly and through medai,
  alternating by round; the figure is the median of the per-round ratios medai / direct;
* CPU: medai's CPU time (every thread of the web process) per embeddings request and per chat
  completion, both to the stub at 16 in flight, alternating by round: what an embeddings request
  costs medai next to its most travelled path, in a figure other work on the machine moves least.

Authentication, rate limit and quota (limits lifted), routing, admission, the record and its audit
event are all on: the run ends by counting the records. Prints a table and writes JSON to
``bench/results/``. Figures only, no pass/fail::

    .venv/bin/python bench/embeddings_overhead.py            # 10-15 minutes on this shared 2-core machine
    .venv/bin/python bench/embeddings_overhead.py --requests 50 --batch-requests 10 --rounds 1 --throughput-requests 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chat_overhead import Env, Target, _interrupt, pct  # noqa: E402
from bench.chat_overhead import load as chat_load  # noqa: E402
from bench.tenant import tenant  # noqa: E402

LLAMA_MODEL = "bench-embed"
STUB_MODEL = "bench-embed-stub"
# The same texts every series sends: short clinical sentences, as retrieval over notes embeds them.
TEXTS = [
    "Patient presents with fever and a productive cough for three days.",
    "No known drug allergies; takes metformin 500 mg twice daily.",
    "Chest pain radiating to the left arm, onset two hours ago.",
    "Wound on the right forearm cleaned and closed with four sutures.",
    "Blood pressure 150/95 on two readings; follow up in one week.",
    "Child with a rash on the trunk and a temperature of 38.5 C.",
    "Discharged home with oral antibiotics for seven days.",
    "History of asthma, uses a salbutamol inhaler as needed.",
]
BATCH = TEXTS


# --- the isolated environment ---------------------------------------------------------------


def _django_main(action: str, stub_url: str, llama_url: str) -> None:
    """Run inside a child process with the bench's environment: migrate + seed, or count rows."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
    django.setup()
    from apps.inference.models import InferenceTask

    if action == "count":
        counts: dict[str, int] = {}
        for kind, status, code in InferenceTask.objects.values_list("kind", "status", "error_code"):
            name = f"{kind}:{status}:{code}" if code else f"{kind}:{status}"
            counts[name] = counts.get(name, 0) + 1
        print(json.dumps(counts))
        return

    from django.core.management import call_command

    from apps.gpu.llamacpp import BUNDLED_MODEL_ALIAS, EMBEDDINGS_CONTEXT
    from apps.inference.models import ModelEndpoint

    call_command("migrate", verbosity=0)
    bench = tenant("Bench Hospital", "Bench ward", jwt=True)
    for name, url, served in [(STUB_MODEL, stub_url, "stub-model"), (LLAMA_MODEL, llama_url, BUNDLED_MODEL_ALIAS)]:
        ModelEndpoint.objects.create(
            name=name,
            base_url=url,
            served_model_id=served,
            context_length=EMBEDDINGS_CONTEXT,
            supports_embeddings=True,
            rerank="embeddings",
        )
    print(json.dumps({"api_key": bench.api_key, "jwt": bench.jwt}))


class EmbedEnv(Env):
    """chat_overhead's environment with the embeddings server in place of the chat server."""

    def django(self, action: str) -> Any:
        out = subprocess.run(
            [sys.executable, __file__, "--django", action, self.stub_url, self.llama_url],
            env=self.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    def start_all(self) -> dict[str, str]:
        from apps.gpu.llamacpp import EMBEDDINGS_CONTEXT, EMBEDDINGS_PARALLEL, EMBEDDINGS_SERVER_ARGS, server_command

        creds = self.django("setup")
        py = sys.executable
        self.start(
            "stub",
            [py, str(ROOT / "bench" / "stub_backend.py"), "--port", str(self.args.port_base)],
            self.stub_url.removesuffix("/v1") + "/_stats",
        )
        argv = server_command(
            self.args.port_base + 1,
            parallel=EMBEDDINGS_PARALLEL,
            ctx_size=EMBEDDINGS_PARALLEL * EMBEDDINGS_CONTEXT,
            threads=self.args.threads,
            extra=list(EMBEDDINGS_SERVER_ARGS),
        )
        self.start("llama", argv, self.llama_url.removesuffix("/v1") + "/health", timeout=120)
        uvicorn = [
            *(py, "-m", "uvicorn", "medai.asgi:application", "--host", "127.0.0.1"),
            *("--port", str(self.medai_port), "--no-access-log", "--log-level", "warning", "--lifespan", "off"),
            *("--loop", "uvloop", "--http", "httptools"),
        ]
        self.start("medai", uvicorn, f"http://127.0.0.1:{self.medai_port}/healthz")
        return creds


# --- requests ---------------------------------------------------------------------------------


def embed_body(model: str, texts: list[str], encoding: str) -> bytes:
    return json.dumps({"model": model, "input": texts, "encoding_format": encoding}).encode()


def target(name: str, base_url: str, model: str, texts: list[str], encoding: str, token: str | None = None) -> Target:
    """A keep-alive connection sending one fixed embeddings request (chat_overhead's Target)."""
    t = Target(name, base_url, model, token)
    t.path = "/" + base_url.removeprefix("http://").partition("/")[2] + "/embeddings"
    t.body = embed_body(model, texts, encoding)
    return t


def latency_run(label: str, targets: list[Target], n: int, warmup: int) -> dict[str, Any]:
    """Each round one request per series, who goes first rotating; ``targets[0]`` is the direct
    baseline of every medai series but ``/healthz``."""
    for i in range(warmup + n):
        k = i % len(targets)
        for t in targets[k:] + targets[:k]:
            t.hit(keep=i >= warmup)
    direct = targets[0]
    result: dict[str, Any] = {"series_of": label, "requests_each": n, "series": {}}
    for t in targets:
        s = result["series"][t.name] = {
            "median_ms": pct(t.samples, 0.5),
            "p95_ms": pct(t.samples, 0.95),
            "p99_ms": pct(t.samples, 0.99),
            "mean_ms": statistics.fmean(t.samples),
            "errors": t.errors,
        }
        if t.name.endswith("direct") or t.path == "/healthz":
            continue
        paired = [m - d for m, d in zip(t.samples, direct.samples, strict=True)]
        s["added"] = {
            "median_ms": pct(t.samples, 0.5) - pct(direct.samples, 0.5),
            "p95_ms": pct(t.samples, 0.95) - pct(direct.samples, 0.95),
            "paired_median_ms": pct(paired, 0.5),
            "paired_p95_ms": pct(paired, 0.95),
        }
    return result


def load(base_url: str, body: bytes, token: str | None, total: int, concurrency: int, cpu_of: int | None = None):
    """``total`` POSTs of ``body`` to ``<base_url>/embeddings``, ``concurrency`` keep-alive
    connections at a time (chat_overhead's raw-socket HTTP/1.1 generator)."""
    return chat_load(base_url, "", token, total, concurrency, cpu_of=cpu_of, post=("embeddings", body))


# --- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150, help="measured requests per latency series, 1 text")
    parser.add_argument("--batch-requests", type=int, default=30, help="the same, 8 texts per request")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--concurrency", default="2,4", help="requests in flight, comma-separated levels")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds, direct and medai alternating")
    parser.add_argument("--throughput-requests", type=int, default=60, help="requests per series and round")
    # One: on a shared machine llama.cpp's threads spin while they compute, and two of them on two
    # busy cores are several times slower than one (400 ms vs 2 s for one text at load 10 here).
    parser.add_argument("--threads", type=int, default=1, help="llama-server --threads")
    parser.add_argument("--cpu-requests", type=int, default=500, help="per CPU series and round (0: none)")
    parser.add_argument("--port-base", type=int, default=18240, help="stub, llama, medai on this port and the next two")
    parser.add_argument("--settings", default="medai.settings", help=argparse.SUPPRESS)
    parser.add_argument("--django", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.django:
        return _django_main(*args.django)

    signal.signal(signal.SIGTERM, _interrupt)  # so `kill` still stops the servers this started
    env = EmbedEnv(args)
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
    sent = 0
    try:
        creds = env.start_all()
        medai = f"http://127.0.0.1:{env.medai_port}/v1"
        medai_pid = env.procs["medai"].pid
        from apps.gpu.llamacpp import BUNDLED_MODEL_ALIAS

        results["latency"] = []
        shapes = [
            (f"{len(texts)} text{'s' if len(texts) > 1 else ''}, {encoding}", texts, encoding, n)
            for texts, n in ((TEXTS[:1], args.requests), (BATCH, args.batch_requests))
            for encoding in ("base64", "float")
        ]
        for label, texts, encoding, n in shapes:
            print(f"latency, {label}: {n} requests per series ...", flush=True)
            targets = [
                target("llama.cpp direct", env.llama_url, BUNDLED_MODEL_ALIAS, texts, encoding),
                target("medai -> llama.cpp", medai, LLAMA_MODEL, texts, encoding, creds["api_key"]),
                target("stub direct", env.stub_url, "stub-model", texts, encoding),
                target("medai -> stub", medai, STUB_MODEL, texts, encoding, creds["api_key"]),
                Target("medai /healthz", medai, "", path="/healthz"),
            ]
            run = latency_run(label, targets, n, args.warmup)
            # the stub's series against the stub, not against llama.cpp
            stub, via = targets[2], targets[3]
            paired = [m - d for m, d in zip(via.samples, stub.samples, strict=True)]
            run["series"]["medai -> stub"]["added"] = {
                "median_ms": pct(via.samples, 0.5) - pct(stub.samples, 0.5),
                "p95_ms": pct(via.samples, 0.95) - pct(stub.samples, 0.95),
                "paired_median_ms": pct(paired, 0.5),
                "paired_p95_ms": pct(paired, 0.95),
            }
            results["latency"].append(run)
            sent += 2 * (n + args.warmup)
        levels = [int(c) for c in args.concurrency.split(",")]
        n = args.throughput_requests
        # base64: what the official client asks for unless told otherwise
        body_direct = embed_body(BUNDLED_MODEL_ALIAS, TEXTS[:1], "base64")
        body_medai = embed_body(LLAMA_MODEL, TEXTS[:1], "base64")
        print(f"throughput: {args.rounds} rounds x {n} requests of 1 text at {levels} in flight ...", flush=True)
        for c in levels:  # warm-up of both, each level's connections
            load(env.llama_url, body_direct, None, 10, c)
            load(medai, body_medai, creds["api_key"], 10, c)
            sent += 10
        series: dict[str, dict[str, list[dict[str, Any]]]] = {str(c): {"direct": [], "medai": []} for c in levels}
        for r in range(args.rounds):
            for c in levels:
                pair = [("direct", env.llama_url, body_direct, None), ("medai", medai, body_medai, creds["api_key"])]
                for name, url, body, token in pair if r % 2 == 0 else pair[::-1]:
                    cpu_of = medai_pid if name == "medai" else None
                    series[str(c)][name].append(load(url, body, token, n, c, cpu_of=cpu_of))
                sent += n
        results["throughput"] = {
            c: {
                **runs,
                "direct_rps_median": statistics.median(x["rps"] for x in runs["direct"]),
                "medai_rps_median": statistics.median(x["rps"] for x in runs["medai"]),
                "medai_over_direct": statistics.median(
                    m["rps"] / d["rps"] for m, d in zip(runs["medai"], runs["direct"], strict=True)
                ),
                "medai_cpu_ms_per_request": statistics.median(x["cpu_ms_per_request"] for x in runs["medai"]),
            }
            for c, runs in series.items()
        }
        if args.cpu_requests:
            # medai's own cost per request, whatever else the machine runs: its CPU time (every
            # thread) per embeddings request and per chat request to the zero-latency stub, side by side
            print(f"CPU: {args.rounds} rounds x {args.cpu_requests} embeddings and chats to the stub ...", flush=True)
            body = embed_body(STUB_MODEL, TEXTS[:1], "base64")
            cpu: dict[str, list[dict[str, Any]]] = {"embeddings": [], "chat": []}
            for r in range(args.rounds):
                pair = ["embeddings", "chat"] if r % 2 == 0 else ["chat", "embeddings"]
                for name in pair:
                    if name == "embeddings":
                        run_ = load(medai, body, creds["api_key"], args.cpu_requests, 16, cpu_of=medai_pid)
                    else:
                        run_ = chat_load(medai, STUB_MODEL, creds["api_key"], args.cpu_requests, 16, cpu_of=medai_pid)
                    cpu[name].append(run_)
                    sent += args.cpu_requests
            results["cpu"] = {
                **cpu,
                "embeddings_cpu_ms": statistics.median(x["cpu_ms_per_request"] for x in cpu["embeddings"]),
                "chat_cpu_ms": statistics.median(x["cpu_ms_per_request"] for x in cpu["chat"]),
                "embeddings_over_chat": statistics.median(
                    e["cpu_ms_per_request"] / c["cpu_ms_per_request"]
                    for e, c in zip(cpu["embeddings"], cpu["chat"], strict=True)
                ),
            }
        time.sleep(1.0)  # let any in-flight record land
        results["records"] = {"sent_through_medai": sent, "in_db": env.django("count")}
    finally:
        env.close()
    report(results)


def report(results: dict[str, Any]) -> None:
    print()
    for run in results.get("latency", []):
        print(f"Latency, {run['series_of']} per request ({run['requests_each']} requests per series, interleaved), ms")
        print(
            f"  {'series':<20}{'median':>9}{'p95':>9}{'p99':>9}  {'added med':>10}{'added p95':>10}{'paired med':>11}"
        )
        for name, s in run["series"].items():
            added = s.get("added")
            extra = (
                f"  {added['median_ms']:>10.2f}{added['p95_ms']:>10.2f}{added['paired_median_ms']:>11.2f}"
                if added
                else ""
            )
            errors = f"  errors={s['errors']}" if s["errors"] else ""
            print(f"  {name:<20}{s['median_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}{extra}{errors}")
        llama = run["series"]["medai -> llama.cpp"]["added"]
        direct = run["series"]["llama.cpp direct"]["median_ms"]
        print(
            f"  medai adds {llama['median_ms']:.2f} ms median (paired {llama['paired_median_ms']:.2f} ms) to llama.cpp's"
            f" {direct:.2f} ms: {100 * llama['median_ms'] / direct:.1f}% (target <= 1 ms);"
            f" over the stub {run['series']['medai -> stub']['added']['median_ms']:.2f} ms, /healthz floor"
            f" {run['series']['medai /healthz']['median_ms']:.2f} ms"
        )
        if any(s["errors"] for s in run["series"].values()):
            print("  WARNING: some requests failed; the figures above are not comparable")
        print()
    if "throughput" in results:
        print(
            "Throughput, 1 text per request (base64): medai -> llama.cpp as a share of llama.cpp direct"
            " (interleaved rounds)"
        )
        for c, t in results["throughput"].items():
            print(
                f"  {c:>3} in flight: medai {t['medai_rps_median']:>7.1f} req/s, direct {t['direct_rps_median']:>7.1f}"
                f" req/s -> {t['medai_over_direct']:.3f}x; medai's CPU per request {t['medai_cpu_ms_per_request']:.2f} ms"
            )
            for name in ("direct", "medai"):
                for x in t[name]:
                    print(
                        f"      {name:<7}{x['rps']:>8.1f} req/s  median {x['median_ms']:.1f} ms, p95 {x['p95_ms']:.1f} ms,"
                        f" statuses {x['statuses']}"
                    )
        print()
    if "cpu" in results:
        c = results["cpu"]
        print(
            f"medai's CPU per request to the stub, 16 in flight: embeddings {c['embeddings_cpu_ms']:.2f} ms,"
            f" chat {c['chat_cpu_ms']:.2f} ms -> {c['embeddings_over_chat']:.2f}x"
        )
        for name in ("embeddings", "chat"):
            for x in c[name]:
                print(
                    f"      {name:<11}{x['rps']:>8.0f} req/s  {x['cpu_ms_per_request']:.2f} ms CPU,"
                    f" statuses {x['statuses']}"
                )
        print()
    if "records" in results:
        r = results["records"]
        print(f"Recorded: {r['in_db']} rows for {r['sent_through_medai']} requests through medai")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"embeddings_overhead-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nJSON: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
