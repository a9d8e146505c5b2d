"""A worker process forked from a parent that used the database (django-q2's sentinel runs the
scheduler, then forks replacement workers) opens connections of its own instead of sharing the
parent's (and its psycopg pool's) sockets."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.inference.broker import _inherited, forget_inherited_connections

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_forked_child_drops_the_parents_connection_without_closing_it() -> None:
    from apps.inference.models import QueueEntry

    QueueEntry.objects.count()  # the "parent" has an open connection (and its pool on PostgreSQL)
    parents = connection.connection
    assert parents is not None
    forget_inherited_connections()  # what os.register_at_fork runs in the child
    assert connection.connection is None
    assert parents in _inherited  # kept, never closed: it is the parent's session
    if connection.vendor == "postgresql":
        from django.db.backends.postgresql.base import DatabaseWrapper

        assert "default" not in DatabaseWrapper._connection_pools or not connection.settings_dict["OPTIONS"].get("pool")
    assert QueueEntry.objects.count() == 0  # a new connection of the child's own
    assert connection.connection is not parents
    # no real fork here: this process still owns what it "inherited"; close it
    while _inherited:
        _inherited.pop().close()
