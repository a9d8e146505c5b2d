"""Another process flooding one model with LOW work from one location, through the same admission
(``dispatch.call_with_failover``: GPU policy, slots, the line) as medai's workers and web processes.

    python -m tests.gpu.flood BASE_URL ENDPOINT_ID LOCATION_ID N [PRIORITY]

Sends N requests at once, each with the message ``low-<i>``, and exits when all are answered.
Its slots are counted across processes through Redis (``REDIS_URL``, inherited from the test)."""

from __future__ import annotations

import asyncio
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
    import django

    django.setup()
    from apps.inference import backends
    from apps.inference.dispatch import call_with_failover
    from apps.inference.router import EndpointInfo

    base_url, endpoint_id, location, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    priority = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    ep = EndpointInfo(
        id=endpoint_id,
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

    async def one(i: int) -> None:
        payload = {"model": "m", "messages": [{"role": "user", "content": f"low-{i}"}]}
        _, _, lease = await call_with_failover(
            [ep], lambda e: backends.post_json(e, "/chat/completions", payload), priority=priority, location=location
        )
        lease.release()

    async def flood() -> None:
        await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(flood())
    print("FLOOD DONE", flush=True)


if __name__ == "__main__":
    main()
