"""Supervision of local model servers (ModelServer rows), run inside the monitor process.

Each pass (``reconcile``) compares what the rows ask for (``desired_state``, ``restart_requested``)
with the processes this supervisor owns: it starts, stops and restarts them, notices crashes and
restarts after an exponential backoff (1 s doubling to 60 s; reset after 60 s of good health),
marks a server RUNNING once its ``/health`` answers, and keeps the last log lines in the row.
A crash whose log says the GPU ran out of memory is reported to the monitor (``on_oom``).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.utils import timezone

from apps.gpu import circuit, shared
from apps.gpu.llamacpp import BUNDLED_MODEL_ALIAS, server_command
from apps.gpu.models import ModelServer
from apps.gpu.services import audit

logger = logging.getLogger("medai.gpu.supervisor")

OOM_PATTERN = re.compile(r"out of memory|cudaMalloc failed|failed to allocate .*buffer|OutOfMemoryError", re.I)
LOG_LINES = 40
START_TIMEOUT = 180.0
STABLE_AFTER = 60.0
MAX_BACKOFF = 60.0
LOG_SAVE_EVERY = 5.0


def server_argv(server: ModelServer) -> list[str]:
    """The command line of a server: ``command`` + ``args`` verbatim, or llama-server on its model."""
    if server.command:
        return [server.command, *map(str, server.args or [])]
    alias = server.endpoint.backend_model if server.endpoint is not None else BUNDLED_MODEL_ALIAS
    return server_command(
        server.port, server.model_path or None, alias=alias, host=server.host, extra=[str(a) for a in server.args or []]
    )


@dataclass
class Child:
    server_id: int
    proc: subprocess.Popen[bytes]
    started: float
    lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_LINES))
    healthy_since: float | None = None
    stopping: bool = False
    log_saved_at: float = 0.0
    reader: threading.Thread | None = None

    def start_reader(self) -> None:
        def read() -> None:
            assert self.proc.stdout is not None
            for raw in iter(self.proc.stdout.readline, b""):
                self.lines.append(raw.decode("utf-8", "replace").rstrip()[:500])

        self.reader = threading.Thread(target=read, daemon=True, name=f"log-{self.server_id}")
        self.reader.start()


@dataclass
class Backoff:
    crashes: int = 0
    until: float = 0.0


class Supervisor:
    def __init__(self, on_oom: Callable[[ModelServer], None] | None = None) -> None:
        self.children: dict[int, Child] = {}
        self.backoff: dict[int, Backoff] = {}
        self.on_oom = on_oom
        self._http = httpx.Client(timeout=httpx.Timeout(1.0, connect=0.5))

    # --- lifecycle ------------------------------------------------------------------------

    def adopt_rows(self) -> None:
        """At monitor start: stop orphans of a previous monitor, and apply ``autostart``."""
        for server in ModelServer.objects.all():
            if server.pid and _is_ours(server.pid, server.port):
                logger.info("stopping orphaned model server %s (pid %s)", server.name, server.pid)
                _terminate_pid(server.pid)
            desired = ModelServer.Desired.RUNNING if server.autostart else ModelServer.Desired.STOPPED
            ModelServer.objects.filter(pk=server.pk).update(
                desired_state=desired, state=ModelServer.State.STOPPED, pid=None, restart_requested=False
            )

    def reconcile(self) -> None:
        now = time.monotonic()
        servers = {s.pk: s for s in ModelServer.objects.select_related("endpoint")}
        for server_id in list(self.children):
            if server_id not in servers:  # row deleted
                self._stop(server_id)
        for server in servers.values():
            try:
                self._reconcile_one(server, now)
            except Exception:  # one bad row must not stop supervision of the others
                logger.exception("supervising %s failed", server.name)

    def _reconcile_one(self, server: ModelServer, now: float) -> None:
        child = self.children.get(server.pk)
        want = server.desired_state == ModelServer.Desired.RUNNING
        if server.restart_requested:
            if child:
                self._stop(server.pk)
                child = None
            self.backoff.pop(server.pk, None)
            self._save(server, restart_requested=False)
            want = True
        if child is not None and child.proc.poll() is not None:
            self._exited(server, child, now)
            child = None
        if not want:
            if child is not None:
                self._stop(server.pk)
            if server.state != ModelServer.State.STOPPED:
                self._save(server, state=ModelServer.State.STOPPED, pid=None)
            return
        if child is None:
            if now >= self.backoff.get(server.pk, Backoff()).until:
                self._start(server, now)
            return
        self._check_started(server, child, now)

    def _start(self, server: ModelServer, now: float) -> None:
        try:
            argv = server_argv(server)
        except Exception as exc:  # noqa: BLE001 - e.g. llama-server not installed
            self._save(server, state=ModelServer.State.FAILED, last_error=f"cannot build the command: {exc}"[:500])
            self.backoff[server.pk] = Backoff(self.backoff.get(server.pk, Backoff()).crashes, now + MAX_BACKOFF)
            return
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(server.gpu_index)}
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        child = Child(server.pk, proc, now)
        child.start_reader()
        self.children[server.pk] = child
        logger.info("started model server %s (pid %s): %s", server.name, proc.pid, " ".join(argv))
        _audit("gpu.server.started", obj=server, server=server.name, pid=proc.pid, port=server.port)
        self._save(
            server, state=ModelServer.State.STARTING, pid=proc.pid, last_started_at=timezone.now(), last_error=""
        )

    def _check_started(self, server: ModelServer, child: Child, now: float) -> None:
        tail = "\n".join(child.lines)
        changes: dict[str, object] = {}
        if tail != server.log_tail and (now - child.log_saved_at > LOG_SAVE_EVERY or server.state != "running"):
            changes["log_tail"] = tail  # a busy server logs every request: save at most every few seconds
            child.log_saved_at = now
        if server.state != ModelServer.State.RUNNING:
            if self._healthy(server):
                child.healthy_since = now
                changes["state"] = ModelServer.State.RUNNING
                logger.info("model server %s is serving", server.name)
                _share_health(server, True, "serving (supervisor: /health answered)")
            elif now - child.started > START_TIMEOUT:
                logger.warning("model server %s did not become healthy in %ss: restarting", server.name, START_TIMEOUT)
                self._stop(server.pk)
                self._crashed(server, now, "did not become healthy in time", None, tail)
                return
        elif child.healthy_since and now - child.healthy_since > STABLE_AFTER:
            self.backoff.pop(server.pk, None)  # it ran well: the next crash restarts at once
        if changes:
            self._save(server, **changes)

    def _exited(self, server: ModelServer, child: Child, now: float) -> None:
        self.children.pop(server.pk, None)
        if child.reader is not None:
            child.reader.join(1)
        tail = "\n".join(child.lines)
        code = child.proc.returncode
        if child.stopping:
            return
        self._crashed(server, now, f"exited with code {code}", code, tail)

    def _crashed(self, server: ModelServer, now: float, why: str, code: int | None, tail: str) -> None:
        b = self.backoff.setdefault(server.pk, Backoff())
        delay = min(2**b.crashes, MAX_BACKOFF)
        b.crashes += 1
        b.until = now + delay
        logger.warning("model server %s %s; restarting in %.0f s", server.name, why, delay)
        _share_health(server, False, f"{why}; restart in {delay:.0f} s")  # route around it now, not at the next check
        _audit(
            "gpu.server.crashed",
            failure=True,
            obj=server,
            server=server.name,
            why=why,
            exit_code=code,
            restarts=server.restarts + 1,
            restart_in_s=delay,
        )
        self._save(
            server,
            state=ModelServer.State.BACKOFF,
            pid=None,
            restarts=server.restarts + 1,
            last_exit_code=code,
            last_error=f"{why}; restart in {delay:.0f} s"[:500],
            log_tail=tail,
        )
        if OOM_PATTERN.search(tail) and self.on_oom is not None:
            self.on_oom(server)

    def _healthy(self, server: ModelServer) -> bool:
        try:
            return self._http.get(server.health_url).status_code == 200
        except httpx.HTTPError:
            return False

    def _stop(self, server_id: int, timeout: float = 10.0) -> None:
        child = self.children.pop(server_id, None)
        if child is None:
            return
        child.stopping = True
        if child.proc.poll() is None:
            child.proc.terminate()
            try:
                child.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(timeout)

    def stop_server(self, server: ModelServer) -> None:
        """Stop one server now and keep it stopped (the out-of-memory handler uses this)."""
        self._stop(server.pk)
        self._save(server, desired_state=ModelServer.Desired.STOPPED, state=ModelServer.State.STOPPED, pid=None)
        _audit("gpu.server.stopped", obj=server, server=server.name, reason="out of GPU memory: largest server")

    def stop_all(self) -> None:
        for server_id in list(self.children):
            self._stop(server_id)
        ModelServer.objects.exclude(state=ModelServer.State.STOPPED).update(state=ModelServer.State.STOPPED, pid=None)
        self._http.close()

    def _save(self, server: ModelServer, **changes: object) -> None:
        for name, value in changes.items():
            setattr(server, name, value)
        ModelServer.objects.filter(pk=server.pk).update(**changes, updated_at=timezone.now())


def _share_health(server: ModelServer, ok: bool, detail: str) -> None:
    """What the supervisor just saw of its server is the freshest health there is: share it at once
    (the periodic check would take up to ``MEDAI_HEALTH_INTERVAL`` to notice)."""
    if not server.endpoint_id:
        return
    try:
        shared.mark_health(server.endpoint_id, ok, detail)
        if ok and circuit.state_of(server.endpoint_id)[0] == circuit.OPEN:
            circuit.half_open(server.endpoint_id)  # as a passing health check does: one trial request
    except Exception:  # Redis down: the periodic health check will catch up
        logger.warning("could not share the health of %s", server.name, exc_info=True)


def _audit(action: str, **kwargs: Any) -> None:
    audit(action, **kwargs)


def _is_ours(pid: int, port: int) -> bool:
    try:
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return False
    return str(port).encode() in cmdline


def _terminate_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            time.sleep(0.1)
            os.kill(pid, 0)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
