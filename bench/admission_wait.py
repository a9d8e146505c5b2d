"""Admission under load: one medai web process with 16 and with 64 requests in flight.

The model (the zero-latency stub, ``bench/stub_backend.py``) admits 4 requests at a time (the LOW
row of the GPU policy: no monitor runs), so at 16 in flight 12 requests wait in its line and at
64 in flight 60 do. A line that wakes its head when a slot is released serves as much at 64 as at
16; one that polls (what medai did before: 5 → 50 ms) spends the process's CPU on wake-ups and
serves less, with a long tail.

Same isolated environment as ``bench/chat_overhead.py`` (temporary ``MEDAI_VAR_DIR``, SQLite, its
own embedded Redis; the stub and one uvicorn process as in production), the same raw-socket
keep-alive load generator. Each round sends, at each level, ``--requests`` requests to the stub
directly (the baseline: what the load generator and the stub do alone on this machine now) and
then through medai; ``--rounds`` rounds, interleaved, and the medians of the rounds are reported
with the ratios medai / stub and 64 / 16, and the medai process's CPU time per request (from
``/proc``): on a machine shared with other work req/s swing with what the neighbours do, while
CPU per request is what decides a CPU-bound process's throughput. Figures only, no pass/fail::

    .venv/bin/python bench/admission_wait.py                    # 3 rounds × 3,000 requests, ~2 minutes
    .venv/bin/python bench/admission_wait.py --levels 8,16,32,64 --rounds 5
    .venv/bin/python bench/admission_wait.py --in-process       # admission alone, no HTTP (~20 s)

``--in-process`` times only the admission machinery: on one event loop (uvloop), the given
numbers of concurrent tasks each run ``call_with_failover`` on one model of 4 slots with a call
that keeps the loop busy ``--call-us`` µs (500: about what relaying one answer from the stub
costs the web process) and yields once, against the same embedded Redis; it reports requests/s,
CPU µs per request (``time.process_time``), the median and p99 latency of a request, and the same
loop with no admission at all as its baseline. Less sensitive to a machine shared with other work
than the HTTP run, and the same code path.
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

from bench.chat_overhead import STUB_MODEL, Env, _interrupt, load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="16,64", help="requests in flight, comma-separated")
    parser.add_argument("--requests", type=int, default=3000, help="per level, per series, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--port-base", type=int, default=18230, help="stub, (llama, unused), medai: this and +2")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--http", default="httptools", choices=["httptools", "h11"])
    parser.add_argument("--settings", default="medai.settings")
    parser.add_argument("--in-process", action="store_true", help="time admission alone, without HTTP")
    parser.add_argument("--call-us", type=int, default=500, help="--in-process: loop work of each backend call")
    parser.add_argument("--slots", type=int, default=4, help="the model's concurrency (the LOW row's; 4 by default)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--set-slots", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    if args.child:
        return _in_process_child(levels, args.requests, args.rounds, args.call_us)
    if args.set_slots is not None:
        return _set_slots(args.set_slots)
    signal.signal(signal.SIGTERM, _interrupt)
    if args.in_process:
        return in_process(args, levels)

    env = Env(
        argparse.Namespace(
            no_llama=True, port_base=args.port_base, loop=args.loop, http=args.http, settings=args.settings
        )
    )
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "argv": sys.argv[1:],
        "commit": subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "rounds": [],
        "slots": args.slots,
    }
    try:
        creds = env.start_all()
        medai_url = f"http://127.0.0.1:{env.medai_port}/v1"
        medai_pid = env.procs["medai"].pid
        if args.slots != 4:
            subprocess.run(
                [sys.executable, __file__, "--set-slots", str(args.slots)], env=env.env, cwd=ROOT, check=True
            )
            time.sleep(2.0)  # the web process reads the published table within MEDAI_GPU_STATE_CACHE_SECONDS
        print(f"warm-up: {args.warmup} requests ...", flush=True)
        load(env.stub_url, "stub-model", None, args.warmup, max(levels))
        load(medai_url, STUB_MODEL, creds["api_key"], args.warmup, max(levels))
        for r in range(args.rounds):
            row: dict[str, Any] = {}
            for level in levels:
                print(f"round {r + 1}/{args.rounds}: {level} in flight ...", flush=True)
                direct = load(env.stub_url, "stub-model", None, args.requests, level)
                cpu = cpu_seconds(medai_pid)
                through = load(medai_url, STUB_MODEL, creds["api_key"], args.requests, level)
                through["cpu_ms_per_request"] = (cpu_seconds(medai_pid) - cpu) * 1000 / args.requests
                row[str(level)] = {"stub_direct": direct, "medai": through}
            results["rounds"].append(row)
        time.sleep(1.0)
        results["records"] = env.django("count")
    finally:
        env.close()
    report(results, levels)


def _set_slots(n: int) -> None:
    """Give the LOW row of the GPU policy ``n`` requests in flight per model, as an admin would."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
    django.setup()
    from apps.gpu import policy
    from apps.gpu.models import PressureLevel

    PressureLevel.objects.filter(level="LOW").update(concurrency=n)
    policy.publish_table()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_process(args: argparse.Namespace, levels: list[int]) -> None:
    env = Env(
        argparse.Namespace(
            no_llama=True, port_base=args.port_base, loop=args.loop, http=args.http, settings=args.settings
        )
    )
    try:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--levels",
                args.levels,
                "--requests",
                str(args.requests),
                "--rounds",
                str(args.rounds),
                "--call-us",
                str(args.call_us),
            ],
            env=env.env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        env.close()
    results = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"\nAdmission alone, one event loop, 4 slots, {args.call_us} µs of loop work per call; medians of "
        f"{args.rounds} rounds of {args.requests} requests"
    )
    print(
        f"  {'in flight':>9}  {'req/s':>8}  {'CPU µs/req':>10}  {'median ms':>9}  {'p99 ms':>7}  {'p99/med':>7}  "
        f"{'no admission req/s':>18}  {'CPU µs/req':>10}"
    )
    for level in levels:
        s, b = results[str(level)]["admission"], results[str(level)]["baseline"]
        print(
            f"  {level:>9}  {s['rps']:>8.0f}  {s['cpu_us']:>10.1f}  {s['median_ms']:>9.2f}  {s['p99_ms']:>7.2f}  "
            f"{s['p99_ms'] / s['median_ms']:>7.2f}  {b['rps']:>18.0f}  {b['cpu_us']:>10.1f}"
        )
    if len(levels) > 1:
        lo, hi = results[str(levels[0])]["admission"], results[str(levels[-1])]["admission"]
        print(f"  req/s at {levels[-1]} / at {levels[0]} in flight: {hi['rps'] / lo['rps']:.3f}")


