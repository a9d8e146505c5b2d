"""``/metrics``: the metrics of every medai process on this machine, from any web process.

medai runs several processes (web, the django-q2 cluster and its forked workers, the monitor), and
a counter lives in the process that increments it. prometheus_client's multiprocess mode gathers
them: with ``PROMETHEUS_MULTIPROC_DIR`` set *before* prometheus_client is imported, every process
keeps its counters, histograms and gauges in memory-mapped files there, and a scrape merges them.
The launcher (``medai.launcher``) sets it for every child (``var/metrics``, emptied at start);
the test suite sets its own (medai/settings.py). Without it each process exports only its own
metrics, as before.

What the mode changes, and how this module deals with it:

* Metrics read at scrape time (GPU state and circuits from Redis, queue depth and the models'
  drift verdicts from the database, quota use, the audit chain's last verification:
  ``scrape_collectors``) are not in
  the files: they are added to the scrape's registry.
* Counters and histograms of a process that exited (a recycled or killed django-q2 worker, a
  restarted web process) must keep counting: its files stay, and the next scrape folds them into
  one ``<kind>_archive.db`` per kind, so the directory does not grow with every worker that ever
  lived and scrapes do not slow down (``compact``; a lock file keeps scrapes from reading a
  half-folded directory).
* Gauges say how to merge (``multiprocess_mode``): medai's live gauges use ``livesum``, which
  counts live processes only; a dead process's live-gauge files are removed (what
  ``prometheus_client.multiprocess.mark_process_dead`` does) by the same step.
* Process metrics (``process_cpu_seconds_total`` and friends) are not exported in this mode.

Several machines: each one's processes share a directory on that machine; scrape each machine's
web process (a worker-only node has no web process: its metrics need one, or a sidecar exporter
reading its directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import prometheus_client
from django.http import HttpRequest, HttpResponse
from prometheus_client import Gauge
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from apps.accounts.governance.metrics import QuotaCollector
from apps.audit.metrics import AuditCollector
from apps.gpu.metrics import GpuCollector
from apps.inference.metrics import QualityCollector, QueueCollector

logger = logging.getLogger("medai.metrics")

ENV = "PROMETHEUS_MULTIPROC_DIR"
LOCK_FILE = ".medai-metrics.lock"
FOLDED_KINDS = ("counter", "histogram", "summary")

WEBSOCKETS = Gauge(
    "medai_websocket_connections", "Websocket connections open now, by path", ["path"], multiprocess_mode="livesum"
)


def multiprocess_dir() -> str | None:
    path = os.environ.get(ENV)
    return path if path and os.path.isdir(path) else None


def scrape_collectors() -> list[Any]:
    """Collectors that read shared state at scrape time (not kept in any process's files)."""
    return [GpuCollector(), QueueCollector(), QualityCollector(), QuotaCollector(), AuditCollector()]


def exposition() -> bytes:
    """The text exposition of every process's metrics (or this process's, without the mode)."""
    path = multiprocess_dir()
    if path is None:
        return prometheus_client.generate_latest(prometheus_client.REGISTRY)
    try:
        compact(path)
    except Exception:  # a scrape still answers; the next one folds
        logger.warning("could not fold the metrics of exited processes", exc_info=True)
    registry = prometheus_client.CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    for collector in scrape_collectors():
        registry.register(collector)
    with _locked(path, exclusive=False, wait=True):
        return prometheus_client.generate_latest(registry)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics`` (Prometheus text format)."""
    return HttpResponse(exposition(), content_type=prometheus_client.CONTENT_TYPE_LATEST)


# --- exited processes ------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


@contextlib.contextmanager
def _locked(path: str, *, exclusive: bool, wait: bool) -> Iterator[bool]:
    with open(os.path.join(path, LOCK_FILE), "a+b") as f:
        flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(f, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _dead_files(path: str) -> tuple[dict[str, list[str]], set[int]]:
    """Files of exited processes: counters/histograms/summaries by kind, and pids with live gauges."""
    fold: dict[str, list[str]] = defaultdict(list)
    live_gauges: set[int] = set()
    for f in glob.glob(os.path.join(path, "*.db")):
        parts = os.path.basename(f)[: -len(".db")].split("_")
        if not parts[-1].isdigit() or _alive(int(parts[-1])):
            continue
        pid = int(parts[-1])
        if parts[0] in FOLDED_KINDS:
            fold[parts[0]].append(f)
        elif parts[0] == "gauge" and len(parts) == 3 and parts[1].startswith("live"):
            live_gauges.add(pid)
        # other gauge modes (all, min, max, sum, mostrecent) include exited processes by design: kept
    return fold, live_gauges


def compact(path: str) -> int:
    """Fold the counters, histograms and summaries of exited processes into one archive file per
    kind and drop their live gauges; returns the files removed. Skipped (0) while another process
    holds the directory's lock (it is folding, or scraping)."""
    fold, live_gauges = _dead_files(path)
    if not fold and not live_gauges:
        return 0
    removed = 0
    with _locked(path, exclusive=True, wait=False) as got:
        if not got:
            return 0
        fold, live_gauges = _dead_files(path)  # again, under the lock
        for pid in live_gauges:
            mark_process_dead(pid, path)
            removed += 1
        for kind, files in fold.items():
            archive = os.path.join(path, f"{kind}_archive.db")
            sources = files + ([archive] if os.path.exists(archive) else [])
            merged = MultiProcessCollector.merge(sources, accumulate=False)
            tmp = archive + ".tmp"  # not *.db: no scrape reads it
            if os.path.exists(tmp):
                os.unlink(tmp)
            out = MmapedDict(tmp)
            try:
                for metric in merged:
                    for sample in metric.samples:
                        key = mmap_key(
                            metric.name,
                            sample.name,
                            list(sample.labels),
                            list(sample.labels.values()),
                            metric.documentation,
                        )
                        out.write_value(key, sample.value, 0.0)
            finally:
                out.close()
            os.replace(tmp, archive)
            for f in files:
                os.unlink(f)
                removed += 1
    return removed


# --- websocket connections --------------------------------------------------------------------


class WebsocketGauge:
    """ASGI middleware: ``medai_websocket_connections{path}`` counts accepted websockets until they
    end (a gauge in ``livesum`` mode: a web process that dies takes its connections with it)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "websocket":
            await self.app(scope, receive, send)
            return
        accepted = False
        path = str(scope.get("path", ""))

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal accepted
            await send(message)
            if message.get("type") == "websocket.accept" and not accepted:
                accepted = True
                WEBSOCKETS.labels(path).inc()

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if accepted:
                WEBSOCKETS.labels(path).dec()
