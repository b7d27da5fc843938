"""The API's orjson renderer writes exactly the bytes DRF's ``JSONRenderer`` writes."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from rest_framework import renderers
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from sessions_app.models import SessionState
from streamspace.api.renderers import JSONRenderer

CASES = {
    "plain": {"a": 1, "b": [True, False, None], "c": "x", "d": -0.0, "e": 1.25, "f": 0.1, "g": 100.0},
    "unicode": {"name": "Bureau — ünïcödé ✓ 🎉", "line": "a\u2028b\u2029c", "quote": 'say "hi"\n\t\\'},
    "datetimes": {
        "utc": dt.datetime(2026, 12, 7, 15, 4, 5, 123456, tzinfo=dt.UTC),
        "naive": dt.datetime(2026, 12, 7, 15, 4, 5),
        "offset": dt.datetime(2026, 12, 7, 15, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        "date": dt.date(2026, 12, 7),
        "time": dt.time(15, 4, 5, 250000),
        "delta": dt.timedelta(seconds=90.5),
    },
    "other types": {
        "uuid": uuid.UUID("00000000-0000-4000-8000-000000000001"),
        "decimal": Decimal("12.50"),
        "lazy": gettext_lazy("Not found."),
        "choice": SessionState.RUNNING,
        "tuple": (1, 2),
        "set": {3},
        "bytes": b"raw",
    },
    "small and huge floats": {"a": 1e-05, "b": 1.5e-7, "c": 1e16, "d": 1.2e300, "e": 0.0001, "f": -3e-9},
    "non-string keys": {1: "one", 2.5: "x"},
    "huge integer": {"n": 2**70},
    "drf containers": ReturnDict({"results": ReturnList([{"id": 1}], serializer=None)}, serializer=None),
    "a list": [1, "two", {"three": 3.0}],
    "a string": "just text",
    "a number": 42,
}


@pytest.mark.parametrize("data", CASES.values(), ids=CASES.keys())
def test_same_bytes_as_drf(data):
    assert JSONRenderer().render(data) == renderers.JSONRenderer().render(data)


def test_same_bytes_for_random_floats():
    rng = random.Random(7)
    for _ in range(2000):
        value = rng.random() * 10 ** rng.randint(-12, 20) * rng.choice((1, -1))
        data = {"v": value, "w": [value, round(value, 3)]}
        assert JSONRenderer().render(data) == renderers.JSONRenderer().render(data)


@pytest.mark.parametrize("media_type", ["application/json; indent=4", "application/json; indent=0", None])
def test_indented_output_is_drfs(media_type):
    data = {"a": [1, {"b": 2}]}
    assert JSONRenderer().render(data, media_type) == renderers.JSONRenderer().render(data, media_type)


def test_none_renders_nothing():
    assert JSONRenderer().render(None) == b""
