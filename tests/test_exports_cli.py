"""``memport export`` and ``memport export-status``: the command line over the adhoc_export job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import main as cli
from pipelines.store.episodes import EpisodeStore
from tests.conftest import memport_settings
from tests.export_fixtures import build_store


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    build_store(EpisodeStore.from_url(str(tmp_path / "store")))
    for name, value in (memport_settings(tmp_path) | {"MEMPORT_TENANT_ID": "acme"}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_export_then_status(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["export", "csv", "--scope", "org:acme", "--type", "message", "--set", "session_id=s1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "exporting: 1 / 1 rows (100%)" in out.err  # the progress line
    export_id = out.out.split()[1].rstrip(":")
    assert "READY, 1 rows" in out.out
    assert cli.main(["export-status", export_id]) == 0
    assert export_id in capsys.readouterr().out
    assert cli.main(["sql", "SELECT id, status FROM exports"]) == 0
    assert export_id in capsys.readouterr().out


def test_errors_are_clear(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["export", "json", "--created-after", "yesterday"]) == 2
    assert "field 'created_after'" in capsys.readouterr().err
    assert cli.main(["export-status", "exp-missing"]) == 1
    assert "ExportNotFoundError" in capsys.readouterr().err


def test_migration_by_export_then_import_into_another_store(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two commands move a slice of this store into another memport store, every column intact."""
    import duckdb

    assert cli.main(["export", "ndjson", "--scope", "org:acme"]) == 0
    export_id = capsys.readouterr().out.split()[1].rstrip(":")
    other = env / "other"
    code = cli.main(
        ["import-export", export_id, "--store", str(other / "store"), "--catalog", str(other / "c.duckdb")]
    )
    assert code == 0, capsys.readouterr().err
    columns = "episode_id, scope, content, metadata, observed_at, status, tags, categories"
    with duckdb.connect(str(other / "c.duckdb"), read_only=True) as dst:
        moved = dst.sql(f"SELECT {columns} FROM episodes ORDER BY episode_id").fetchall()
    from pipelines.store.catalog import build_catalog

    build_catalog(EpisodeStore.from_url(str(env / "store")), env / "src.duckdb")
    with duckdb.connect(str(env / "src.duckdb"), read_only=True) as src:
        scoped = (  # what the export selects by default: the tenant, the scope, live episodes only
            "WHERE tenant_id = 'acme' AND (scope = 'org:acme' OR starts_with(scope, 'org:acme/')) "
            "AND status = 'active'"
        )
        expected = src.sql(f"SELECT {columns} FROM episodes {scoped} ORDER BY episode_id").fetchall()

    def same(rows: list[tuple[object, ...]]) -> list[tuple[object, ...]]:  # metadata: JSON, not spacing
        return [(*r[:3], json.loads(str(r[3])), *r[4:]) for r in rows]

    assert same(moved) == same(expected) and len(moved) > 0
