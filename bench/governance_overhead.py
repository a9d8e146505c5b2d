"""What governance (rate limits, the in-flight cap, quota reservation and reconciliation) adds to a
chat completion: the same medai twice in one run, ``MEDAI_GOVERNANCE=on`` and ``off``, against the
zero-latency stub, on one database and one Redis.

* latency: non-streamed ``max_tokens: 1`` requests with an API key, direct to the stub, through
  medai with governance off and on, interleaved in one loop (the order rotating each round); the
  "on" process has a day and a month quota at the location and the key's buckets, so every
  request runs the admission script and the settle script; "added" is on minus off (paired);
* throughput: requests/s of each process at N in flight, interleaved rounds;
* steps: what each governance step costs in-process against the same Redis (the admission
  script, the settle script, the prompt estimate), median and p95 of many calls.

The limits are set high (nothing is refused): the cost measured is the checking, not the refusing.
Figures only, no pass/fail::

    flock /tmp/bench.lock .venv/bin/python bench/governance_overhead.py
    .venv/bin/python bench/governance_overhead.py --requests 1000 --throughput-requests 4000
"""

from __future__ import annotations

import argparse
import json
import os
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

from bench.chat_overhead import STUB_MODEL, Env, Target, _interrupt, load, pct  # noqa: E402

# High enough that nothing is refused: every request still runs every check.
LIMITS = {
    "MEDAI_RATE_LIMIT_KEY_RATE": "1000000",
    "MEDAI_RATE_LIMIT_KEY_BURST": "1000000",
    "MEDAI_RATE_LIMIT_USER_RATE": "1000000",
    "MEDAI_RATE_LIMIT_USER_BURST": "1000000",
    "MEDAI_RATE_LIMIT_IP_RATE": "1000000",
    "MEDAI_RATE_LIMIT_IP_BURST": "1000000",
    "MEDAI_INFLIGHT_PER_KEY": "100000",
}


