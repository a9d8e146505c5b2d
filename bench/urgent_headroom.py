"""Reserved headroom: how long a CRITICAL request waits for a slot while another process floods
the model with LOW work from another location, in slot turns (issue 10 item 3).

One model of 4 slots (``--slots``; the GPU policy's LOW row: no monitor runs) on the stub backend answering
each request after ``--turn`` seconds (``bench/stub_backend.py`` in ``slow`` mode). A *flood*
process (what a worker draining one location's batch is) sends ``--flood`` LOW requests at once
through ``dispatch.call_with_failover`` and measures each one's service time (one slot's turn, as
this run's machine gives it). Meanwhile an *asker* process (a web process) sends ``--critical``
CRITICAL requests from another location, one after the other, a random fraction of a turn apart,
and measures each one's start delay: from the call to the moment its backend call starts. It
also counts, from the stub's arrival log, how many LOW requests reached the backend between the
CRITICAL one's arrival and its start. The figure is the delay divided by the median LOW turn of
the same run, for the default reserve (25 %: 1 slot of 4: the CRITICAL request finds a slot free)
and for no reserve (0 %: it takes the next slot the flood frees, apps/gpu/slots.py
``Lease.release``), alternated over ``--rounds`` rounds; only requests that arrived while the
flood still had requests waiting count. Its own embedded Redis, no database; figures only::

    .venv/bin/python bench/urgent_headroom.py                  # 3 rounds, ~1 minute
    .venv/bin/python bench/urgent_headroom.py --rounds 5 --turn 0.5 --flood 80
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.chat_overhead import Env, pct  # noqa: E402

ENDPOINT_ID, FLOODING, ASKING = 1, 1, 2  # the model, the two locations


def _endpoint(base_url: str) -> Any:
    from apps.inference.router import EndpointInfo

    return EndpointInfo(
        id=ENDPOINT_ID,
        name="flooded",
        kind="openai",
        base_url=base_url,
        backend_model="m",
        api_key="",
        context_length=2048,
        vram_mb=0,
        rank=1,
        enabled=True,
        supports_embeddings=False,
    )


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
    import django

    django.setup()


def _stats(base_url: str) -> dict[str, Any]:
    import httpx

    return httpx.get(base_url.removesuffix("/v1") + "/_stats", timeout=10).json()


def flood_child(base_url: str, n: int) -> None:
    """LOW requests from one location, all at once; prints their service times (s)."""
    _setup()
    from apps.inference import backends
    from apps.inference.dispatch import call_with_failover

    ep = _endpoint(base_url)
    turns: list[float] = []

    async def one(i: int) -> None:
        payload = {"model": "m", "messages": [{"role": "user", "content": f"low-{i}"}]}

        async def call(e: Any) -> Any:
            t = time.perf_counter()
            answer = await backends.post_json(e, "/chat/completions", payload)
            turns.append(time.perf_counter() - t)
            return answer

        _, _, lease = await call_with_failover([ep], call, priority=0, location=FLOODING)
        lease.release()

    async def flood() -> None:
        await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(flood())
    print(json.dumps({"turns": turns}))


def ask_child(base_url: str, n: int, turn: float, seed: int) -> None:
    """CRITICAL requests from another location, one after the other while the flood runs; prints
    each one's start delay (s) and the LOW requests that started before it after it arrived."""
    _setup()
    from apps.inference import backends
    from apps.inference.dispatch import call_with_failover

    ep = _endpoint(base_url)
    rng = random.Random(seed)
    while _stats(base_url)["in_flight"] < 1:  # the flood has started
        time.sleep(0.005)
    results: list[dict[str, Any]] = []

    async def ask(k: int) -> None:
        name = f"critical-{k}"
        payload = {"model": "m", "messages": [{"role": "user", "content": name}]}
        arrived = len(_stats(base_url)["log"])
        started: list[float] = []

        def call(e: Any) -> Any:
            started.append(time.perf_counter())
            return backends.post_json(e, "/chat/completions", payload)

        t = time.perf_counter()
        _, _, lease = await call_with_failover([ep], call, priority=3, location=ASKING)
        lease.release()
        log = _stats(base_url)["log"]
        at = log.index(name)
        results.append(
            {
                "delay": started[0] - t,
                "low_started_before": sum(1 for entry in log[arrived:at] if entry.startswith("low-")),
                # LOW requests still started after it arrived: the flood had work waiting for slots
                "during_flood": any(entry.startswith("low-") for entry in log[arrived:]),
            }
        )

    async def run() -> None:
        for k in range(n):
            await asyncio.sleep(rng.uniform(0, turn))
            await ask(k)

    asyncio.run(run())
    print(json.dumps({"asks": results}))


