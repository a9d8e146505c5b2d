"""The delay from a task's state change to its event in the browser, with its baseline in the same run.

A real medai web process (uvicorn, the Redis channel layer on an embedded redis-server, SQLite)
serves the clinician's Tasks page to Debian's Chromium (Playwright). Every websocket frame the page
receives is stamped in the page (``performance.timeOrigin + performance.now()``: the machine's wall
clock, as ``time.time()`` here) by a wrapper installed before the page's own scripts run.

This process is a second medai process (the worker's place): it makes the state changes through
the services, as the worker does, and the web process's consumer carries them to the browser.
Interleaved, round by round:

* **cancel**: a queued task of the signed-in clinician cancelled through ``queue.cancel_task``
  (transaction, queue entry deleted, audit event, commit, the on-commit push through Redis);
  timed from just before the call to the ``task.update`` frame ``cancelled`` in the page;
* **submit**: ``POST /v1/async/submit`` over HTTP to the web process (authentication, governance,
  the queue write, audit, commit, push), timed from just before the request to the ``queued`` frame;
* **baseline**: a ``task.update`` frame sent straight to the user's group with ``group_send`` from
  this process: Redis, the consumer and the browser, with no service, database or commit.

The ratios reported are each series' median (and p95) over the baseline's of the same run.

    .venv/bin/python bench/ws_delay.py --rounds 200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
PASSWORD = "bench-password-123"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

# Before the page's scripts: every frame of every socket is kept with the time it arrived.
STAMP_FRAMES = """
(() => {
  const Native = window.WebSocket;
  window.__frames = [];
  window.WebSocket = function (url, protocols) {
    const socket = protocols === undefined ? new Native(url) : new Native(url, protocols);
    socket.addEventListener("message", (event) => {
      const at = performance.timeOrigin + performance.now();
      try { window.__frames.push({at: at, frame: JSON.parse(event.data)}); } catch (e) {}
    });
    return socket;
  };
  window.WebSocket.prototype = Native.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="medai-wsdelay-"))
        from medai.embedded import start_embedded_redis

        redis_url = start_embedded_redis(self.tmp / "redis")
        self.port = free_port()
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "medai.settings",
                "MEDAI_VAR_DIR": str(self.tmp / "var"),
                "REDIS_URL": redis_url,
                "LOG_LEVEL": "WARNING",
                "DEBUG": "0",
                "MEDAI_ENV": "test",
                "JWT_ACCESS_TTL": "86400",
                "MEDAI_RATE_LIMIT_KEY_RATE": "0",
                "MEDAI_RATE_LIMIT_USER_RATE": "0",
                "MEDAI_RATE_LIMIT_IP_RATE": "0",
                "MEDAI_INFLIGHT_PER_KEY": "0",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                # Playwright's sync API runs an event loop in this thread: Django would refuse the ORM calls.
                "DJANGO_ALLOW_ASYNC_UNSAFE": "true",
            }
        )
        os.environ.pop("DATABASE_URL", None)
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(self.tmp / "medai.log", "wb")

    def setup(self) -> None:
        import django

        django.setup()
        from django.core.management import call_command

        from apps.accounts.models import Location, Organization, User
        from apps.accounts.services import authenticate_bearer, issue_tokens
        from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint

        call_command("migrate", verbosity=0)
        org = Organization.objects.create(name="Bench Hospital")
        self.location = Location.objects.create(organization=org, code="ward", name="Bench ward")
        self.user = User.objects.create_user("clinician", password=PASSWORD, role=User.Role.CLINICIAN, organization=org)
        self.user.locations.add(self.location)
        route, _ = AgentRoute.objects.get_or_create(agent_type="Chat")
        # No worker runs: submitted tasks stay queued until this process cancels them.
        endpoint = ModelEndpoint.objects.create(
            name="nowhere", base_url="http://127.0.0.1:9/v1", served_model_id="none", context_length=2048
        )
        AgentRouteEntry.objects.create(route=route, endpoint=endpoint, position=0)
        self.token = issue_tokens(self.user, self.location).access_token
        self.principal = authenticate_bearer(self.token)[1]

    def start(self) -> None:
        argv = [sys.executable, "-m", "uvicorn", "medai.asgi:application", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--no-access-log", "--log-level", "warning", "--lifespan", "off"]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.tmp / "medai.log").read_text()[-2000:])
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("medai did not come up")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        from medai import embedded

        for server in embedded._servers:
            try:
                server.shutdown(nosave=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- the series --------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        import httpx
        from channels.layers import get_channel_layer
        from playwright.sync_api import sync_playwright

        from apps.inference import push
        from apps.inference.models import InferenceTask
        from apps.inference.queue import cancel_task

        base = f"http://127.0.0.1:{self.port}"
        http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        layer = get_channel_layer()
        # Playwright's sync API holds this thread's event loop: the group_send runs on a loop of its own.
        side = asyncio.new_event_loop()
        threading.Thread(target=side.run_forever, daemon=True).start()

        def group_send(name: str, message: dict[str, Any]) -> None:
            asyncio.run_coroutine_threadsafe(layer.group_send(name, message), side).result(10)

        group = f"user.{self.user.pk}"
        series: dict[str, list[float]] = {"cancel": [], "submit": [], "baseline": []}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=FLAGS)
            page = browser.new_page()
            page.add_init_script(STAMP_FRAMES)
            page.goto(base + "/tasks/")
            page.fill("#username", "clinician")
            page.fill("#password", PASSWORD)
            page.fill("#location", "ward")
            page.click("#login-button")
            page.wait_for_selector("#page-content:not([hidden])")
            page.wait_for_function("window.__frames.some(f => f.frame.type === 'hello')", timeout=15000)

            def arrival(task_id: str, status: str, timeout: float = 10.0) -> float:
                handle = page.wait_for_function(
                    """([id, status]) => {
                        for (const f of window.__frames) {
                          const d = f.frame.data || {};
                          const items = f.frame.type === "task.updates" ? d.updates : [d];
                          for (const u of items || []) if (u.task_id === id && u.status === status) return f.at;
                        }
                        return null;
                    }""",
                    arg=[task_id, status],
                    timeout=timeout * 1000,
                    polling=5,
                )
                return float(handle.json_value()) / 1000

            for i in range(self.args.warmup + self.args.rounds):
                order = ["submit", "cancel", "baseline"]
                order = order[i % 3 :] + order[: i % 3]  # who goes first rotates
                queued: str | None = None
                measured: dict[str, float] = {}
                for name in order:
                    if name == "submit":
                        t0 = time.time()
                        answer = http.post(
                            "/v1/async/submit",
                            json={
                                "agent_type": "Chat",
                                "messages": [{"role": "user", "content": f"ws delay {i} {uuid.uuid4().hex}"}],
                                "priority": "low",
                            },
                        )
                        answer.raise_for_status()
                        queued = answer.json()["task_id"]
                        measured["submit"] = arrival(queued, "queued") - t0
                    elif name == "cancel":
                        if queued is None:  # cancel goes first this round: queue one, untimed
                            queued = http.post(
                                "/v1/async/submit",
                                json={
                                    "agent_type": "Chat",
                                    "messages": [{"role": "user", "content": f"ws {i} {uuid.uuid4().hex}"}],
                                },
                            ).json()["task_id"]
                            arrival(queued, "queued")
                        task = InferenceTask.objects.get(id=queued)
                        t0 = time.time()
                        cancel_task(self.principal, task)
                        measured["cancel"] = arrival(queued, "cancelled") - t0
                    else:
                        probe = str(uuid.uuid4())
                        t0 = time.time()
                        group_send(
                            group,
                            {
                                "type": "task.update",
                                "data": {"task_id": probe, "status": "probe", "changed_at": push.now_iso()},
                            },
                        )
                        measured["baseline"] = arrival(probe, "probe") - t0
                if order.index("submit") > order.index("cancel") and queued is not None:
                    cancel_task(self.principal, InferenceTask.objects.get(id=queued))  # untimed: keep the queue empty
                if i >= self.args.warmup:
                    for name, seconds in measured.items():
                        series[name].append(seconds * 1000)
                page.evaluate("window.__frames = window.__frames.filter(f => f.frame.type === 'hello')")
            shots = RESULTS / "ws_delay_tasks_page.png"
            RESULTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots), full_page=True)
            browser.close()
        return summarize(series)


