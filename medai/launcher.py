"""One command for the embedded default: ``python -m medai.launcher`` (``make run``).

Starts an embedded Redis (unless ``REDIS_URL`` is set), migrates, collects static files, creates
the demo tenant and registers the bundled llama.cpp servers (chat, and embeddings on the same GGUF)
as supervised ModelServers, then runs the monitor (GPU sampling, health checks; it starts and
supervises those llama.cpp servers), the web server (uvicorn) and the worker (qcluster) as
children. Ready means both bundled models are seen serving.

Its output is JSON lines, one record per line, like every medai process's log (apps/audit/logging.py):
its own (``"process": "launcher"``), and each child's record with ``"process"`` naming the child
(a line a child printed that is not JSON is wrapped in a record, cleaned of credentials and PHI).
On a terminal it also prints a banner with the demo password and examples to paste.

It supervises what it owns: the embedded Redis, if it dies, is started again at once on the same
unix socket (every child keeps its ``REDIS_URL`` and reconnects by itself); a child that dies is
started again with a growing delay (1 s, 2 s, 4 s … 30 s), and one that keeps dying (more than
``RESTART_LIMIT`` times within ``RESTART_WINDOW`` seconds) stops the launch. Ctrl-C or SIGTERM
stops every child (terminate, wait, kill) and then Redis.

Environment: MEDAI_PORT (8000), MEDAI_LLAMA_PORT (8081), MEDAI_EMBED_PORT (8082: the bundled
embeddings server, a second llama-server on the same GGUF), MEDAI_LLAMA=0 (no local model server),
MEDAI_EMBEDDINGS=0 (the chat server but not the embeddings server),
MEDAI_ACCESS_LOG=1 (uvicorn's access log; credentials in URLs are redacted either way),
MEDAI_VAR_DIR (var/), REDIS_URL, DATABASE_URL, MEDAI_DEMO_PASSWORD, PROMETHEUS_MULTIPROC_DIR
(var/metrics: where every child keeps its metrics for /metrics; emptied at start), and MEDAI_ENV,
which defaults to ``development`` here (keys generated into var/ on the first run); any other value
applies production rules to the secrets (medai/secrets.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
from django.core.exceptions import ImproperlyConfigured

from apps.audit.credentials import redact_credentials
from apps.audit.logging import redact_log_text
from apps.gpu.llamacpp import (
    BUNDLED_CHAT_ENDPOINT,
    BUNDLED_EMBEDDINGS_ENDPOINT,
    NotInstalled,
    find_bundled_model,
    find_llama_server,
)
from medai.embedded import EmbeddedRedis
from medai.env import DEFAULT_EMBED_PORT, DEFAULT_LLAMA_PORT, envbool, envsecret
from medai.secrets import load, private_dir

ROOT = Path(__file__).resolve().parent.parent
READY_LINE = "medai is ready"
STOP_TIMEOUT = 10.0
RESTART_LIMIT = 5  # restarts of one child within RESTART_WINDOW before the launch gives up
RESTART_WINDOW = 60.0
RESTART_MAX_DELAY = 30.0


class LaunchError(RuntimeError):
    pass


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def emit(record: dict[str, object]) -> None:
    """One JSON log line on stdout (the launcher's, or a child's relabelled)."""
    sys.stdout.write(json.dumps(record, default=str) + "\n")
    sys.stdout.flush()


def log(message: str, level: str = "INFO", **fields: object) -> None:
    """A line of the launcher's own, JSON like every medai process's (apps/audit/logging.py)."""
    emit(
        {
            "ts": _now(),
            "level": level,
            "logger": "medai.launcher",
            "process": "launcher",
            "msg": redact_credentials(message),
            **fields,
        }
    )


def relabel(process: str, line: str) -> dict[str, object]:
    """A child's output line as a JSON record naming the child: its own JSON log record with
    ``process`` added, or (a line some library printed, a traceback before logging was set up)
    a record wrapping the text, cleaned as every log line is (credentials, identifiers, PHI)."""
    text = line.rstrip("\r\n")
    try:
        record = json.loads(text)
    except ValueError:
        record = None
    if isinstance(record, dict) and "msg" in record:
        return {**record, "process": process} if "process" not in record else record
    return {
        "ts": _now(),
        "level": "INFO",
        "logger": f"{process}.output",
        "process": process,
        "msg": redact_log_text(text),
    }


class Child:
    """A child process in its own process group, its output copied to ours as JSON lines naming it."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.restarts: list[float] = []  # monotonic times of this child's restarts
        self.due: float | None = None  # when a dead child is to be started again
        self._spawn()

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = threading.Thread(target=self._copy_output, args=(self.proc,), daemon=True)
        self._pump.start()

    def restart(self) -> None:
        _signal_group(self.proc.pid, signal.SIGKILL)  # whatever the dead child left behind
        self._pump.join(2)
        self.restarts.append(time.monotonic())
        self.due = None
        self._spawn()

    def restart_delay(self, now: float) -> float | None:
        """Seconds to wait before the next restart, or None when it died too often to go on."""
        recent = [t for t in self.restarts if now - t < RESTART_WINDOW]
        if len(recent) >= RESTART_LIMIT:
            return None
        return min(2.0 ** len(recent), RESTART_MAX_DELAY)

    def _copy_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if raw.strip():
                emit(relabel(self.name, raw.decode(errors="replace")))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the child (it stops its own children: qcluster its workers), wait, then SIGKILL
        whatever is left of its process group."""
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} did not stop within {timeout:.0f}s; killing it")
        # Whatever is left of the group (the child itself or its own children) is killed.
        _signal_group(self.proc.pid, signal.SIGKILL)
        if self.alive():
            self.proc.wait(timeout)
        self._pump.join(2)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        port = int(raw)
    except ValueError:
        raise LaunchError(f"{name} must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise LaunchError(f"{name} must be between 1 and 65535, got {port}")
    return port


def var_dir() -> Path:
    try:
        return private_dir(Path(os.environ.get("MEDAI_VAR_DIR", str(ROOT / "var"))))
    except ImproperlyConfigured as exc:
        raise LaunchError(str(exc)) from None


def check_secrets(env: dict[str, str], var: Path) -> None:
    """Resolve the secrets once before any child starts (generating them in development), so a
    refusal is one clear message instead of a traceback in manage.py's output."""
    try:
        found = load(environ=env, var_dir=var, debug=envbool("DEBUG", False))
    except ImproperlyConfigured as exc:
        raise LaunchError(str(exc)) from None
    log(
        f"MEDAI_ENV={env['MEDAI_ENV']}; secrets: "
        + ", ".join(f"{name} from {source}" for name, source in found.sources.items())
    )


