"""Tables have owners (services/README.md "Tables have owners"): a table's name appears in the SQL of its owner
only; every other service reads it through the owner's views (`stored_*`, `console_*`, ...)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _owners() -> dict[str, str]:
    """table -> the package whose code may name it in SQL, read from the README's table (`shared` for `shared/`)."""
    text = (ROOT / "services/README.md").read_text(encoding="utf-8")
    section = text.split("## Tables have owners", 1)[1].split("\n## ", 1)[0]
    owners: dict[str, str] = {}
    for row in section.splitlines():
        cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        owner = "shared" if cells[1].startswith("`shared/`") else cells[1].split()[0]
        owners.update(dict.fromkeys(re.findall(r"`([a-z_]+)`", cells[0]), owner))
    return owners


OWNERS = _owners()

# A table named where SQL names one: after from / join / into / update (a docstring saying "from ads" would count too;
# none does).
_SQL_TABLE = re.compile(r"\b(?:from|join|into|update)\s+([a-z_]+)\b", re.IGNORECASE)


def _packages() -> list[tuple[str, Path]]:
    services = sorted(p for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())
    return [(p.name, p) for p in services] + [("shared", ROOT / "shared")]


def test_every_table_of_the_migrations_has_an_owner() -> None:
    created = set()
    for migration in (ROOT / "shared/db/migrations").glob("*.sql"):
        created |= set(re.findall(r"create table (?:if not exists )?([a-z_]+)", migration.read_text(), re.I))
    assert created - {"schema_migrations"} <= set(OWNERS), sorted(created - set(OWNERS))


@pytest.mark.parametrize(("package", "path"), _packages(), ids=[name for name, _ in _packages()])
def test_a_package_names_only_the_tables_it_owns(package: str, path: Path) -> None:
    foreign = sorted(
        f"{source.relative_to(ROOT)}: {table}"
        for source in path.rglob("*.py")
        for table in {m.lower() for m in _SQL_TABLE.findall(source.read_text())}
        if OWNERS.get(table, package) != package
    )
    assert not foreign, "read another service's table (use its view): " + ", ".join(foreign)
