"""The GPU orchestration on the embedded default itself: run it beside ``make run``.

    make run                                          # terminal 1 (simulated GPU, bundled llama.cpp)
    .venv/bin/python bench/embedded_walk.py           # terminal 2, ~2 minutes

What an admin would do in the admin, done through the same models, against the running platform:

1. Add a second supervised llama.cpp server of the bundled SmolLM2 (``smollm2-135m-b``, on
   ``MEDAI_LLAMA_PORT + 1``, declared at 2,500 MiB so that it no longer fits at CRITICAL
   pressure), appended to the ``Chat`` route after the bundled one; the monitor starts it.
2. Pressure walk: the simulated GPU's memory override (the *Simulated GPU* admin rows) goes
   20 % → 60 % → 75 % → 92 % → 20 %; every change of what ``GET /v1/gpu/status`` reports
   (pressure level, allowed models, batch size, concurrency) is printed with its time.
3. Kill under load: client threads ask ``Chat``; the bundled server (``smollm2-135m``) is killed
   with SIGKILL; traffic fails over to ``smollm2-135m-b`` and comes back when the monitor has
   restarted the bundled server.
4. Removes the second server and its endpoint again (the monitor stops it) and the override.

Reads ``var/`` (or ``MEDAI_VAR_DIR``): the same SQLite database as ``make run``, and the demo
password (``MEDAI_DEMO_PASSWORD`` or ``var/demo-password``). Not for PostgreSQL deployments
as is: set ``DATABASE_URL`` to the platform's database to use it there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gpu_failover import _wait, kill_under_load, pressure_walk  # noqa: E402

EXTRA = "smollm2-135m-b"
BUNDLED = "smollm2-135m"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=f"http://127.0.0.1:{os.environ.get('MEDAI_PORT', '8000')}")
    parser.add_argument("--load-seconds", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=3)
    args = parser.parse_args()

    var = Path(os.environ.get("MEDAI_VAR_DIR", str(ROOT / "var")))
    os.environ.update(MEDAI_VAR_DIR=str(var), DJANGO_SETTINGS_MODULE="medai.settings", LOG_LEVEL="WARNING")
    os.environ.setdefault("MEDAI_ENV", "development")  # as `make run`: the keys it generated in var/
    password = os.environ.get("MEDAI_DEMO_PASSWORD") or (var / "demo-password").read_text().strip()
    login = httpx.post(
        args.url + "/v1/auth/login", timeout=10, json={"username": "admin", "password": password, "location_id": "demo"}
    )
    if login.status_code != 200:
        raise SystemExit(f"cannot log in as admin at {args.url} (is `make run` running?): {login.text}")
    headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
    status = httpx.get(args.url + "/v1/gpu/status", headers=headers, timeout=10).json()
    if not status.get("simulated"):
        raise SystemExit("this walk steers the simulated GPU; the platform runs on real GPU data")

    import django

    django.setup()
    from apps.gpu.models import ModelServer, SimulatedGpu

    bundled = ModelServer.objects.get(endpoint__name=BUNDLED)
    print(f"platform {args.url}; GPU data simulated; bundled server {bundled.name!r} is {bundled.state}")
    extra = add_second_server(bundled.port + 1)
    try:
        took = _wait(
            "second server running", lambda: ModelServer.objects.filter(pk=extra.pk, state="running").exists(), 180
        )
        print(f"monitor started {extra.name!r} on port {extra.port} in {took:.1f} s")
        time.sleep(6)  # the web process's route cache (MEDAI_ROUTE_CACHE_SECONDS) sees the new model

        def steer(percent: float | None) -> None:
            gpu, _ = SimulatedGpu.objects.get_or_create(index=0)
            gpu.memory_used_override_percent = percent
            gpu.save()

        pressure_walk(args.url, headers, steer)
        kill_under_load(args.url, headers, args.load_seconds, args.threads, primary=BUNDLED, model="Chat")
    finally:
        SimulatedGpu.objects.filter(index=0).update(memory_used_override_percent=None)
        remove_second_server(extra)
        print(f"\nremoved {extra.name!r} and its endpoint; the monitor stops it")


def add_second_server(port: int):
    from apps.gpu.models import ModelServer
    from apps.inference.bundled import ensure_bundled_server
    from apps.inference.models import AgentRoute, AgentRouteEntry

    server = ensure_bundled_server(port, endpoint_name=EXTRA, parallel=2, vram_mb=2500)
    ModelServer.objects.filter(pk=server.pk).update(vram_mb=2500)
    endpoint = server.endpoint
    endpoint.rank, endpoint.vram_mb = 20, 2500
    endpoint.save()
    route = AgentRoute.objects.get(agent_type="Chat")
    AgentRouteEntry.objects.get_or_create(route=route, endpoint=endpoint, defaults={"position": 99})
    return server


def remove_second_server(server) -> None:
    from apps.inference.models import ModelEndpoint

    endpoint_id = server.endpoint_id
    server.delete()
    ModelEndpoint.objects.filter(pk=endpoint_id).delete()


if __name__ == "__main__":
    main()
