"""A ``values()`` query turned into SQL once per process, then run with new parameter values.

Building a queryset and compiling it to SQL costs more CPU than PostgreSQL spends running a
primary-key lookup; for the hottest reads (one object by id for a user) the SQL never
changes, only its parameters do. :class:`PreparedValues` builds the query once per *shape*
(e.g. operator or not: another ``WHERE``) from stand-in values, finds where those values sit
among the compiled parameters, and runs the same SQL with the request's values in their
place, through Django's own compiler: the same statement, the same converters, the same
rows as the queryset would give. :class:`PreparedInstances` does the same for a queryset of a
model's own rows and hands back instances, as iterating the queryset would.

The stand-ins must be values no real request carries. A shape may leave a placeholder out
(an operator's query has no user in it), but none may carry a stand-in in its SQL text
instead of a parameter (checked when the shape is built): such a query cannot be prepared.

Running fixed SQL through a compiler (``SQLCompiler.results_iter`` with ``as_sql`` replaced on
a per-call copy) relies on how Django's compiler works inside;
``tests/identity/test_django_private_names.py`` ties it to the pinned Django.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.models import Field, Model, QuerySet
from django.db.models.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class Placeholder:
    """A parameter of the query: the model field its value is compared with, and a stand-in."""

    field: Field
    stand_in: Any

    def db_value(self, value: Any, connection: Any) -> Any:
        return self.field.get_db_prep_value(value, connection, prepared=False)


@dataclass(frozen=True)
class _Shape:
    compiler: SQLCompiler
    alias: str
    sql: str
    params: tuple[Any, ...]
    slots: tuple[str | None, ...]  # per parameter: the placeholder it takes, or None (a constant)
    names: tuple[str, ...]


class PreparedValues:
    """``build(shape, **stand_ins)`` gives the ``values()`` queryset; :meth:`rows` runs it."""

    def __init__(self, build: Callable[..., QuerySet], **placeholders: Placeholder) -> None:
        self._build = build
        self._placeholders = placeholders
        self._shapes: dict[Any, _Shape] = {}

    def rows(self, shape: Any, **values: Any) -> list[dict[str, Any]]:
        """The rows for ``values`` (one per placeholder) of the query of ``shape``."""
        return self._run(shape, values)[1]

    def _run(self, shape: Any, values: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
        """The database alias the query of ``shape`` runs on, and its rows for ``values``."""
        prepared = self._shapes.get(shape) or self._prepare(shape)
        connection = connections[prepared.alias]
        db_values = {name: self._placeholders[name].db_value(value, connection) for name, value in values.items()}
        params = tuple(
            p if slot is None else db_values[slot] for slot, p in zip(prepared.slots, prepared.params, strict=True)
        )
        run = copy.copy(prepared.compiler)  # per call: compilers are not shared between threads
        run.connection = connection  # this thread's
        run.as_sql = lambda *args, **kwargs: (prepared.sql, params)  # type: ignore[method-assign]
        return prepared.alias, [dict(zip(prepared.names, row, strict=True)) for row in run.results_iter()]

    def _prepare(self, shape: Any) -> _Shape:
        queryset = self._build(shape, **{name: p.stand_in for name, p in self._placeholders.items()})
        compiler = queryset.query.get_compiler(queryset.db)
        sql, params = compiler.as_sql()
        connection = connections[queryset.db]
        stand_ins = {name: p.db_value(p.stand_in, connection) for name, p in self._placeholders.items()}
        slots = tuple(next((name for name, v in stand_ins.items() if v == p), None) for p in params)
        inlined = [
            name for name, p in self._placeholders.items() if str(p.stand_in) in sql or str(stand_ins[name]) in sql
        ]
        if inlined:
            raise ImproperlyConfigured(f"Placeholders {inlined} are in the SQL text, not its parameters: {sql}")
        query = queryset.query  # the row's keys as ``ValuesIterable`` names them
        names = tuple(query.selected or (*query.extra_select, *query.values_select, *query.annotation_select))
        prepared = _Shape(compiler, queryset.db, sql, tuple(params), slots, names)
        self._shapes[shape] = prepared
        return prepared


M = TypeVar("M", bound=Model)


class PreparedInstances(PreparedValues, Generic[M]):
    """:class:`PreparedValues` whose rows come back as instances of ``model``.

    ``build(shape, **stand_ins)`` gives a queryset of ``model``'s own rows (no
    ``select_related``, no deferred fields); its ``values()`` are every concrete field, and
    each row becomes an instance through ``Model.from_db``, as the queryset's iteration
    makes it. Locks (``select_for_update``) and ordering stay part of the compiled SQL.
    """

    def __init__(self, model: type[M], build: Callable[..., QuerySet], **placeholders: Placeholder) -> None:
        self._model = model
        self._attnames = tuple(field.attname for field in model._meta.concrete_fields)
        super().__init__(lambda shape, **kw: build(shape, **kw).values(*self._attnames), **placeholders)

    def instances(self, shape: Any, **values: Any) -> list[M]:
        """The instances for ``values`` (one per placeholder) of the query of ``shape``."""
        alias, rows = self._run(shape, values)
        return [self._model.from_db(alias, self._attnames, [row[name] for name in self._attnames]) for row in rows]
