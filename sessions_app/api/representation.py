"""The session object of the API, built from ``values()`` rows as ``SessionSerializer`` declares it.

Listing is the hottest read of the API (portals poll it), and building model instances of
four joined tables plus a DRF serializer per row costs several times more CPU
(bench/RESULTS.md). So responses are built from ``values()`` rows, and the serializer stays
the one declaration of the object: its fields give the field order, the ``values()``
columns (``source="user.username"`` reads ``user__username``) and each value (what the
field's ``to_representation`` returns, see ``_reader``). Only the fields the serializer
computes need a row form here, in ``COMPUTED``; a serializer field that is neither a column
nor in ``COMPUTED`` stops the first build with ``ImproperlyConfigured``.
"""

from __future__ import annotations

import functools
import operator
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from rest_framework import ISO_8601, serializers
from rest_framework.settings import api_settings

from sessions_app.api.serializers import SessionSerializer, session_resources
from sessions_app.models import Session, viewer_path
from streamspace.api.prepared import Placeholder, PreparedValues

Row = dict[str, Any]


@dataclass(frozen=True)
class Computed:
    """A field the serializer computes: the columns it needs and how a row gives its value."""

    columns: tuple[str, ...]
    build: Callable[[Row], Any]


_AS_STORED = (
    serializers.CharField,
    serializers.IntegerField,
    serializers.BooleanField,
    serializers.ChoiceField,
)

COMPUTED: dict[str, Computed] = {
    "resources": Computed(
        ("cpu_millicores", "memory_mb"), lambda row: session_resources(row["cpu_millicores"], row["memory_mb"])
    ),
    "viewer_path": Computed(("id",), lambda row: viewer_path(row["id"])),
}


def _iso(value: datetime) -> str:
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _utc_iso_dates() -> bool:
    """Whether DRF writes a datetime the database returns as ``_iso`` does (ISO 8601 in UTC)."""
    output = api_settings.DATETIME_FORMAT
    return settings.USE_TZ and settings.TIME_ZONE == "UTC" and isinstance(output, str) and output.lower() == ISO_8601


def _reader(column: str, field: serializers.Field) -> Callable[[Row], Any]:
    """How a row gives ``field``'s value: what its ``to_representation`` returns.

    The database already returns the value DRF would write for the plain types (``str``,
    ``int``, ``bool``), so those are read as they are, and ``str`` of a UUID and ``_iso``
    of a UTC datetime equal DRF's output without its per-value timezone lookup. Any other
    field converts with its own ``to_representation``; ``None`` stays ``None``, as in DRF.
    """
    kind = type(field)
    if kind in _AS_STORED:
        return operator.itemgetter(column)
    convert: Callable[[Any], Any] = field.to_representation
    if kind is serializers.UUIDField and field.uuid_format == "hex_verbose":
        convert = str
    elif (
        kind is serializers.DateTimeField
        and not hasattr(field, "format")
        and not hasattr(field, "timezone")
        and _utc_iso_dates()
    ):
        convert = _iso

    def read(row: Row) -> Any:
        value = row[column]
        return None if value is None else convert(value)

    return read


@dataclass(frozen=True)
class Plan:
    """The ``values()`` columns a serializer's fields need and, in field order, their readers."""

    columns: tuple[str, ...]
    readers: tuple[tuple[str, Callable[[Row], Any]], ...]


def build_plan(serializer_class: type[serializers.Serializer], computed: dict[str, Computed]) -> Plan:
    """Read the plan off ``serializer_class``'s fields; ``computed`` gives the row form of the rest."""
    fields = serializer_class().fields
    columns: list[str] = []
    readers: list[tuple[str, Callable[[Row], Any]]] = []
    for name, field in fields.items():
        if name in computed:
            columns += computed[name].columns
            readers.append((name, computed[name].build))
        elif isinstance(field, serializers.SerializerMethodField):
            raise ImproperlyConfigured(f"{serializer_class.__name__}.{name} is computed: give it a row form.")
        else:
            column = field.source.replace(".", "__")
            columns.append(column)
            readers.append((name, _reader(column, field)))
    stale = set(computed) - set(fields)
    if stale:
        raise ImproperlyConfigured(f"Row forms for fields {serializer_class.__name__} lacks: {sorted(stale)}")
    return Plan(tuple(dict.fromkeys(columns)), tuple(readers))


@functools.cache
def _plan() -> Plan:
    return build_plan(SessionSerializer, COMPUTED)


def represent(row: Row) -> dict[str, Any]:
    """The API's session object for one row of :func:`session_rows`."""
    return {name: read(row) for name, read in _plan().readers}


def session_rows(queryset: QuerySet[Session]) -> QuerySet:
    """``queryset`` as the ``values()`` rows :func:`represent` takes."""
    return queryset.values(*_plan().columns)


def represent_many(queryset: QuerySet[Session]) -> list[dict[str, Any]]:
    return [represent(row) for row in session_rows(queryset)]


def represent_written(session: Session) -> dict[str, Any]:
    """The API's object of a session from the instance that has just been written (``user``,
    ``template`` and ``agent`` loaded), without reading the row back.

    Every field of the object is stored as the instance holds it (no column here rounds,
    trims or converts on the way in), so this equals :func:`represent_one` of the row as
    written; ``tests/sessions/test_launch_queries.py`` compares the two.
    """
    row: Row = {}
    for column in _plan().columns:
        value: Any = session
        for part in column.split("__"):
            value = None if value is None else getattr(value, part)
        row[column] = value
    return represent(row)


# The one-session read of a caller allowed to see it, compiled once per process
# (``streamspace.api.prepared``): every launch and session action answers with it.
_by_id = PreparedValues(
    lambda shape, *, session_id: session_rows(Session.objects.filter(pk=session_id)),
    session_id=Placeholder(Session._meta.pk, uuid.UUID("5e55105e-0000-4000-8000-00000000d1d1")),
)


def represent_one(session_id: Any) -> dict[str, Any]:
    """The API's object of the session ``session_id``; ``Session.DoesNotExist`` if there is none."""
    rows = _by_id.rows(None, session_id=session_id)
    if not rows:
        raise Session.DoesNotExist(f"No session {session_id}.")
    return represent(rows[0])