def _steps_main(n: int) -> None:
    """In a child with the bench's environment: time each governance step against its Redis."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
    django.setup()
    from apps.accounts import governance
    from apps.accounts.models import ApiKey
    from apps.accounts.services import Principal

    key = ApiKey.objects.select_related("location").get()
    p = Principal(
        user_id=key.user_id,
        username="bench",
        role="integrator",
        location_pk=key.location_id,
        location_code=key.location.code,
        organization_id=key.location.organization_id,
        scopes=frozenset({"chat"}),
        method="api_key",
        api_key_id=key.pk,
    )
    req = {"model": STUB_MODEL, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 1}
    timings: dict[str, list[float]] = {"estimate_prompt_tokens": [], "admit (1 script)": [], "reconcile (1 script)": []}
    for i in range(n + 200):
        t0 = time.perf_counter()
        item = governance.item_of(req)
        t1 = time.perf_counter()
        admitted = governance.admit(p, items=[item], ip="127.0.0.1", in_flight=True)
        t2 = time.perf_counter()
        governance.reconcile(admitted.reservations[0], prompt_tokens=5, completion_tokens=1, completed=True)
        t3 = time.perf_counter()
        if i >= 200:
            for name, value in zip(timings, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                timings[name].append(value * 1e6)
    print(json.dumps({name: {"median_us": pct(v, 0.5), "p95_us": pct(v, 0.95)} for name, v in timings.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="measured requests per latency series")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight for throughput")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds, off and on interleaved")
    parser.add_argument("--throughput-requests", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=3000, help="calls per in-process step timing")
    parser.add_argument("--port-base", type=int, default=18310, help="stub, (llama), medai-on, medai-off")
    parser.add_argument("--steps-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps_child:
        return _steps_main(args.steps_child)

    signal.signal(signal.SIGTERM, _interrupt)
    env_args = argparse.Namespace(
        settings="medai.settings", port_base=args.port_base, no_llama=True, loop="uvloop", http="httptools"
    )
    env = Env(env_args)
    env.env.update(LIMITS)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "argv": sys.argv[1:],
        "commit": subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }
    try:
        creds = env.start_all()  # the stub, and medai with governance on (the default)
        for period in ("day", "month"):
            subprocess.run(
                [sys.executable, "manage.py", "quota", "set", "--location", "bench", "--period", period]
                + ["--requests", "1000000000", "--tokens", "1000000000000"],
                env=env.env,
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
        on_url = f"http://127.0.0.1:{env.medai_port}/v1"
        off_port = args.port_base + 3
        on_env = env.env
        env.env = {**on_env, "MEDAI_GOVERNANCE": "off"}
        argv = [sys.executable, "-m", "uvicorn", "medai.asgi:application", "--host", "127.0.0.1"]
        argv += ["--port", str(off_port), "--no-access-log", "--log-level", "warning", "--lifespan", "off"]
        argv += ["--loop", "uvloop", "--http", "httptools"]
        env.start("medai-off", argv, f"http://127.0.0.1:{off_port}/healthz")
        env.env = on_env
        off_url = f"http://127.0.0.1:{off_port}/v1"

        print(f"latency: {args.requests} requests per series, interleaved ...", flush=True)
        targets = [
            Target("direct", env.stub_url, "stub-model"),
            Target("governance off", off_url, STUB_MODEL, creds["api_key"]),
            Target("governance on", on_url, STUB_MODEL, creds["api_key"]),
        ]
        for i in range(args.warmup + args.requests):
            k = i % len(targets)
            for t in targets[k:] + targets[:k]:
                t.hit(keep=i >= args.warmup)
        series = {
            t.name: {"median_ms": pct(t.samples, 0.5), "p95_ms": pct(t.samples, 0.95), "errors": t.errors}
            for t in targets
        }
        on, off = targets[2].samples, targets[1].samples
        paired = [a - b for a, b in zip(on, off, strict=True)]
        results["latency"] = {
            "series": series,
            "added_by_governance": {
                "median_ms": pct(on, 0.5) - pct(off, 0.5),
                "p95_ms": pct(on, 0.95) - pct(off, 0.95),
                "paired_median_ms": pct(paired, 0.5),
            },
        }

        print(f"throughput: {args.rounds} rounds x {args.throughput_requests} at {args.concurrency} in flight ...")
        for url in (off_url, on_url):
            load(url, STUB_MODEL, creds["api_key"], 500, args.concurrency)
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for r in range(args.rounds):
            pair = [("off", off_url), ("on", on_url)]
            for name, url in pair if r % 2 == 0 else pair[::-1]:
                runs[name].append(load(url, STUB_MODEL, creds["api_key"], args.throughput_requests, args.concurrency))
        results["throughput"] = {
            "runs": runs,
            "off_rps_median": statistics.median(x["rps"] for x in runs["off"]),
            "on_rps_median": statistics.median(x["rps"] for x in runs["on"]),
            "on_over_off": statistics.median(a["rps"] / b["rps"] for a, b in zip(runs["on"], runs["off"], strict=True)),
        }

        print(f"steps: {args.steps} calls each, in-process ...", flush=True)
        out = subprocess.run(
            [sys.executable, __file__, "--steps-child", str(args.steps)],
            env=env.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        results["steps"] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        env.close()
    report(results)


def report(results: dict[str, Any]) -> None:
    lat = results["latency"]
    print("\nLatency, ms (API key, non-streamed, max_tokens 1, zero-latency stub)")
    for name, s in lat["series"].items():
        errors = f"  errors={s['errors']}" if s["errors"] else ""
        print(f"  {name:<16}median {s['median_ms']:6.2f}  p95 {s['p95_ms']:6.2f}{errors}")
    a = lat["added_by_governance"]
    print(
        f"  added by governance: median {a['median_ms']:.3f} ms, p95 {a['p95_ms']:.3f} ms, paired median "
        f"{a['paired_median_ms']:.3f} ms (targets <= 1 ms, <= 2 ms)"
    )
    t = results["throughput"]
    print(
        f"\nThroughput, one web process: governance on {t['on_rps_median']:.0f} req/s, off {t['off_rps_median']:.0f}"
        f" req/s: on/off {t['on_over_off']:.3f} (target >= 800 req/s with governance on)"
    )
    for name in ("off", "on"):
        for x in t["runs"][name]:
            print(f"    {name:<4}{x['rps']:>7.0f} req/s  median {x['median_ms']:.1f} ms  statuses {x['statuses']}")
    print("\nSteps, in-process against the same Redis, µs")
    for name, s in results["steps"].items():
        print(f"  {name:<24}median {s['median_us']:7.1f}  p95 {s['p95_us']:7.1f}")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"governance_overhead-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nJSON: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
