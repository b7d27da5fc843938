"""The dependency rule of docs/architecture.md, checked over every import in the source tree.

Layers, lowest first; a module may import its own layer and lower ones, never a higher one.
Imports inside functions count too: hiding an import in a function does not hide the
dependency. ``agent_runtime`` is installed on hosts without Django, so it imports nothing
of the control plane and no Django at all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("agent_runtime", "streamspace", "agents_app", "sessions_app", "plugins_app")

# (layer name, module prefixes); the first matching prefix wins, so list specific ones first.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("agent_runtime", ("agent_runtime",)),
    (
        "core",
        tuple(
            f"streamspace.{m}"
            for m in (
                "events",
                "fanout",
                "accounts",
                "audit",
                "api",
                "transport",
                "crypto",
                "logredact",
                "env",
                "jobs",
                "celery",
                "channel_layer",
                "redis_client",
                "shared_cache",
                "settings",
                "settings_sso",
            )
        ),
    ),
    ("agents_app", ("agents_app",)),
    ("sessions_app", ("sessions_app",)),
    ("plugins_app", ("plugins_app",)),
    ("top", ("streamspace",)),
]
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}


def layer_of(module: str) -> str | None:
    if module == "streamspace":
        return "core"  # the package itself: its version and Celery app, no imports of the layers above
    for name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in ``path`` names (absolute; relative resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from a.b import c`` names a.b.c (a module or a name in a.b): both sit in a.b's layer
            # or deeper, so recording a.b.c is enough and keeps ``from streamspace import events``
            # in the layer of ``streamspace.events``.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def source_files() -> list[Path]:
    files = []
    for top in SOURCES:
        files += [p for p in (ROOT / top).rglob("*.py") if "migrations" not in p.parts]
    return sorted(files)


def violations() -> list[str]:
    found = []
    for path in source_files():
        own = layer_of(module_name(path))
        for line, target in imports_of(path):
            if own == "agent_runtime" and (target == "django" or target.startswith("django.")):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target} (agent_runtime has no Django)")
                continue
            theirs = layer_of(target)
            if own is None or theirs is None or theirs == own:
                continue
            if RANK[theirs] > RANK[own]:
                found.append(f"{path.relative_to(ROOT)}:{line} ({own}) imports {target} ({theirs})")
    return sorted(set(found))


def test_every_source_module_has_a_layer():
    assert [str(p) for p in source_files() if layer_of(module_name(p)) is None] == []


def test_no_import_goes_up_a_layer():
    assert violations() == []


@pytest.mark.parametrize(
    ("source", "line", "expected"),
    [
        ("sessions_app/x.py", "from plugins_app import bus", True),
        ("agents_app/x.py", "def f():\n    from sessions_app.models import Session", True),
        ("streamspace/accounts/x.py", "import sessions_app.models", True),
        ("agent_runtime/x.py", "from django.conf import settings", True),
        ("streamspace/portal/x.py", "from sessions_app import services", False),
        ("sessions_app/x.py", "from agents_app.models import Agent", False),
        ("sessions_app/proxy/x.py", "from . import paths", False),
    ],
)
def test_the_check_catches_an_upward_import(tmp_path, monkeypatch, source, line, expected):
    """The checker itself: a planted upward import is reported, an allowed one is not."""
    global ROOT
    fake = tmp_path / source
    fake.parent.mkdir(parents=True)
    fake.write_text(line + "\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    monkeypatch.setattr(f"{__name__}.SOURCES", (source.split("/")[0],))
    assert bool(violations()) is expected
