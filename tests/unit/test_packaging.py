"""What an installed copy holds: every package on disk, and the migrations as package data."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_the_package_list_names_every_package_on_disk() -> None:
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("orchestrator", "bridge")
        for p in (ROOT / top).rglob("__init__.py")
    }
    listed = set(_config()["packages"])
    assert listed - {"orchestrator.migrations"} == on_disk  # a new subpackage must be listed to be installed
    assert "orchestrator.migrations" in listed


def test_the_top_level_migrations_folder_ships_as_orchestrator_migrations() -> None:
    config = _config()
    assert config["package-dir"]["orchestrator.migrations"] == "migrations"
    assert config["package-data"]["orchestrator.migrations"] == ["*.sql", "postgres/*.sql"]
    from orchestrator.schema import migration_files

    names = [m.name for m in migration_files()]
    assert names == sorted(p.stem for p in (ROOT / "migrations").glob("*.sql"))
    assert names and names[0] == "0001_initial"
