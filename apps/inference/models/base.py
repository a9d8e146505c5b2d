"""What the querysets of the queue's models share: row locks where the database has them, and the
rows of the statements written in SQL read back as the ORM reads them."""

from __future__ import annotations

import weakref
from typing import Any, TypeVar

from django.db import connections, models

_M = TypeVar("_M", bound=models.Model)


class LockingQuerySet(models.QuerySet[_M]):
    def locked(self, skip: bool = False) -> LockingQuerySet[_M]:
        """Row locks where the database has them (PostgreSQL; with ``skip``, rows another transaction
        holds are skipped). SQLite's IMMEDIATE transaction already holds the write lock."""
        if connections[self.db].features.has_select_for_update_skip_locked:
            return self.select_for_update(skip_locked=skip)
        return self


def _concrete(model: type[models.Model], names: Any) -> list[models.Field[Any, Any]]:
    """The model's columns of these field names, in their order (for the statements written in SQL)."""
    by_name = {f.name: f for f in model._meta.concrete_fields}
    return [by_name[name] for name in names]


_readers: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], tuple[Any, list[Any]]]] = weakref.WeakKeyDictionary()


def _converted(model: type[models.Model], using: str, names: list[str], rows: list[Any]) -> list[list[Any]]:
    """The values of rows whose first columns are ``model``'s fields ``names`` (in order; the rest is
    ignored), each converted as the ORM's own read converts it: the backend's converters, then the
    field's (decryption of the encrypted fields; SQLite's dates, UUIDs and booleans). For the
    statements written in SQL; the converters are looked up once per connection (a thread's own)."""
    connection = connections[using]
    by_field = _readers.setdefault(connection, {})
    readers = []
    for name in names:
        reader = by_field.get((model._meta.label, name))
        if reader is None:
            col = model._meta.get_field(name).get_col(model._meta.db_table)  # type: ignore[union-attr]
            reader = by_field[(model._meta.label, name)] = (
                col,
                connection.ops.get_db_converters(col) + col.get_db_converters(connection),
            )
        readers.append(reader)
    found = []
    for row in rows:
        values = list(row[: len(names)])
        for i, (col, converters) in enumerate(readers):
            for convert in converters:
                values[i] = convert(values[i], col, connection)
        found.append(values)
    return found


def _from_rows(model: type[_M], using: str, rows: list[Any]) -> list[_M]:
    """Instances of ``model`` from rows whose first values are its concrete columns in order
    (``_converted``): the whole rows a ``RETURNING`` gives."""
    fields = model._meta.concrete_fields
    values = _converted(model, using, [f.name for f in fields], rows)
    names = [f.attname for f in fields]
    return [model.from_db(using, names, v) for v in values]