def summarize(series: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    floor = statistics.median(series["baseline"])
    floor95 = pct(series["baseline"], 0.95)
    for name, values in series.items():
        med, p95 = statistics.median(values), pct(values, 0.95)
        out[name] = {
            "n": len(values),
            "median_ms": round(med, 2),
            "p95_ms": round(p95, 2),
            "median_ratio": round(med / floor, 2) if floor else None,
            "p95_ratio": round(p95 / floor95, 2) if floor95 else None,
        }
    return out


def report(results: dict[str, Any]) -> None:
    print("\nstate change -> websocket frame in the browser (ms; ratio to the baseline of this run)")
    print(f"{'series':<10}{'n':>6}{'median':>10}{'p95':>10}{'median ×':>11}{'p95 ×':>9}")
    for name, r in results["series"].items():
        print(
            f"{name:<10}{r['n']:>6}{r['median_ms']:>10.2f}{r['p95_ms']:>10.2f}"
            f"{r['median_ratio']:>11.2f}{r['p95_ratio']:>9.2f}"
        )
    print("baseline: group_send straight to the user's group (Redis, consumer, browser; no service or commit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    bench = Bench(args)
    try:
        bench.setup()
        bench.start()
        series = bench.run()
    finally:
        bench.close()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    results = {
        "bench": "ws_delay",
        "commit": commit.stdout.strip(),
        "rounds": args.rounds,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "series": series,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ws_delay.json").write_text(json.dumps(results, indent=2))
    report(results)


if __name__ == "__main__":
    main()
