"""After-commit hooks of the transitions that end tasks (finish, fail, cancel, expire): who must hear
that tasks of a batch ended, without the queue knowing who they are.

The Batch API (apps.inference.filebatch) registers one: a file batch is fed to the queue in parts
and written out when its last line ends, so it needs to hear each end. A transition calls
``batch_tasks_ended`` inside its transaction with the batch ids of the tasks it ended; the
callbacks run once the transaction commits, in the process that made it, with the ids that
committed (a rollback runs nothing). Best effort, as a push is: a callback's error is logged and
never reaches the transition; what a missed call leaves undone, the callback's own minute
schedule catches up with.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from django.db import connections, router, transaction
from django.db.models import Model, QuerySet

logger = logging.getLogger("medai.queue")

BatchesEnded = Callable[[set[str]], None]
M = TypeVar("M", bound=Model)
_callbacks: list[BatchesEnded] = []


def on_batch_tasks_ended(callback: BatchesEnded) -> BatchesEnded:
    """Register ``callback(batch_ids)``, called after the commit of every transition that ended
    tasks of batches (a set of batch ids, as strings)."""
    if callback not in _callbacks:
        _callbacks.append(callback)
    return callback


def batch_tasks_ended(batch_ids: Iterable[Any]) -> None:
    """Inside a transition's transaction: tasks of these batches (ids or None) ended."""
    ids = {str(b) for b in batch_ids if b}
    if ids and _callbacks:
        transaction.on_commit(lambda: _run(ids))


def _run(ids: set[str]) -> None:
    for callback in list(_callbacks):
        try:
            callback(ids)
        except Exception as exc:  # noqa: BLE001 - the transition committed; a hook must not undo its answer
            logger.warning("batch hook %s failed: %s", getattr(callback, "__name__", callback), type(exc).__name__)


def batch_pks(batch_ids: Iterable[Any]) -> list[uuid.UUID]:
    """The ids a hook was handed, as primary keys (anything that is not a UUID left out)."""
    pks = []
    for value in batch_ids:
        try:
            pks.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    return pks


class RowById(Generic[M]):
    """A hook's read of one row by primary key, compiled once per database alias.

    A hook runs after every task's end, and Django compiles a query (worse, one with a subquery)
    in about as long as the database takes to run it: ``build(pk)`` gives the queryset for one id;
    it is compiled for a sentinel id, whose place among the parameters each call fills with its
    id, and run as a raw query (which converts the columns as the fields do, and sets any
    annotation as an attribute)."""

    def __init__(self, model: type[M], build: Callable[[uuid.UUID], QuerySet[M]]) -> None:
        self.model, self.build = model, build
        self._compiled: dict[str, tuple[str, list[Any], int]] = {}

    def _prepared(self, pk: uuid.UUID, using: str) -> Any:
        field = self.model._meta.pk
        assert field is not None
        return field.get_db_prep_value(pk, connections[using])

    def get(self, pk: uuid.UUID) -> M | None:
        using = router.db_for_read(self.model)
        if using not in self._compiled:
            sentinel = uuid.UUID(int=0)
            sql, params = self.build(sentinel).using(using).query.get_compiler(using=using).as_sql()
            prepared = self._prepared(sentinel, using)
            [where] = [i for i, p in enumerate(params) if p == prepared]
            self._compiled[using] = (sql, list(params), where)
        sql, params, where = self._compiled[using]
        values = [*params]
        values[where] = self._prepared(pk, using)
        for row in self.model._default_manager.using(using).raw(sql, values):
            return row
        return None

    def forget(self) -> None:
        """Compile anew on the next call (tests)."""
        self._compiled.clear()
