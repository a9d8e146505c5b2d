"""The records of non-streamed chat completions, written after the answer by one background
thread per process, in batches (one ``bulk_create``, one commit), each with its audit event
(apps/inference/auditing.py) in the same transaction: a record is never written without its
event, nor an event without its record.

Why: writing the row before answering cost a thread hop and an INSERT + COMMIT per request, the
largest part of what medai added to a completion after the HTTP client (``bench/README.md``).

The trade, and its bounds:

* A record appears in the database within about ``MEDAI_RECORD_LINGER_MS`` (20 ms by default)
  after the answer, not before it: a client that reads its task list the instant it has its
  answer may not see that request yet. A streamed completion is recorded before its ``[DONE]``:
  its row goes through the same writer (``committed``), which skips the linger for it and
  resolves its future at the commit, so a stream waits for one shared batch transaction instead
  of a thread hop and a transaction of its own (which, on SQLite, also queued behind the
  writer's lock).
* Every record is written: on a clean shutdown (SIGTERM, Ctrl-C) the process writes what it holds
  before exiting (``atexit``); a database error is retried with backoff, keeping the rows.
  Only a process killed outright (SIGKILL, power loss) loses what it held: at most the last
  linger window's requests.
* Bounded: at most ``MEDAI_RECORD_BACKLOG`` rows are held unwritten per process. When the
  database cannot keep up (or is down) and the backlog is full, chat requests answer 503
  ``recording_unavailable`` before any backend call rather than serve requests that cannot be
  recorded.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import threading
import time
from typing import Any

from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    close_old_connections,
    router,
    transaction,
)

from apps.audit import rows
from apps.audit import services as audit_services
from apps.inference.auditing import inference_event
from apps.inference.models import InferenceTask

logger = logging.getLogger("medai.inference")

BATCH_MAX = 500
RETRY_MAX_SECONDS = 5.0
SHUTDOWN_SECONDS = 10.0


# (InferenceTask fields, inference_event arguments, the future of a caller waiting for the commit)
Pending = tuple[dict[str, Any], dict[str, Any] | None, "concurrent.futures.Future[bool] | None"]


class RecordWriter:
    """A bounded queue of InferenceTask field dicts and the thread that bulk-inserts them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._pending: list[Pending] = []
        self._submitted = 0  # rows ever submitted
        self._settled = 0  # rows written, or given up on (logged)
        self._urgent = 0  # flushes waiting: skip the linger
        self._eager = 0  # pending rows whose caller waits for their commit: skip the linger
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def has_room(self) -> bool:
        """Whether one more request may be served: fewer than MEDAI_RECORD_BACKLOG rows unwritten."""
        return self._submitted - self._settled < settings.MEDAI_RECORD_BACKLOG

    def submit(self, row: dict[str, Any], audit: dict[str, Any] | None = None) -> None:
        """Queue one record (InferenceTask field values) and, with ``audit`` (the identity
        arguments of ``auditing.inference_event``), its audit event; never blocks, never does I/O."""
        self._ensure_thread()
        with self._lock:
            self._pending.append((row, audit, None))
            self._submitted += 1
            if len(self._pending) == 1 or len(self._pending) >= BATCH_MAX:
                self._has_work.notify()  # wake the writer only when idle, or the batch is full

    def committed(self, row: dict[str, Any], audit: dict[str, Any] | None = None) -> concurrent.futures.Future[bool]:
        """As ``submit``, for a caller that must know when the record is in the database (a stream,
        before its ``[DONE]``): the writer takes it without lingering, with whatever else is
        pending, and the future resolves True at the commit, False when the record was given up
        on (logged). Never blocks; the caller bounds its own wait."""
        future: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._ensure_thread()
        with self._lock:
            self._pending.append((row, audit, future))
            self._submitted += 1
            self._eager += 1
            self._has_work.notify()
        return future

    def flush(self, timeout: float = SHUTDOWN_SECONDS) -> bool:
        """Wait until every record submitted so far is written (or given up on); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._submitted
            if self._settled >= target:
                return True
            alive = self._thread is not None and self._thread.is_alive() and self._pid == os.getpid()
            self._urgent += 1
            self._has_work.notify()
            try:
                while alive and self._settled < target:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._progress.wait(left)
            finally:
                self._urgent -= 1
        if not alive:  # no writer in this process (forked, or never started): write here
            self._drain_here()
        return self._settled >= target

    # --- the writer thread ---------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid():  # a forked child does not write its parent's rows
                self._pending.clear()
                self._submitted = self._settled = self._eager = 0
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, daemon=True, name="medai-record-writer")
                self._thread.start()

    def _take(self) -> list[Pending]:
        with self._lock:
            while not self._pending:
                self._has_work.wait()
            # Linger so that one INSERT and one COMMIT serve many requests under load.
            deadline = time.monotonic() + settings.MEDAI_RECORD_LINGER_MS / 1000
            while not self._urgent and not self._eager and len(self._pending) < BATCH_MAX:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._has_work.wait(left)
            batch, self._pending = self._pending[:BATCH_MAX], self._pending[BATCH_MAX:]
            self._eager -= sum(1 for *_, future in batch if future is not None)
            return batch

    def _settle(self, n: int) -> None:
        with self._lock:
            self._settled += n
            self._progress.notify_all()

    def _run(self) -> None:
        while True:
            batch = self._take()
            try:
                self._write(batch)
            except Exception:  # the writer must outlive anything
                logger.exception("lost %d request records", len(batch))
            _resolve(batch, False)  # whatever _write did not write is lost
            self._settle(len(batch))

    def _drain_here(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            self._eager = 0
        if batch:
            try:
                self._write(batch, retry_seconds=0.0)
            finally:
                _resolve(batch, False)
                self._settle(len(batch))

    def _write(self, batch: list[Pending], retry_seconds: float | None = None) -> None:
        """Insert the batch and append its audit events, in one transaction; keep retrying while the
        database is unreachable (with backoff); a batch the database refuses is written row by row
        so that one bad row loses only itself."""
        delay, waited = 0.05, 0.0
        while True:
            close_old_connections()
            try:
                _insert(batch)
                _resolve(batch, True)
                return
            except (OperationalError, InterfaceError) as exc:
                limit = retry_seconds if retry_seconds is not None else (SHUTDOWN_SECONDS if self._urgent else None)
                if limit is not None and waited >= limit:
                    logger.error("lost %d request records: the database is unavailable (%s)", len(batch), exc)
                    return
                logger.warning("request records not written yet (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            except DatabaseError:
                for pending in batch:
                    close_old_connections()
                    try:
                        _insert([pending])
                        _resolve([pending], True)
                    except Exception:
                        logger.exception("lost the record of request %s", pending[0].get("correlation_id"))
                return
            finally:
                close_old_connections()


def _insert(batch: list[Pending]) -> None:
    """The records (one multi-row INSERT) and then their audit events (one append under the chain
    head's lock, held until the commit right after it). Built afresh on every try: a failed try
    leaves nothing behind in them."""
    tasks = [InferenceTask(**row) for row, _, _ in batch]
    events = [
        inference_event(task, **audit) for task, (_, audit, _) in zip(tasks, batch, strict=True) if audit is not None
    ]
    with transaction.atomic():
        _insert_tasks(tasks)
        audit_services.record_events(events)


def _insert_tasks(tasks: list[InferenceTask]) -> None:
    """``InferenceTask.objects.bulk_create(tasks)`` as one ``executemany`` of a statement compiled
    once (apps/audit/rows.py: Django's bulk INSERT rendered a placeholder for every value of every
    row, the largest part of the writer's time, which competes with the event loop for the GIL)."""
    using = router.db_for_write(InferenceTask)
    if not rows.insert(InferenceTask, tasks, using):
        InferenceTask.objects.using(using).bulk_create(tasks)


def _resolve(batch: list[Pending], written: bool) -> None:
    """Tell the callers waiting on these records (``committed``) whether they were written; a
    future already resolved keeps its answer."""
    for *_, future in batch:
        if future is not None and not future.done():
            future.set_result(written)


writer = RecordWriter()


@atexit.register
def _flush_at_exit() -> None:
    if writer._submitted > writer._settled and not writer.flush(SHUTDOWN_SECONDS):
        logger.error("exiting with %d request records unwritten", writer._submitted - writer._settled)
