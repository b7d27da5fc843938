"""The Django internals three modules rely on, tied to the pinned Django: a new Django release
fails here first, naming what to re-check (``streamspace/shared_cache.py``,
``streamspace/api/prepared.py``, ``streamspace/api/inserts.py``)."""

from __future__ import annotations

import importlib.metadata
import inspect
from pathlib import Path

import django
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.db.models import Model
from django.db.models.sql import InsertQuery
from django.db.models.sql.compiler import SQLCompiler, SQLInsertCompiler

PINNED = next(
    line.split("==", 1)[1].strip()
    for line in (Path(__file__).resolve().parents[2] / "requirements.txt").read_text().splitlines()
    if line.startswith("Django==")
)


def test_the_installed_django_is_the_pinned_one():
    assert django.get_version() == importlib.metadata.version("Django") == PINNED


def test_the_redis_cache_client_has_the_private_names_shared_cache_uses():
    client = RedisCacheClient(["redis://127.0.0.1:6379/0"])
    for name in ("_pools", "_pool_class", "_servers", "_pool_options"):
        assert hasattr(client, name), name
    assert inspect.signature(client._get_connection_pool_index).parameters.keys() == {"write"}
    assert "self._class(" in inspect.getsource(RedisCache._cache.func)  # the backend builds its client from _class


def test_the_compiler_runs_the_sql_its_as_sql_returns():
    source = inspect.getsource(SQLCompiler.execute_sql)
    assert "self.as_sql()" in source  # prepared.py replaces as_sql on a per-call copy
    assert "execute_sql" in inspect.getsource(SQLCompiler.results_iter)


def test_an_insert_compiles_as_save_writes_it():
    """inserts.py compiles ``InsertQuery.insert_values`` with the fields and returning fields
    ``Model._save_table`` uses, and reads back what ``execute_sql`` would set."""
    save_table = inspect.getsource(Model._save_table)
    assert "if not f.generated and (pk_set or f is not meta.auto_field)" in save_table
    assert "returning_fields = meta.db_returning_fields" in save_table
    assert "self.pre_save_val(field, obj)" in inspect.getsource(SQLInsertCompiler.as_sql)  # auto_now values
    assert inspect.signature(InsertQuery.insert_values).parameters.keys() >= {"fields", "objs"}
