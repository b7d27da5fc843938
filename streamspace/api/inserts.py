"""New rows of different models written in one statement: one database round trip.

A write that must hold a lock while it inserts several rows (a launch: the session, its
first period, its audit event, its command, under the user's quota row) holds it for one
round trip per row. On PostgreSQL :func:`insert_together` sends every row's own ``INSERT``,
as Django's compiler writes it for ``save(force_insert=True)``, as the data-modifying
common table expressions of one statement; each row gets its generated primary key back
and its ``auto_now`` values, as a save gives. Django declares PostgreSQL's foreign keys
``DEFERRABLE INITIALLY DEFERRED`` (checked at commit), so the rows' order is free.
Elsewhere (SQLite) each instance is saved in turn, in the order given.

Unlike ``save()``, no ``pre_save``/``post_save`` signal is sent: use it for models whose
saves no receiver watches. Running the compiled SQL relies on Django's ``InsertQuery`` and
``SQLInsertCompiler``; ``tests/identity/test_django_private_names.py`` ties them to the
pinned Django.
"""

from __future__ import annotations

from django.db import connections, router
from django.db.models import Model
from django.db.models.sql import InsertQuery


def insert_together(*instances: Model) -> None:
    """``INSERT`` every instance (none saved yet) in one statement on PostgreSQL, in order
    elsewhere; each is saved afterwards (primary key set, ``_state.adding`` False)."""
    if not instances:
        return
    using = router.db_for_write(type(instances[0]))
    connection = connections[using]
    if connection.vendor != "postgresql":
        for instance in instances:
            instance.save(force_insert=True, using=using)
        return
    parts: list[str] = []
    params: list[object] = []
    returning: list[tuple[Model, list]] = []
    for index, instance in enumerate(instances):
        meta = instance._meta
        if instance.pk is None:
            instance.pk = meta.pk.get_pk_value_on_save(instance)
        # What Model.save() writes and reads back for a new row.
        fields = [
            f
            for f in meta.local_concrete_fields
            if not f.generated and (instance.pk is not None or f is not meta.auto_field)
        ]
        back = list(meta.db_returning_fields)
        query = InsertQuery(type(instance))
        query.insert_values(fields, [instance])
        compiler = query.get_compiler(using=using)
        compiler.returning_fields = back
        ((sql, row_params),) = compiler.as_sql()
        parts.append(f"i{index} AS ({sql})")
        params.extend(row_params)
        returning.append((instance, back))
    quote = connection.ops.quote_name
    selects = [f"(SELECT {quote(f.column)} FROM i{i})" for i, (_, back) in enumerate(returning) for f in back]
    with connection.cursor() as cursor:
        cursor.execute(f"WITH {', '.join(parts)} SELECT {', '.join(selects) or 'NULL'}", params)
        values = iter(cursor.fetchone())
    for instance, back in returning:
        for field in back:
            value = next(values)
            if hasattr(field, "from_db_value"):
                value = field.from_db_value(value, None, connection)
            setattr(instance, field.attname, value)
        instance._state.adding = False
        instance._state.db = using
