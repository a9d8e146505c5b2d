"""GPU orchestration costs: the routing + admission decision per request, and the monitor's CPU.

    .venv/bin/python bench/gpu_policy.py decision [--n 20000]
    .venv/bin/python bench/gpu_policy.py monitor [--seconds 60] [--endpoints 6]

``decision`` times, per request, what apps.gpu adds to the chat path: ``policy.choose`` (policy,
health, circuit and latency filtering of the route's candidates, from the per-process view) and a
concurrency slot (acquire + release: counted in process, published by a background thread), plus
the bookkeeping after a successful call (latency EMA, circuit success, attempt counter). A Redis
GET is timed for scale: it is what an exact Redis semaphore would add per request. ``router.resolve`` (which existed
before) is shown for scale. Redis is the embedded one unless REDIS_URL is set.

``monitor`` runs the monitor (simulated GPU, sampling every 2 s, health checks every 10 s against
``--endpoints`` stub-backed models, supervision pass every 0.5 s) for ``--seconds`` and reports its
CPU time as a share of one core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MEDAI_VAR_DIR", tempfile.mkdtemp(prefix="medai-bench-gpu-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
os.environ.setdefault("MEDAI_ENV", "test")  # a throwaway var dir: its keys are generated there
os.environ.setdefault("LOG_LEVEL", "WARNING")
EMBEDDED_REDIS = not os.environ.get("REDIS_URL")


def setup() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def register(n: int, base_url: str) -> list[object]:
    from apps.inference import router
    from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint

    route, _ = AgentRoute.objects.get_or_create(agent_type="Clinical")
    eps = []
    for i in range(n):
        ep, _ = ModelEndpoint.objects.get_or_create(
            name=f"bench-{i}", defaults=dict(base_url=base_url, rank=1 + i // 2, vram_mb=1000 * (i + 1))
        )
        AgentRouteEntry.objects.get_or_create(route=route, endpoint=ep, defaults={"position": i})
        eps.append(ep)
    router.invalidate()
    return eps


def register_one(i: int, base_url: str) -> None:
    from apps.inference import router
    from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint

    route, _ = AgentRoute.objects.get_or_create(agent_type="Clinical")
    ep = ModelEndpoint.objects.create(name=f"bench-{i}", base_url=base_url, rank=1 + i, vram_mb=1000 * (i + 1))
    AgentRouteEntry.objects.create(route=route, endpoint=ep, position=i)
    router.invalidate()


def timed(fn, n: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean µs per call over ``n`` calls."""
    results = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(results)


def bench_decision(n: int) -> None:
    setup()
    from apps.gpu import circuit, policy, shared, slots
    from apps.gpu.metrics import record_attempt
    from apps.inference import router

    shared.flush_shared()
    register(4, "http://127.0.0.1:9/v1")
    route = router.resolve("Clinical", None)
    candidates = route.candidates
    for ep in candidates:
        shared.observe_latency(ep.id, 100.0 + ep.id)
    shared.view()
    ep0 = candidates[0]

    def choose() -> None:
        policy.choose(candidates, 1)

    def slot() -> None:
        lease = slots.try_acquire(ep0.id, 4)
        lease.release()

    def after() -> None:
        shared.observe_latency(ep0.id, 101.0)
        circuit.record_success(ep0.id)
        record_attempt(ep0, ok=True)

    def whole() -> None:
        choice = policy.choose(candidates, 1)
        limit = choice.policy.limit_for(1)
        ep = choice.candidates[0]
        lease = slots.try_acquire(ep.id, limit)
        circuit.allow(ep.id)
        shared.observe_latency(ep.id, 101.0)
        circuit.record_success(ep.id)
        record_attempt(ep, ok=True)
        lease.release()

    def resolve() -> None:
        router.resolve("Clinical", None)

    redis_kind = "embedded (unix socket)" if EMBEDDED_REDIS else "REDIS_URL=" + os.environ["REDIS_URL"].split("@")[-1]
    print(f"decision cost per request (4 candidates, Redis {redis_kind}, median of 5 x {n} calls)")
    rows = [
        ("router.resolve (existing, for scale)", timed(resolve, n)),
        ("policy.choose (policy/health/circuit/EMA)", timed(choose, n)),
        ("slot acquire + release (no round trip)", timed(slot, n)),
        ("  for scale: one Redis GET round trip", timed(lambda: shared.client().get("x"), n)),
        ("bookkeeping after success", timed(after, n)),
        ("whole decision + admission + bookkeeping", timed(whole, n)),
    ]
    slots.flush_releases()
    for name, us in rows:
        print(f"  {name:<48} {us:8.1f} µs")


def bench_monitor(seconds: float, endpoints: int) -> None:
    setup()
    from apps.gpu import shared
    from apps.gpu.monitor import Monitor
    from apps.gpu.providers import SimulatedProvider
    from tests.support.servers import start_stub

    shared.flush_shared()
    stubs = [start_stub() for _ in range(endpoints)]  # one server each: health checks are per server
    try:
        for i, (_, url) in enumerate(stubs):
            register_one(i, url)
        stop = threading.Event()
        monitor = Monitor(SimulatedProvider())
        thread = threading.Thread(target=monitor.run, args=(stop,), daemon=True)
        time.sleep(0.5)
        cpu0, wall0 = time.process_time(), time.monotonic()
        thread.start()
        time.sleep(seconds)
        stop.set()
        thread.join(30)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    finally:
        for proc, _ in stubs:
            proc.stop()
    print(
        f"monitor: {wall:.1f} s wall, {cpu:.3f} s CPU = {100 * cpu / wall:.2f}% of one core "
        f"(simulated GPU sampled every 2 s, {endpoints} backends health-checked every 10 s, "
        "supervision pass every 0.5 s, metrics every 10 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    d = sub.add_parser("decision")
    d.add_argument("--n", type=int, default=20000)
    m = sub.add_parser("monitor")
    m.add_argument("--seconds", type=float, default=60.0)
    m.add_argument("--endpoints", type=int, default=6)
    args = parser.parse_args()
    if args.what == "decision":
        bench_decision(args.n)
    else:
        bench_monitor(args.seconds, args.endpoints)


if __name__ == "__main__":
    main()