def manage(*args: str, env: dict[str, str]) -> None:
    """Run a manage.py command to completion; a failure stops the launch with its output."""
    log(f"manage.py {' '.join(args)}")
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    for line in result.stdout.splitlines():
        if line.strip():
            emit(relabel(args[0], line))
    if result.returncode != 0:
        raise LaunchError(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")


def wait_ready(
    url: str,
    children: list[Child],
    timeout: float,
    stop: threading.Event,
    accept: Callable[[httpx.Response], object] | None = None,
) -> bool:
    """Wait for ``url`` to answer 200 (and ``accept`` the response) while every child stays alive;
    False if ``stop`` was set first. It sends the metrics token when there is one: ``/readyz`` is
    closed without it outside development (medai/ops.py)."""
    token = envsecret("MEDAI_METRICS_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop.is_set():
            return False
        for child in children:
            if not child.alive():
                raise LaunchError(f"{child.name} exited with {child.proc.returncode} during start-up")
        try:
            response = httpx.get(url, timeout=2, headers=headers)
            if response.status_code == 200 and (accept is None or accept(response)):
                return True
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    raise LaunchError(f"{url} did not answer 200 within {timeout:.0f}s")


def metrics_dir(var: Path, env: dict[str, str]) -> Path:
    """Where every child keeps its metrics for /metrics (prometheus_client's multiprocess mode,
    medai/metrics.py): ``PROMETHEUS_MULTIPROC_DIR`` if set, else ``var/metrics``; emptied of the
    previous run's files before any child starts (only ``*.db``: it may be a directory the
    operator named)."""
    directory = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or var / "metrics")
    directory.mkdir(parents=True, exist_ok=True)
    for f in directory.glob("*.db"):
        f.unlink(missing_ok=True)
    return directory


def demo_password(var: Path) -> str:
    explicit = os.environ.get("MEDAI_DEMO_PASSWORD")
    if explicit:
        return explicit
    path = var / "demo-password"
    return path.read_text().strip() if path.is_file() else "(see var/demo-password)"


def banner(port: int, password: str, llama_url: str | None, embed_url: str | None = None) -> str:
    base = f"http://127.0.0.1:{port}"
    model = "Chat"
    embeddings = (
        f"{embed_url} (model {BUNDLED_EMBEDDINGS_ENDPOINT}: /v1/embeddings, /v1/rerank)"
        if embed_url
        else "none started (MEDAI_EMBEDDINGS=0 or MEDAI_LLAMA=0)"
    )
    embed_example = (
        f'\n   vectors = client.embeddings.create(model="{BUNDLED_EMBEDDINGS_ENDPOINT}", input=["fever", "cough"])'
        if embed_url
        else ""
    )
    return f"""
======================================================================
 {READY_LINE}
   web UI      {base}/
   admin       {base}/admin/
   API         {base}/v1
   API docs    {base}/api/docs/
   metrics     {base}/metrics
   model       {llama_url or "none started (MEDAI_LLAMA=0): register servers in admin"}
   embeddings  {embeddings}
 demo users (location "demo"):  admin / {password}    clinician / {password}

 try it:
   TOKEN=$(curl -s {base}/v1/auth/login -H 'Content-Type: application/json' \\
     -d '{{"username": "clinician", "password": "{password}", "location_id": "demo"}}' \\
     | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
   curl -s {base}/v1/chat/completions -H "Authorization: Bearer $TOKEN" \\
     -H 'Content-Type: application/json' \\
     -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "What is sepsis?"}}], "max_tokens": 64}}'

 with the openai client (the token above, or an API key made in admin):
   from openai import OpenAI
   client = OpenAI(base_url="{base}/v1", api_key=TOKEN)
   reply = client.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "Hello"}}])
   print(reply.choices[0].message.content){embed_example}

 Ctrl-C stops everything.
======================================================================
"""


def announce_ready(port: int, var: Path, llama_url: str | None, embed_url: str | None = None) -> None:
    """The ready line (JSON, as every line of the output: no password in it), and on a terminal
    the banner a developer reads, with the demo password and examples to paste."""
    base = f"http://127.0.0.1:{port}"
    log(
        f"{READY_LINE}: web UI {base}/, admin {base}/admin/, API {base}/v1, metrics {base}/metrics, "
        f"model {llama_url or 'none (MEDAI_LLAMA=0)'}, embeddings {embed_url or 'none'}; demo users admin "
        "and clinician (location demo), their password: MEDAI_DEMO_PASSWORD or var/demo-password",
        url=base,
        model_url=llama_url,
        embeddings_url=embed_url,
    )
    if sys.stdout.isatty():
        print(banner(port, demo_password(var), llama_url, embed_url), flush=True)


def supervise(
    children: list[Child], stop: threading.Event, redis: EmbeddedRedis | None = None, tick: float = 0.5
) -> Child | None:
    """Until ``stop`` is set (a signal): start the embedded Redis again at once if it died (on the
    same socket), and a dead child after its delay. Returns a child that died too often."""
    while not stop.wait(tick):
        if redis is not None and not redis.alive():
            code = redis.proc.returncode if redis.proc is not None else None
            log(f"embedded Redis exited ({code}); starting it again on {redis.socket_file}")
            try:
                redis.restart()
                log(f"embedded Redis is back (pid {redis.pid})")
            except RuntimeError as exc:  # tried again at the next tick
                log(f"embedded Redis did not start: {exc}")
        now = time.monotonic()
        for child in children:
            if child.alive():
                continue
            if child.due is None:
                delay = child.restart_delay(now)
                if delay is None:
                    log(f"{child.name} exited {RESTART_LIMIT} times within {RESTART_WINDOW:.0f}s; giving up")
                    return child
                log(f"{child.name} exited with {child.proc.returncode}; starting it again in {delay:.0f}s")
                child.due = now + delay
            elif now >= child.due:
                child.restart()
                log(f"{child.name} started again (pid {child.pid})")
    return None


def stop_all(children: list[Child]) -> None:
    """Stop children in reverse start order (web and worker before the model server)."""
    for child in reversed(children):
        if child.alive():
            log(f"stopping {child.name} (pid {child.pid})")
        child.stop()


def install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum: int, _frame: object) -> None:
        log(f"received {signal.Signals(signum).name}; shutting down")
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


