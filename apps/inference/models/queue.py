"""The priority broker's table (``QueueEntry``): the ready head, leases, fair turns between
locations, delivery in one statement."""

from __future__ import annotations

from typing import Any

from django.db import connections, models
from django.db.models import F

from apps.inference.models.base import LockingQuerySet, _concrete
from apps.inference.models.tasks import LIVE_STATUSES, InferenceTask


class QueueEntryQuerySet(LockingQuerySet["QueueEntry"]):
    def next_ready_sql(self, key: str, now: Any) -> tuple[str, list[Any]]:
        """A subquery of the id of queue ``key``'s next entry ready ``now`` (no lock: a peek), with its
        parameters: what the delivered task's claim asks in the same statement
        (``InferenceTaskQuerySet.claim_delivered``)."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        e_id, e_key, e_locked, e_rank = _concrete(QueueEntry, ["id", "key", "locked_until", "rank"])
        sql = (
            f"SELECT {qn(e_id.column)} FROM {qn(QueueEntry._meta.db_table)} WHERE {qn(e_key.column)} = %s "
            f"AND {qn(e_locked.column)} <= %s ORDER BY {qn(e_rank.column)} LIMIT 1"
        )
        return sql, [key, e_locked.get_db_prep_save(now, connection)]

    """The broker's table, each query written once: the ready head of a queue (``ready``), the
    leased entries (``leased``), those ahead of a rank, the entries of some tasks; leases
    (``lease``, ``release``). The statements of every submit, delivery and run are written once
    as SQL (the ORM's compiler cost more than the statements): the broker's one-statement delivery
    (``deliver``) and acknowledgement (``delete_unless_live``), a location's fair-turn tail
    (``tail_rank``), the places of new tasks (``places``), the peek at the head (``head_priority``)."""

    def in_queue(self, key: str) -> QueueEntryQuerySet:
        return self.filter(key=key)

    def ready(self, key: str, now: Any) -> QueueEntryQuerySet:
        """The entries of queue ``key`` that may be delivered now (not leased), head first: the
        ``(key, rank)`` index read in order, whatever the queue's depth."""
        return self.filter(key=key, locked_until__lte=now).order_by("rank")

    def leased(self, key: str, now: Any) -> QueueEntryQuerySet:
        """The entries of queue ``key`` handed out and not yet acknowledged (their lease running)."""
        return self.filter(key=key, locked_until__gt=now)

    def ahead_of(self, rank: Any) -> QueueEntryQuerySet:
        """Entries that the broker delivers before one of ``rank`` (a value or an ``OuterRef``)."""
        return self.filter(rank__lt=rank)

    def of_tasks(self, task_ids: Any) -> QueueEntryQuerySet:
        return self.filter(task_id__in=task_ids)

    def tail_rank(self, key: str, location_id: int, priority: int) -> float | None:
        """The rank of the last entry of queue ``key`` that this location has at this priority
        (waiting or running), None without any: one read of the ``queue_entry_turns`` index, written
        once as SQL (read for every submit: the ORM's compiler cost more than the read)."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        e_key, e_location, e_priority, e_rank = (
            qn(f.column) for f in _concrete(QueueEntry, ["key", "location_id", "priority", "rank"])
        )
        sql = (
            f"SELECT {e_rank} FROM {qn(QueueEntry._meta.db_table)} WHERE {e_key} = %s AND {e_location} = %s "
            f"AND {e_priority} = %s ORDER BY {e_rank} DESC LIMIT 1"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [key, location_id, priority])
            found = cursor.fetchone()
        return found[0] if found else None

    def places(self, key: str, location_id: int, task_ids: list[Any]) -> dict[Any, int]:
        """For each of ``task_ids`` with an entry in queue ``key``: its 1-based place among the entries
        of queued tasks of ``location_id``'s organization (those ranking before it, + 1), by task id.
        One statement, written once as SQL: the ORM took ~3 ms to build and compile it for each
        submit, where the database answers in microseconds (each place is counted from the
        ``(key, rank)`` index by a correlated subquery)."""
        if not task_ids:
            return {}
        connection = connections[self.db]
        qn = connection.ops.quote_name
        e_key, e_rank, e_task = (qn(f.column) for f in _concrete(QueueEntry, ["key", "rank", "task_id"]))
        t_id, t_status, t_location = (qn(f.column) for f in _concrete(InferenceTask, ["id", "status", "location"]))
        location: type[models.Model] = InferenceTask._meta.get_field("location").related_model  # type: ignore[assignment]
        l_id, l_org = (qn(f.column) for f in _concrete(location, ["id", "organization"]))
        entries, tasks, locations = (
            qn(QueueEntry._meta.db_table),
            qn(InferenceTask._meta.db_table),
            qn(location._meta.db_table),
        )
        sql = (
            f"SELECT e.{e_task}, (SELECT COUNT(*) FROM {entries} w WHERE w.{e_key} = %s AND w.{e_rank} < e.{e_rank} "
            f"AND w.{e_task} IN (SELECT t.{t_id} FROM {tasks} t INNER JOIN {locations} l ON t.{t_location} = l.{l_id} "
            f"WHERE l.{l_org} = (SELECT o.{l_org} FROM {locations} o WHERE o.{l_id} = %s) AND t.{t_status} = %s)) "
            f"FROM {entries} e WHERE e.{e_task} IN ({', '.join(['%s'] * len(task_ids))})"
        )
        [field] = _concrete(QueueEntry, ["task_id"])
        params: list[Any] = [key, location_id, InferenceTask.Status.QUEUED.value]
        params += [field.get_db_prep_value(t, connection) for t in task_ids]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return {field.to_python(task_id): ahead + 1 for task_id, ahead in cursor.fetchall()}

    def delete_unless_live(self, entry_id: int) -> int:
        """Delete the entry ``entry_id`` unless its task is still queued or processing: one statement
        (``DELETE … WHERE id = … AND NOT EXISTS (the live task)``), so a concurrent claim or requeue
        is seen or waited for; the number of rows deleted. Written once as SQL: the broker's
        acknowledgement of every delivery, where the ORM's ``Exists`` cost more to compile than the
        delete."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        e_id, e_task = (qn(f.column) for f in _concrete(QueueEntry, ["id", "task_id"]))
        t_id, t_status = (qn(f.column) for f in _concrete(InferenceTask, ["id", "status"]))
        entries = qn(QueueEntry._meta.db_table)
        sql = (
            f"DELETE FROM {entries} WHERE {e_id} = %s AND NOT EXISTS (SELECT 1 FROM "
            f"{qn(InferenceTask._meta.db_table)} t WHERE t.{t_id} = {entries}.{e_task} AND t.{t_status} IN (%s, %s))"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [entry_id, *(str(s) for s in LIVE_STATUSES)])
            return cursor.rowcount

    def head_priority(self, key: str, now: Any) -> int | None:
        """The priority of the entry of queue ``key`` that would be delivered next, None if none is
        ready: one read of the head of the ``(key, rank)`` index, no lock. Written once as SQL (a
        running worker peeks after each write)."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        e_key, e_locked, e_rank, e_priority = (
            qn(f.column) for f in _concrete(QueueEntry, ["key", "locked_until", "rank", "priority"])
        )
        [stamp] = _concrete(QueueEntry, ["locked_until"])
        sql = (
            f"SELECT {e_priority} FROM {qn(QueueEntry._meta.db_table)} WHERE {e_key} = %s AND {e_locked} <= %s "
            f"ORDER BY {e_rank} LIMIT 1"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [key, stamp.get_db_prep_value(now, connection)])
            found = cursor.fetchone()
        return found[0] if found else None

    def handed_out_ahead(self, key: str, now: Any, rank: float) -> bool:
        """Whether queue ``key`` has an entry ahead of ``rank`` that was handed out (leased) while its
        task is still QUEUED: delivered to a cluster and waiting there for a free worker. One
        statement (an ``EXISTS`` over the leased entries ahead, few: running groups and prefetches),
        written once as SQL."""
        connection = connections[self.db]
        qn = connection.ops.quote_name
        e_key, e_locked, e_rank, e_task = (
            qn(f.column) for f in _concrete(QueueEntry, ["key", "locked_until", "rank", "task_id"])
        )
        t_id, t_status = (qn(f.column) for f in _concrete(InferenceTask, ["id", "status"]))
        [stamp] = _concrete(QueueEntry, ["locked_until"])
        sql = (
            f"SELECT 1 FROM {qn(QueueEntry._meta.db_table)} e INNER JOIN {qn(InferenceTask._meta.db_table)} t "
            f"ON t.{t_id} = e.{e_task} WHERE e.{e_key} = %s AND e.{e_locked} > %s AND e.{e_rank} < %s "
            f"AND t.{t_status} = %s LIMIT 1"
        )
        with connection.cursor() as cursor:
            cursor.execute(
                sql, [key, stamp.get_db_prep_value(now, connection), rank, InferenceTask.Status.QUEUED.value]
            )
            return cursor.fetchone() is not None

    def deliveries(self, task_id: Any) -> int:
        """How many times the task's entry was handed out (0 without an entry)."""
        return max(self.filter(task_id=task_id).values_list("deliveries", flat=True), default=0)

    def lease(self, until: Any, *, delivery: bool = False) -> int:
        """Lease these entries until ``until`` (invisible to deliveries meanwhile); ``delivery``: it
        is a delivery, counted in ``deliveries`` (a re-delivery after a lease ends counts again)."""
        if delivery:
            return self.update(locked_until=until, deliveries=F("deliveries") + 1)
        return self.update(locked_until=until)

    def release(self, now: Any) -> int:
        """End these entries' leases now and reset their delivery count (their task goes back to the
        queue in its old place: it did not fail)."""
        return self.update(locked_until=now, deliveries=0)

    def deliver(self, key: str, now: Any, n: int, until: Any) -> list[tuple[int, str]]:
        """Lease the first ``n`` ready entries of queue ``key`` as a delivery: ``(id, payload)``, head
        first, in one statement (``UPDATE … WHERE id IN (SELECT … [FOR UPDATE SKIP LOCKED])
        RETURNING``). On PostgreSQL concurrent deliveries never take the same entry nor wait for
        each other; on SQLite (RETURNING since 3.35) the statement holds the write lock, which
        serialises them."""
        connection = connections[self.db]
        skip = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
        meta = QueueEntry._meta
        qn = connection.ops.quote_name
        names = ("id", "key", "locked_until", "deliveries", "rank", "payload")
        col = {name: qn(f.column) for name, f in zip(names, _concrete(QueueEntry, names), strict=True)}
        table = qn(meta.db_table)
        sql = (
            f"UPDATE {table} SET {col['locked_until']} = %s, {col['deliveries']} = {col['deliveries']} + 1 "
            f"WHERE {col['id']} IN (SELECT {col['id']} FROM {table} "
            f"WHERE {col['key']} = %s AND {col['locked_until']} <= %s "
            f"ORDER BY {col['rank']} LIMIT %s{skip}) "
            f"RETURNING {col['id']}, {col['payload']}, {col['rank']}"
        )
        [stamp] = _concrete(QueueEntry, ["locked_until"])
        with connection.cursor() as cursor:
            cursor.execute(
                sql, [stamp.get_db_prep_value(until, connection), key, stamp.get_db_prep_value(now, connection), n]
            )
            rows = cursor.fetchall()
        return [(pk, payload) for pk, payload, _ in sorted(rows, key=lambda r: r[2])]


class QueueEntry(models.Model):
    """One pending delivery in the priority broker (apps.inference.broker).

    ``rank`` is the enqueue time (epoch seconds) minus ``priority × MEDAI_QUEUE_AGING_SECONDS``:
    ordering by rank gives strict priority order within the aging window and FIFO within a level,
    and a task that waited one aging period counts as one level higher (anti-starvation). Within a
    level, locations take turns: a location's task goes ``MEDAI_QUEUE_FAIR_TURN_SECONDS`` after
    the last one it has queued at that level (``broker.fair_ranks``; ``location_id`` and the
    ``queue_entry_turns`` index find that one).
    ``locked_until`` is the lease: a delivered entry is invisible until then and is deleted on ack.
    """

    key = models.CharField(max_length=100)
    priority = models.SmallIntegerField(default=1)
    rank = models.FloatField()
    enqueued_at = models.DateTimeField()
    locked_until = models.DateTimeField()
    deliveries = models.PositiveIntegerField(default=0)
    task_id = models.UUIDField(null=True, blank=True, db_index=True)
    location_id = models.IntegerField(null=True, blank=True, help_text="The task's location: its fair turn.")
    payload = models.TextField()

    objects = QueueEntryQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["key", "rank"], name="queue_entry_next"),
            models.Index(fields=["key", "location_id", "priority", "rank"], name="queue_entry_turns"),
        ]

    def __str__(self) -> str:
        return f"{self.key}#{self.pk} p{self.priority}"