def one_series(env: Env, reserve: float, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    env_vars = {**env.env, "BENCH_RESERVE": str(reserve), "BENCH_SLOTS": str(args.slots)}
    subprocess.run(
        [sys.executable, __file__, "--child", "table", env.stub_url], env=env_vars, cwd=ROOT, check=True, timeout=60
    )
    import httpx

    httpx.post(
        env.stub_url.removesuffix("/v1") + "/_mode", json={"mode": "slow", "delay": args.turn, "log": []}, timeout=5
    ).raise_for_status()
    flood = subprocess.Popen(
        [sys.executable, __file__, "--child", "flood", env.stub_url, "--flood", str(args.flood)],
        env=env_vars,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    ask = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "ask",
            env.stub_url,
            "--critical",
            str(args.critical),
            "--turn",
            str(args.turn),
            "--seed",
            str(seed),
        ],
        env=env_vars,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out, _ = flood.communicate(timeout=600)
    if ask.returncode or flood.returncode:
        raise RuntimeError(f"a child failed:\n{ask.stderr[-3000:]}")
    turns = json.loads(out.strip().splitlines()[-1])["turns"]
    asks = json.loads(ask.stdout.strip().splitlines()[-1])["asks"]
    return {"turns": turns, "asks": asks, "max_in_flight": _stats(env.stub_url)["max_in_flight"]}


def table_child() -> None:
    """Share the policy table with this run's reserve (what saving PolicySettings in admin does)."""
    _setup()
    from apps.gpu import policy, shared

    shared.flush_shared()
    levels = [dict(row) for row in policy.DEFAULT_TABLE["levels"]]
    levels[0]["concurrency"] = int(os.environ["BENCH_SLOTS"])  # the LOW row applies: no monitor runs
    table = {**policy.DEFAULT_TABLE, "levels": levels, "urgent_reserve_percent": float(os.environ["BENCH_RESERVE"])}
    shared.publish("table", table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turn", type=float, default=0.2, help="the stub's service time per request (s)")
    parser.add_argument("--flood", type=int, default=80, help="LOW requests sent at once per series")
    parser.add_argument("--critical", type=int, default=8, help="CRITICAL requests per series")
    parser.add_argument("--slots", type=int, default=4, help="the model's concurrency")
    parser.add_argument("--port-base", type=int, default=18260)
    parser.add_argument("--settings", default="medai.settings")
    parser.add_argument("--child", choices=["flood", "ask", "table"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("url", nargs="?")
    args = parser.parse_args()
    if args.child == "flood":
        return flood_child(args.url, args.flood)
    if args.child == "ask":
        return ask_child(args.url, args.critical, args.turn, args.seed)
    if args.child == "table":
        return table_child()

    env = Env(args)
    try:
        env.start(
            "stub",
            [sys.executable, str(ROOT / "bench" / "stub_backend.py"), "--port", str(args.port_base), "--mode", "ok"],
            env.stub_url.removesuffix("/v1") + "/health",
        )
        series: dict[str, list[dict[str, Any]]] = {"25": [], "0": []}
        for r in range(args.rounds):
            for reserve in ("25", "0") if r % 2 == 0 else ("0", "25"):
                series[reserve].append(one_series(env, float(reserve), args, seed=r))
                print(f"round {r + 1}, reserve {reserve} %: done", file=sys.stderr, flush=True)
    finally:
        env.close()
    report(series, args)


def report(series: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(
        f"\nurgent headroom: {args.slots} slots, stub turn {args.turn:g} s, {args.flood} LOW at once per series, "
        f"{args.critical} CRITICAL per series, {args.rounds} rounds"
    )
    print(
        "  reserve   LOW turn (median)   CRITICAL start delay / turn: median   p90    max   LOW started before it (max)"
    )
    for reserve, runs in series.items():
        turn = statistics.median([t for run in runs for t in run["turns"]])
        asks = [a for run in runs for a in run["asks"] if a["during_flood"]]  # the flood still had work queued
        ratios = [a["delay"] / turn for a in asks]
        lows = [a["low_started_before"] for a in asks]
        print(
            f"  {reserve:>5} %   {turn * 1000:>12.1f} ms   {statistics.median(ratios):>33.3f}  "
            f"{pct(ratios, 0.9):>5.3f}  {max(ratios):>5.3f}   {max(lows):>6}  "
            f"({len(asks)} asked during a flood; max in flight at the stub: {max(r['max_in_flight'] for r in runs)})"
        )


if __name__ == "__main__":
    main()
