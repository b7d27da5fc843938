"""The layout of the test suite: what a folder may import, and which tests live at the root.

- A test folder (``tests/<folder>/``, sub-folders included) imports its own modules and
  ``tests.support``; what two folders share lives in ``tests/support/``. The root's modules
  and ``tests/support/`` itself import only ``tests.support``.
- No module imports a ``conftest.py`` of another directory: fixtures reach other folders
  through pytest (``tests/conftest.py``), helpers through ``tests.support``.
- Root-level test files are the few in ``ROOT_TESTS``; a test about one part of the product
  goes into that part's folder (``tests/sessions/``, ``tests/api/``, ...).
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT_TESTS = {"test_architecture.py", "test_docs.py", "test_serve.py", "test_test_layout.py"}
SKIPPED = {"example_plugin"}  # an installed package of its own (tests/example_plugin/pyproject.toml)
SHARED = "support"


def python_files(tests: Path) -> list[Path]:
    return sorted(
        path
        for path in tests.rglob("*.py")
        if not SKIPPED & set(path.relative_to(tests).parts) and ".egg-info" not in str(path)
    )


def imported_modules(path: Path, tests: Path) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every ``tests...`` module ``path`` imports, relative imports
    resolved (``from tests.a import b`` names ``tests.a.b`` when ``b`` is a module or package
    there, else ``tests.a``)."""
    package = ["tests", *path.relative_to(tests).parent.parts]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = [*base, *(node.module.split(".") if node.module else [])]
            directory = tests.joinpath(*module[1:])
            submodules = [
                alias.name
                for alias in node.names
                if (directory / f"{alias.name}.py").is_file() or (directory / alias.name).is_dir()
            ]
            found += [(node.lineno, ".".join([*module, name])) for name in submodules or [""]]
    return [(line, name.rstrip(".")) for line, name in found if name.split(".")[0] == "tests"]


def violations(tests: Path) -> list[str]:
    problems: list[str] = []
    for path in python_files(tests):
        relative = path.relative_to(tests)
        folder = relative.parts[0] if len(relative.parts) > 1 else ""
        own_package = ".".join(["tests", *relative.parent.parts])
        for line, module in imported_modules(path, tests):
            parts = module.split(".")
            where = f"tests/{relative}:{line} imports {module}"
            if parts[-1] == "conftest":
                if ".".join(parts[:-1]) != own_package:
                    problems.append(f"{where}: another directory's conftest.py (share through tests/support/)")
            elif len(parts) > 1 and parts[1] != SHARED and (folder in ("", SHARED) or parts[1] != folder):
                problems.append(f"{where}: outside its folder and tests.support (share through tests/support/)")
    for path in sorted(tests.glob("test_*.py")):
        if path.name not in ROOT_TESTS:
            problems.append(f"tests/{path.name}: a root-level test; put it in the folder of what it tests")
    return problems


def test_the_suite_keeps_its_layout():
    assert len(python_files(TESTS)) > 100  # the walk sees the suite
    assert violations(TESTS) == []


def test_the_layout_check_catches_each_kind_of_violation(tmp_path):
    tests = tmp_path / "tests"
    files = {
        "conftest.py": "",
        "test_sessions_api.py": "",
        "test_serve.py": "from tests.support.ports import free_port\n",
        "support/ports.py": "from tests.proxy import helpers\n",
        "proxy/conftest.py": "",
        "proxy/helpers.py": "",
        "proxy/test_ok.py": "from tests.proxy.conftest import x\nfrom tests.support.ports import free_port\n",
        "proxy/front/test_front.py": "from ..conftest import x\nfrom tests.proxy.helpers import y\n",
        "agent/test_e2e.py": "from tests.proxy.conftest import start\nfrom tests.conftest import make_user\n",
        "agent/test_leader.py": "from .conftest import x\nfrom . import fakes\nfrom tests.agent.fakes import y\n",
        "agent/fakes.py": "import tests.factories\n",
        "factories.py": "",
        "hub/test_hub.py": "from tests.proxy import helpers\n",
    }
    for name, text in files.items():
        (tests / name).parent.mkdir(parents=True, exist_ok=True)
        (tests / name).write_text(text)
    found = violations(tests)
    assert [problem.split(": ", 1)[0] for problem in found] == [
        "tests/agent/fakes.py:1 imports tests.factories",
        "tests/agent/test_e2e.py:1 imports tests.proxy.conftest",
        "tests/agent/test_e2e.py:2 imports tests.conftest",
        "tests/hub/test_hub.py:1 imports tests.proxy.helpers",
        "tests/proxy/front/test_front.py:1 imports tests.proxy.conftest",
        "tests/support/ports.py:1 imports tests.proxy.helpers",
        "tests/test_sessions_api.py",
    ]
