"""Multi-row INSERTs for the background writers: the statement compiled once per process, the
rows sent with one ``executemany``.

Django's ``bulk_create`` compiles its INSERT on every call, rendering a placeholder for every value
of every row, and prepares each value through the compiler and the field (``pre_save``,
``get_db_prep_save``): for the request records (about 40 columns) and their audit events that was
most of the record writer's CPU, which takes the GIL from the event loop (bench/README.md). Here:

* the statement is Django's own, compiled for one row of the model's concrete fields, and kept per
  model and database alias (the SQL does not depend on the values: a model with a field that renders
  a placeholder of its own, or a value that is an expression, takes ``bulk_create``);
* each value goes through the field's ``pre_save`` and ``get_db_prep_save``, except where those are
  known to return the value unchanged: a ``str`` in a plain ``CharField``/``TextField``, a ``bool``
  in a ``BooleanField``, an ``int`` (or None) in an integer field or a foreign key to one, when the
  backend does not wrap integers (PostgreSQL's psycopg adapter does, so there they take the field).
  Everything else (dates, UUIDs, JSON, the encrypted fields) takes its field's own conversion.

Only for rows whose primary key is set before the insert, or whose caller does not need the
generated keys back (``executemany`` returns no rows).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import BooleanField, CharField, Field, ForeignKey, IntegerField, Model, TextField
from django.db.models.fields import AutoFieldMixin
from django.db.models.sql import InsertQuery

Convert = Callable[[Model, Any], Any]  # (row, connection) → the value to send

_compiled: dict[tuple[str, str, bool], tuple[str, list[Field[Any, Any]], list[Convert]] | None] = {}
_lock = threading.Lock()


def _as_is(types: tuple[type, ...], field: Field[Any, Any]) -> Convert:
    attname, prep = field.attname, field.get_db_prep_save

    def convert(obj: Model, connection: Any) -> Any:
        value = getattr(obj, attname)
        if value is None or type(value) in types:
            return value
        return prep(value, connection)

    return convert


def _through_field(field: Field[Any, Any]) -> Convert:
    pre_save, prep = field.pre_save, field.get_db_prep_save

    def convert(obj: Model, connection: Any) -> Any:
        value = pre_save(obj, True)
        if hasattr(value, "resolve_expression"):
            raise _Expression
        return prep(value, connection)

    return convert


class _Expression(Exception):
    """A value that renders SQL of its own: the row takes ``bulk_create``."""


def _int_as_is(field: Field[Any, Any], ops: type[BaseDatabaseOperations]) -> bool:
    """Whether ``get_db_prep_save`` returns an ``int`` unchanged for this field on this backend."""
    target = field.target_field if type(field) is ForeignKey else field
    if not isinstance(target, IntegerField) or type(target).get_prep_value is not IntegerField.get_prep_value:
        return False
    if ops.adapt_integerfield_value is not BaseDatabaseOperations.adapt_integerfield_value:
        return False  # psycopg 3 wraps integers by column type
    prep = type(target).get_db_prep_value
    if prep is getattr(AutoFieldMixin, "get_db_prep_value", None):
        if ops.validate_autopk_value is not BaseDatabaseOperations.validate_autopk_value:
            return False
    elif prep is not IntegerField.get_db_prep_value:
        return False
    return type(field) is ForeignKey or type(field).get_db_prep_save is Field.get_db_prep_save


def _converter(field: Field[Any, Any], ops: type[BaseDatabaseOperations]) -> Convert:
    kind = type(field)
    if kind in (CharField, TextField):
        return _as_is((str,), field)
    if kind is BooleanField:
        return _as_is((bool,), field)
    if _int_as_is(field, ops):
        return _as_is((int,), field)
    return _through_field(field)


def _compile(model: type[Model], using: str, with_pk: bool) -> tuple[str, list[Field[Any, Any]], list[Convert]] | None:
    connection = connections[using]
    fields = [f for f in model._meta.concrete_fields if not f.generated and (with_pk or not f.primary_key)]
    if any(hasattr(f, "get_placeholder") for f in fields):
        return None
    query = InsertQuery(model)
    query.insert_values(fields, [model()])
    compiler = query.get_compiler(using=using)
    ((statement, params),) = compiler.as_sql()
    if len(params) != len(fields) or statement.count("%s") != len(fields):
        return None  # a placeholder that is not one plain parameter per field
    return statement, fields, [_converter(f, type(connection.ops)) for f in fields]


def insert(model: type[Model], objs: Sequence[Model], using: str, *, with_pk: bool = True) -> bool:
    """INSERT ``objs`` with one ``executemany`` of the cached statement (``with_pk``: their primary
    key is set and sent; else left to the database, and not read back). False when this model or
    one of these values needs Django's ``bulk_create``: nothing was sent then."""
    if not objs:
        return True
    key = (model._meta.label, using, with_pk)
    if key not in _compiled:
        with _lock:
            _compiled[key] = _compile(model, using, with_pk)
    compiled = _compiled[key]
    if compiled is None:
        return False
    statement, _, converters = compiled
    connection = connections[using]
    try:
        rows = [[convert(obj, connection) for convert in converters] for obj in objs]
    except _Expression:
        return False
    with connection.cursor() as cursor:
        cursor.executemany(statement, rows)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = using
    return True


def insert_returning_pk(model: type[Model], obj: Model, using: str) -> bool:
    """INSERT one row whose primary key the database generates, with the cached statement
    (``insert``'s, ``with_pk`` False) and ``RETURNING`` its key, which is set on ``obj``: one
    statement, without Django's compiler (the audit chain's single appends). False when the
    database cannot return columns from an INSERT, or this model or value needs Django's own
    ``save``: nothing was sent then."""
    connection = connections[using]
    if not connection.features.can_return_columns_from_insert:
        return False
    key = (model._meta.label, using, False)
    if key not in _compiled:
        with _lock:
            _compiled[key] = _compile(model, using, False)
    compiled = _compiled[key]
    if compiled is None:
        return False
    statement, _, converters = compiled
    try:
        row = [convert(obj, connection) for convert in converters]
    except _Expression:
        return False
    pk = model._meta.pk
    assert pk is not None
    with connection.cursor() as cursor:
        cursor.execute(f"{statement} RETURNING {connection.ops.quote_name(pk.column)}", row)
        (value,) = cursor.fetchone()
    setattr(obj, pk.attname, value)
    obj._state.adding = False
    obj._state.db = using
    return True