def _in_process_child(levels: list[int], total: int, rounds: int, call_us: int) -> None:
    import asyncio

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
    django.setup()
    from apps.inference.dispatch import call_with_failover
    from apps.inference.router import EndpointInfo

    ep = EndpointInfo(
        id=1,
        name="bench",
        kind="openai",
        base_url="http://127.0.0.1:9/v1",
        backend_model="m",
        api_key="",
        context_length=2048,
        vram_mb=0,
        rank=1,
        enabled=True,
        supports_embeddings=False,
    )

    from bench.chat_overhead import pct

    work = call_us / 1e6

    async def call(endpoint: Any) -> dict[str, Any]:
        t = time.perf_counter()
        while time.perf_counter() - t < work:
            pass
        await asyncio.sleep(0)
        return {}

    async def admitted() -> None:
        _, _, lease = await call_with_failover([ep], call)
        lease.release()

    async def bare() -> None:
        await call(ep)

    async def run(one: Any, concurrency: int) -> dict[str, float]:
        remaining = total
        latencies: list[float] = []

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t = time.perf_counter()
                await one()
                latencies.append((time.perf_counter() - t) * 1000)

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {
            "rps": total / wall,
            "cpu_us": cpu * 1e6 / total,
            "median_ms": pct(latencies, 0.5),
            "p99_ms": pct(latencies, 0.99),
        }

    async def main() -> dict[str, Any]:
        await run(admitted, max(levels))  # warm-up
        samples: dict[str, dict[str, list[dict[str, float]]]] = {
            str(c): {"admission": [], "baseline": []} for c in levels
        }
        for _ in range(rounds):
            for c in levels:
                samples[str(c)]["baseline"].append(await run(bare, c))
                samples[str(c)]["admission"].append(await run(admitted, c))
        return {
            c: {
                k: {m: _median([x[m] for x in v]) for m in ("rps", "cpu_us", "median_ms", "p99_ms")}
                for k, v in series.items()
            }
            for c, series in samples.items()
        }

    try:
        import uvloop

        results = uvloop.run(main())
    except ImportError:
        results = asyncio.run(main())
    print(json.dumps(results))


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, Any], levels: list[int]) -> None:
    rounds = results["rounds"]
    summary: dict[str, Any] = {}
    for level in levels:
        runs = [row[str(level)] for row in rounds]
        statuses: dict[str, int] = {}
        for run in runs:
            for status, n in run["medai"]["statuses"].items():
                statuses[status] = statuses.get(status, 0) + n
        s = {
            "stub_rps": _median([x["stub_direct"]["rps"] for x in runs]),
            "medai_rps": _median([x["medai"]["rps"] for x in runs]),
            "medai_cpu_ms": _median([x["medai"]["cpu_ms_per_request"] for x in runs]),
            "medai_median_ms": _median([x["medai"]["median_ms"] for x in runs]),
            "medai_p99_ms": _median([x["medai"]["p99_ms"] for x in runs]),
            "stub_median_ms": _median([x["stub_direct"]["median_ms"] for x in runs]),
            "stub_p99_ms": _median([x["stub_direct"]["p99_ms"] for x in runs]),
            "medai_statuses": statuses,
        }
        s["medai_over_stub"] = s["medai_rps"] / s["stub_rps"]
        s["p99_over_median"] = s["medai_p99_ms"] / s["medai_median_ms"]
        summary[str(level)] = s
    results["summary"] = summary
    print(
        f"\nOne medai process, {results['slots']} slots on the stub; medians of {len(rounds)} rounds "
        f"({rounds[0][str(levels[0])]['medai']['requests']} requests per series)"
    )
    print(
        f"  {'in flight':>9}  {'medai req/s':>11}  {'stub req/s':>10}  {'medai/stub':>10}  {'CPU ms/req':>10}  "
        f"{'median ms':>9}  {'p99 ms':>7}  {'p99/med':>7}  statuses"
    )
    for level in levels:
        s = summary[str(level)]
        print(
            f"  {level:>9}  {s['medai_rps']:>11.0f}  {s['stub_rps']:>10.0f}  {s['medai_over_stub']:>10.3f}  "
            f"{s['medai_cpu_ms']:>10.2f}  {s['medai_median_ms']:>9.1f}  {s['medai_p99_ms']:>7.1f}  {s['p99_over_median']:>7.2f}  "
            f"{s['medai_statuses']}"
        )
    if len(levels) > 1:
        lo, hi = summary[str(levels[0])], summary[str(levels[-1])]
        ratio = hi["medai_rps"] / lo["medai_rps"]
        results["summary"]["high_over_low"] = ratio
        per_round = [row[str(levels[-1])]["medai"]["rps"] / row[str(levels[0])]["medai"]["rps"] for row in rounds]
        print(
            f"  medai req/s at {levels[-1]} / at {levels[0]} in flight: {ratio:.3f} "
            f"(per round: {', '.join(f'{x:.3f}' for x in per_round)})"
        )
    print(f"  records: {results.get('records')}")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"admission_wait-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nJSON: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
