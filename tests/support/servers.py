"""Real servers for tests: llama.cpp on the bundled model, medai's ASGI app, the failure stub."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s (last: {last})")


class Process:
    def __init__(self, argv: list[str], health_url: str, log_name: str, env: dict[str, str] | None = None) -> None:
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"medai-test-{log_name}-{os.getpid()}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
        self.health_url = health_url

    def wait(self, timeout: float = 90.0) -> None:
        try:
            wait_http(self.health_url, timeout, self.proc)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- log ---\n{self.log_path.read_text(errors='replace')[-3000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def start_llama_server(
    port: int | None = None, parallel: int = 4, extra: list[str] | None = None
) -> tuple[Process, str]:
    """Start the real llama.cpp server on the bundled SmolLM2 (``extra``: more options, e.g. the
    embeddings server's); returns (process, OpenAI base URL)."""
    from apps.gpu.llamacpp import server_command

    port = port or free_port()
    argv = server_command(port, parallel=parallel, ctx_size=2048 * parallel, threads=2, extra=extra)
    proc = Process(argv, f"http://127.0.0.1:{port}/health", f"llama-{port}")
    proc.wait(120)
    return proc, f"http://127.0.0.1:{port}/v1"


def start_stub(mode: str = "ok", port: int | None = None) -> tuple[Process, str]:
    """Start bench/stub_backend.py; returns (process, OpenAI base URL). Change mode via POST /_mode."""
    port = port or free_port()
    argv = [sys.executable, str(ROOT / "bench" / "stub_backend.py"), "--port", str(port), "--mode", mode]
    proc = Process(argv, f"http://127.0.0.1:{port}/_stats", f"stub-{port}")
    proc.wait(30)
    return proc, f"http://127.0.0.1:{port}/v1"


def set_stub_mode(base_url: str, mode: str, **extra: object) -> None:
    httpx.post(base_url.removesuffix("/v1") + "/_mode", json={"mode": mode, **extra}, timeout=5).raise_for_status()


class LiveASGIServer:
    """medai's ASGI application under uvicorn in a thread of the test process (sees the test DB)."""

    def __init__(self, access_log: bool = False) -> None:
        import uvicorn

        from medai.asgi import application

        self.port = free_port()
        config = uvicorn.Config(
            application,
            host="127.0.0.1",
            port=self.port,
            log_level="info" if access_log else "warning",
            lifespan="off",
            access_log=access_log,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveASGIServer:
        self.thread.start()
        wait_http(self.url + "/healthz", 30)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
