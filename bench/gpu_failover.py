"""The GPU orchestration end to end, with real processes: web (uvicorn), ``manage.py monitor``
(simulated GPU) supervising two llama.cpp servers on the bundled SmolLM2, and a client load.

    .venv/bin/python bench/gpu_failover.py [--port 18412] [--load-seconds 40] [--threads 3]

1. Pressure walk: the simulated GPU is steered through its override file (MEDAI_GPU_SIM_FILE)
   20 % → 60 % → 75 % → 92 % → 20 %; GET /v1/gpu/status is polled and every change of pressure
   level, allowed models, batch size and concurrency is printed with its time.
2. Kill under load: client threads send non-streamed chat completions to the agent type
   ``Clinical`` (primary rank 1, secondary rank 2); the primary llama.cpp server is killed with
   SIGKILL; the script reports failed requests, when the monitor had it running again, and when
   the primary answered again.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18412, help="web port; llama servers on port-2 and port-1")
    parser.add_argument("--load-seconds", type=float, default=40.0)
    parser.add_argument("--threads", type=int, default=3)
    args = parser.parse_args()

    var = tempfile.mkdtemp(prefix="medai-bench-failover-")
    sim_file = Path(var) / "sim.json"
    sim_file.write_text("{}")
    os.environ.setdefault("MEDAI_ENV", "test")  # a throwaway var dir: its keys are generated there
    os.environ.update(
        MEDAI_VAR_DIR=var,
        DJANGO_SETTINGS_MODULE="medai.settings",
        LOG_LEVEL="WARNING",
        MEDAI_GPU_PROVIDER="simulated",
        MEDAI_GPU_SIM_FILE=str(sim_file),
    )
    from medai.embedded import start_embedded_redis

    os.environ["REDIS_URL"] = start_embedded_redis(Path(var) / "redis")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    token = _seed(args.port)

    procs = []
    env = {**os.environ}
    python = sys.executable
    try:
        procs.append(
            subprocess.Popen(
                [python, "manage.py", "monitor"],
                cwd=ROOT,
                env=env,
                stdout=open(Path(var) / "monitor.log", "wb"),
                stderr=subprocess.STDOUT,
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    python,
                    "-m",
                    "uvicorn",
                    "medai.asgi:application",
                    "--port",
                    str(args.port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=ROOT,
                env=env,
                stdout=open(Path(var) / "web.log", "wb"),
                stderr=subprocess.STDOUT,
            )
        )
        base = f"http://127.0.0.1:{args.port}"
        headers = {"Authorization": f"Bearer {token}"}
        _wait("web and both model servers up", lambda: _servers_running() == 2 and _ok(base + "/healthz"), 180)
        print(f"web on {base}; monitor supervising 2 llama.cpp servers; var dir {var}")
        pressure_walk(
            base,
            headers,
            lambda percent: sim_file.write_text(
                json.dumps({"0": {"memory_percent": percent}} if percent is not None else {})
            ),
        )
        kill_under_load(base, headers, args.load_seconds, args.threads, primary="primary", model="Clinical")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _seed(port: int) -> str:
    from apps.accounts.models import Location, Organization, User
    from apps.accounts.services import issue_tokens
    from apps.gpu.models import ModelServer
    from apps.inference.bundled import ensure_bundled_server
    from apps.inference.models import AgentRoute, AgentRouteEntry

    org = Organization.objects.create(name="Bench")
    loc = Location.objects.create(organization=org, code="demo", name="Demo")
    user = User.objects.create_user("bench", password="bench-password-123", role=User.Role.CLINICIAN, organization=org)
    user.locations.add(loc)
    route = AgentRoute.objects.get(agent_type="Clinical")
    for rank, (name, p, vram) in enumerate([("primary", port - 2, 6000), ("secondary", port - 1, 400)], start=1):
        server = ensure_bundled_server(p, endpoint_name=name, parallel=2, threads=1, vram_mb=vram)
        ModelServer.objects.filter(pk=server.pk).update(vram_mb=vram)
        server.endpoint.rank = rank
        server.endpoint.vram_mb = vram
        server.endpoint.save()
        AgentRouteEntry.objects.create(route=route, endpoint=server.endpoint, position=rank)
    return issue_tokens(user, loc).access_token


def _servers_running() -> int:
    from apps.gpu.models import ModelServer

    return ModelServer.objects.filter(state="running").count()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(what: str, check, timeout: float) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"{what}: not within {timeout} s")
        time.sleep(0.1)
    return time.monotonic() - t0


def pressure_walk(base: str, headers: dict[str, str], steer: Callable[[float | None], object]) -> None:
    """Steer the simulated GPU's memory (``steer(percent)``, None clears it) and print every change
    of what GET /v1/gpu/status reports."""
    print("\n== simulated memory pressure walk (GET /v1/gpu/status) ==")
    t0 = time.monotonic()
    last = None

    def poll(seconds: float) -> None:
        nonlocal last
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            s = httpx.get(base + "/v1/gpu/status", headers=headers, timeout=5).json()
            g = s["gpus"][0] if s["gpus"] else {}
            p = s["policy"]
            now = (s["pressure_level"], json.dumps(p["allowed_models"]), p["batch_size"], p["concurrency"])
            if now != last:
                print(
                    f"  t={time.monotonic() - t0:5.1f}s  memory {g.get('memory', {}).get('used_percent', '?'):>5}%"
                    f"  level {now[0]:<8} models {now[1]:<26} batch {now[2]}  concurrency {now[3]}"
                    f"  simulated={s['simulated']}"
                )
                last = now
            time.sleep(0.25)

    for percent, seconds in ((20, 5), (60, 5), (75, 5), (92, 5), (20, 40)):
        steer(percent)
        print(f"  t={time.monotonic() - t0:5.1f}s  -> override memory to {percent}%")
        poll(seconds)
    steer(None)


def kill_under_load(
    base: str, headers: dict[str, str], seconds: float, threads: int, *, primary: str, model: str
) -> None:
    """Load ``model`` from client threads, SIGKILL the server of endpoint ``primary``, report."""
    from apps.gpu.models import ModelServer

    print(f"\n== SIGKILL the {primary} llama.cpp server under load ({threads} client threads) ==")
    results: list[tuple[float, int, str]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def load() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                r = client.post(
                    base + "/v1/chat/completions",
                    headers=headers,
                    json={"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Say OK."}]},
                )
                answered_by = r.json().get("model", "") if r.status_code == 200 else r.text[:200]
                results.append((time.monotonic() - t0, r.status_code, answered_by))

    workers = [threading.Thread(target=load) for _ in range(threads)]
    for w in workers:
        w.start()
    time.sleep(min(5.0, seconds / 4))
    server = ModelServer.objects.get(endpoint__name=primary)
    restarts = server.restarts
    os.kill(server.pid, signal.SIGKILL)
    killed = time.monotonic() - t0
    print(f"  t={killed:5.1f}s  killed pid {server.pid} ({server.name})")
    running = _wait(
        "restarted",
        lambda: ModelServer.objects.filter(pk=server.pk, state="running", restarts__gt=restarts).exists(),
        60,
    )
    print(f"  t={killed + running:5.1f}s  monitor reports {primary} running again ({running:.1f} s after the kill)")
    back = _wait("primary answers", lambda: any(t > killed + running and m == primary for t, _, m in results), 60)
    print(
        f"  t={killed + running + back:5.1f}s  {primary} answering requests again "
        f"({running + back:.1f} s after the kill)"
    )
    while time.monotonic() - t0 < seconds:
        time.sleep(0.2)
    stop.set()
    for w in workers:
        w.join(60)
    before = Counter(m for t, s, m in results if t < killed and s == 200)
    after = Counter(m for t, s, m in results if t >= killed and s == 200)
    failed = [(round(t, 1), s, m) for t, s, m in results if s != 200]
    print(f"  requests: {len(results)}; failed: {len(failed)} {failed[:3]}")
    print(f"  answered before the kill: {dict(before)}; after: {dict(after)}")


if __name__ == "__main__":
    main()
