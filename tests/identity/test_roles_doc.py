"""docs/roles.md lists every endpoint of the API matrix with the right least role."""

from __future__ import annotations

from pathlib import Path

from tests.support.api_matrix import ENDPOINTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "roles.md"
COLUMNS = ("any", "user", "operator", "admin")


def test_every_endpoint_is_documented_with_its_role():
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `") and "/api/v1/" in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells[1:]
    for endpoint in ENDPOINTS:
        key = f"{endpoint.method.upper()} {endpoint.path}"
        assert key in rows, f"{key} is missing from docs/roles.md"
        least = next(role for role, mark in zip(COLUMNS, rows[key], strict=True) if mark == "✓")
        assert least == endpoint.role, f"{key}: docs say {least}, the API matrix says {endpoint.role}"


def test_readme_links_the_roles_doc():
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "docs/roles.md" in readme
