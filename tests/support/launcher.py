"""The whole platform as `make run` starts it (medai.launcher: embedded Redis, SQLite, monitor with
its supervised llama-servers, chat and embeddings, web, worker), for tests that need every process at once; and
``manage.py`` commands against it (its var dir, database and Redis)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from medai.launcher import READY_LINE
from tests.support.servers import ROOT, free_port

SECRETS = ("SECRET_KEY", "JWT_SIGNING_KEY", "MEDAI_ENCRYPTION_KEYS", "MEDAI_AUDIT_KEYS")
START_TIMEOUT = 300.0  # migrations on a fresh SQLite, model load: bounded, not timed


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class Launched:
    """A running launcher: its ports, var dir, every output line (and a queue of new ones)."""

    def __init__(self, tmp: Path, **extra_env: str) -> None:
        self.port, self.llama_port, self.embed_port = free_port(), free_port(), free_port()
        self.var = tmp / "var"
        self.password = "observability-pass"
        env = {
            **os.environ,
            "MEDAI_VAR_DIR": str(self.var),
            "MEDAI_PORT": str(self.port),
            "MEDAI_LLAMA_PORT": str(self.llama_port),
            "MEDAI_EMBED_PORT": str(self.embed_port),
            "MEDAI_DEMO_PASSWORD": self.password,
            **extra_env,
        }
        env.pop("REDIS_URL", None)  # its own embedded Redis, as `make run` does
        for name in ("MEDAI_ENV", *SECRETS, *(f"{n}_FILE" for n in SECRETS)):
            env.pop(name, None)
        if env.get("DATABASE_URL", "").startswith("postgres"):
            env.pop("DATABASE_URL")  # SQLite in its var dir, not the database pytest-django owns
        self.env = env
        self.output: list[str] = []
        self.lines: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medai.launcher"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if READY_LINE in line:
                return
        raise AssertionError("launcher never said it was ready:\n" + "".join(self.output)[-5000:])

    def redis_url(self) -> str:
        for line in self.output:
            if "embedded Redis at " in line:
                return line.split("embedded Redis at ", 1)[1].split()[0]
        raise AssertionError("the launcher did not say where its Redis is")

    def manage(self, *args: str, timeout: float = 180) -> str:
        """A ``manage.py`` command against this platform (as an operator runs one); its stdout."""
        env = {
            **self.env,
            "MEDAI_ENV": "development",
            "REDIS_URL": self.redis_url(),
            "PROMETHEUS_MULTIPROC_DIR": str(self.var / "metrics"),
        }
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=env, timeout=timeout, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise AssertionError(f"manage.py {args[0]} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result.stdout

    def shell(self, code: str) -> str:
        return self.manage("shell", "-c", code)

    def stop(self) -> Any:
        """SIGINT (as Ctrl-C), then whatever is left is killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            for pid in descendants(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.returncode
