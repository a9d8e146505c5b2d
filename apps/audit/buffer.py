"""Audit events written after the fact, in batches, by one background thread per process.

For events on paths that must not wait for a write under the chain's lock: a 401 or 403 (anyone
can send those, as fast as they like), a rate-limit or quota refusal (on the chat path's event
loop, where no query may run), an API key's use, a status poll. The caller builds the event (so
its time, correlation id and origin are the request's) and hands it over; the thread appends what
has gathered within ``MEDAI_RECORD_LINGER_MS`` with one ``record_events`` (one lock of the chain
head, one multi-row INSERT, one commit).

The trade, and its bounds (as for the chat records, apps/inference/recorder.py):

* an event is in the database within about the linger time, not when the response leaves;
* a clean shutdown writes what is held (``atexit``); a database error is retried with backoff;
  only a process killed outright loses what it held (the last linger window's events);
* at most ``MEDAI_AUDIT_BUFFER_MAX`` events are held; past it (the database is down for long)
  new ones are dropped and counted in an error log line, rather than grow without bound.

Events that record a change or a read of PHI (a login, a key created, a result read, an admin
change) are not written here: their verbs append them in their own transaction.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections

from apps.audit.append import record_events
from apps.audit.models import AuditEvent

logger = logging.getLogger("medai.audit")

BATCH_MAX = 500
RETRY_MAX_SECONDS = 5.0
SHUTDOWN_SECONDS = 10.0


class EventBuffer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._has_work = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._pending: list[AuditEvent] = []
        self._submitted = 0
        self._settled = 0
        self._dropped = 0
        self._urgent = 0
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def submit(self, event: AuditEvent) -> None:
        """Queue one unsaved event (from ``new_event``); never blocks, never does I/O."""
        self._ensure_thread()
        with self._lock:
            if self._submitted - self._settled >= settings.MEDAI_AUDIT_BUFFER_MAX:
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 1000 == 0:
                    logger.error(
                        "audit buffer full: %d audit events dropped (the database is unavailable)", self._dropped
                    )
                return
            self._pending.append(event)
            self._submitted += 1
            if len(self._pending) == 1 or len(self._pending) >= BATCH_MAX:
                self._has_work.notify()

    def flush(self, timeout: float = SHUTDOWN_SECONDS) -> bool:
        """Wait until every event submitted so far is written (or given up on); False on timeout."""
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
        if not alive:
            self._drain_here()
        return self._settled >= target

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        with self._lock:
            if self._pid != os.getpid():  # a forked child does not write its parent's events
                self._pending.clear()
                self._submitted = self._settled = 0
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, daemon=True, name="medai-audit-writer")
                self._thread.start()

    def _take(self) -> list[AuditEvent]:
        with self._lock:
            while not self._pending:
                self._has_work.wait()
            deadline = time.monotonic() + settings.MEDAI_RECORD_LINGER_MS / 1000
            while not self._urgent and len(self._pending) < BATCH_MAX:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._has_work.wait(left)
            batch, self._pending = self._pending[:BATCH_MAX], self._pending[BATCH_MAX:]
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
                logger.exception("lost %d audit events", len(batch))
            self._settle(len(batch))

    def _drain_here(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self._write(batch, retry_seconds=0.0)
            self._settle(len(batch))

    def _write(self, batch: list[AuditEvent], retry_seconds: float | None = None) -> None:
        delay, waited = 0.05, 0.0
        while True:
            close_old_connections()
            try:
                for event in batch:  # a failed try (a commit refused) may have left a seq on them
                    event.pk, event._state.adding = None, True
                record_events(batch)
                return
            except (OperationalError, InterfaceError) as exc:
                limit = retry_seconds if retry_seconds is not None else (SHUTDOWN_SECONDS if self._urgent else None)
                if limit is not None and waited >= limit:
                    logger.error("lost %d audit events: the database is unavailable (%s)", len(batch), exc)
                    return
                logger.warning("audit events not written yet (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)
                waited += delay
                delay = min(delay * 2, RETRY_MAX_SECONDS)
            except DatabaseError:
                logger.exception("lost %d audit events: the database refused them", len(batch))
                return
            finally:
                close_old_connections()


buffer = EventBuffer()


@atexit.register
def _flush_at_exit() -> None:
    if buffer._submitted > buffer._settled and not buffer.flush(SHUTDOWN_SECONDS):
        logger.error("exiting with %d audit events unwritten", buffer._submitted - buffer._settled)
