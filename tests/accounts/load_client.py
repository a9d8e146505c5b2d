"""One client process of the multi-process governance tests: ``--clients`` concurrent clients
(asyncio + httpx) send chat completions to medai's web processes (``--url``, round robin) and
report what they were answered, as one JSON line on stdout.

    --until-refused K   each client stops after K quota refusals in a row (or --max requests)
    --seconds S         each client sends for S seconds (a rate-limit run)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any

import httpx


async def client(i: int, args: argparse.Namespace, http: httpx.AsyncClient, out: dict[str, Any]) -> None:
    refused_in_a_row, sent = 0, 0
    deadline = time.monotonic() + args.seconds if args.seconds else None
    body = {"model": "stub-a", "max_tokens": 1, "messages": [{"role": "user", "content": f"q{i}"}]}
    while sent < args.max:
        if deadline is not None and time.monotonic() >= deadline:
            return
        url = args.url[(i + sent) % len(args.url)]
        sent += 1
        started = time.time()
        try:
            r = await http.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": args.auth})
        except httpx.HTTPError as exc:
            out["codes"][type(exc).__name__] += 1
            continue
        finally:
            out["sent_first"] = min(out["sent_first"], started)
            out["answered_last"] = max(out["answered_last"], time.time())
        if r.status_code == 200:
            out["admitted"] += 1
            out["tokens"] += r.json()["usage"]["total_tokens"]
            out["first"] = min(out["first"], started)
            out["last"] = max(out["last"], started)
            refused_in_a_row = 0
        else:
            code = r.json().get("error", {}).get("code", str(r.status_code))
            out["codes"][code] += 1
            refused_in_a_row += 1
            if args.until_refused and refused_in_a_row >= args.until_refused:
                return
            await asyncio.sleep(args.pause)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", action="append", required=True)
    parser.add_argument("--auth", required=True)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--max", type=int, default=1000)
    parser.add_argument("--until-refused", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--start-at", type=float, default=0.0, help="epoch time all processes start together")
    args = parser.parse_args()
    out: dict[str, Any] = {
        "admitted": 0,
        "tokens": 0,
        "codes": Counter(),
        "first": float("inf"),  # when the first and the last admitted requests were sent
        "last": 0.0,
        "sent_first": float("inf"),  # when any request was first sent, and the last answer came
        "answered_last": 0.0,
    }
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        if args.start_at:
            await asyncio.sleep(max(0.0, args.start_at - time.time()))
        await asyncio.gather(*(client(i, args, http, out) for i in range(args.clients)))
    print(json.dumps({**out, "codes": dict(out["codes"])}))


if __name__ == "__main__":
    asyncio.run(main())