def start_redis(var: Path, env: dict[str, str]) -> EmbeddedRedis | None:
    """The one embedded Redis every child shares (its socket in ``var/redis/``), unless REDIS_URL
    points at a server (which the launcher does not own, nor restart)."""
    if env.get("REDIS_URL"):
        log(f"using Redis at {redact_credentials(env['REDIS_URL'])}")
        return None
    server = EmbeddedRedis(var / "redis").start()
    env["REDIS_URL"] = server.url
    log(f"embedded Redis at {server.url} (pid {server.pid})")
    return server


def run() -> int:
    stop = threading.Event()
    install_signal_handlers(stop)
    port = env_port("MEDAI_PORT", 8000)
    llama_port = env_port("MEDAI_LLAMA_PORT", DEFAULT_LLAMA_PORT)
    embed_port = env_port("MEDAI_EMBED_PORT", DEFAULT_EMBED_PORT)
    with_llama = os.environ.get("MEDAI_LLAMA", "1") != "0"
    with_embeddings = with_llama and os.environ.get("MEDAI_EMBEDDINGS", "1") != "0"
    ports = [("MEDAI_PORT", port)]
    ports += [("MEDAI_LLAMA_PORT", llama_port)] if with_llama else []
    ports += [("MEDAI_EMBED_PORT", embed_port)] if with_embeddings else []
    if len({p for _, p in ports}) < len(ports):
        raise LaunchError(f"two servers on one port: {', '.join(f'{n}={p}' for n, p in ports)}")
    for name, p in ports:
        if not port_is_free(p):
            raise LaunchError(f"port {p} ({name}) is in use: stop what holds it or set {name}")

    var = var_dir()
    # `make run` is the embedded default on a developer's machine: unless told otherwise, it is a
    # development environment, whose missing keys are generated into var/ (medai/secrets.py).
    env = {
        **os.environ,
        "MEDAI_ENV": os.environ.get("MEDAI_ENV", "").strip() or "development",
        "MEDAI_VAR_DIR": str(var),
        "MEDAI_LLAMA_PORT": str(llama_port),
        "MEDAI_EMBED_PORT": str(embed_port),
        "PYTHONUNBUFFERED": "1",
    }
    check_secrets(env, var)
    redis = start_redis(var, env)
    children: list[Child] = []
    try:
        for command in (
            ["migrate", "--noinput"],
            ["collectstatic", "--noinput", "-v", "0"],
            [
                "bootstrap_demo",
                "--llama-port",
                str(llama_port),
                "--embed-port",
                str(embed_port),
                *([] if with_llama else ["--no-llama"]),
                *([] if with_embeddings else ["--no-embeddings"]),
            ],
        ):
            manage(*command, env=env)
            if stop.is_set():
                return 130

        # The monitor starts the bundled llama.cpp servers (ModelServer rows, autostart: chat, and
        # embeddings) and restarts one that crashes; it stops them when it stops.
        llama_url = embed_url = None
        if with_llama:
            try:  # fail now, clearly, rather than in the monitor's log
                find_llama_server(), find_bundled_model()
            except NotInstalled as exc:
                raise LaunchError(f"{exc} (or MEDAI_LLAMA=0 to start without it)") from None
            llama_url = f"http://127.0.0.1:{llama_port}/v1"
            if with_embeddings:
                embed_url = f"http://127.0.0.1:{embed_port}/v1"
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir(var, env))
        children.append(Child("monitor", [sys.executable, "manage.py", "monitor"], env))
        access_log = ["--access-log"] if os.environ.get("MEDAI_ACCESS_LOG", "0") == "1" else ["--no-access-log"]
        children.append(
            Child(
                "web",
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "medai.asgi:application",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    *access_log,
                ],
                env,
            )
        )
        children.append(Child("worker", [sys.executable, "manage.py", "qcluster"], env))

        for url in (llama_url, embed_url):
            if url and not wait_ready(url.removesuffix("/v1") + "/health", children, 180, stop):
                return 130
        if not wait_ready(f"http://127.0.0.1:{port}/healthz", children, 120, stop):
            return 130
        # Ready means the platform can answer: workers up and the bundled models seen serving.
        bundled = {BUNDLED_CHAT_ENDPOINT} if with_llama else set()
        bundled |= {BUNDLED_EMBEDDINGS_ENDPOINT} if with_embeddings else set()

        def ready(response: httpx.Response) -> bool:
            models = response.json().get("models", {})
            return bool(models.get("ok")) and bundled <= set(models.get("serving") or ())

        if not wait_ready(f"http://127.0.0.1:{port}/readyz", children, 120, stop, accept=ready if bundled else None):
            return 130
        announce_ready(port, var, llama_url, embed_url)

        died = supervise(children, stop, redis)
        if died is not None:
            log(f"{died.name} keeps exiting (last with {died.proc.returncode}); stopping the rest")
            return 1
        return 0
    finally:
        stop_all(children)
        if redis is not None:
            redis.stop()
            log("embedded Redis stopped")
        log("all stopped")


def main() -> None:
    try:
        code = run()
    except LaunchError as exc:
        log(f"error: {exc}")
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
