"""The catalog under shared use and after crashes (issue 10, §6): a refresh never breaks an
analyst's session (read-only or read-write), is not broken by one, never destroys what an analyst
wrote, and removes only the temporary files of dead refreshes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from pipelines.store import catalog_file
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location
from tests.conftest import put
from tests.test_store import mem0_dump

#: A second process: an analyst with DuckDB's default (read-write) connection, driven line by line.
_ANALYST = textwrap.dedent(
    """
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])
    for line in sys.stdin:
        try:
            out = con.sql(line).fetchall() if line.strip() else "ok"
        except Exception as exc:
            out = f"ERROR {exc}"
        print(out, flush=True)
    """
)


class Analyst:
    def __init__(self, catalog: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ANALYST, str(catalog)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def sql(self, query: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(query + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


def _reader(catalog: Path, sql: str) -> str:
    """A read-only session in its own process, as any DuckDB client opens it."""
    code = (
        "import sys, duckdb; print(duckdb.connect(sys.argv[1], read_only=True).sql(sys.argv[2]).fetchall())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(catalog), sql], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip().splitlines()[-1]


@pytest.fixture
def setup(tmp_path: Path) -> tuple[EpisodeStore, Location, Path]:
    landing = Location.from_url(str(tmp_path / "landing"))
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    put(landing, "mem0/a.json", mem0_dump(30))
    ingest_dump(store, landing, "mem0", "a.json", tenant_id="acme")
    catalog = tmp_path / "episodes.duckdb"
    build_catalog(store, catalog)
    return store, landing, catalog


def test_refresh_beside_a_read_write_analyst_breaks_nothing_and_keeps_their_table(
    setup: tuple[EpisodeStore, Location, Path],
) -> None:
    store, landing, catalog = setup
    assert stat.S_IMODE(catalog.stat().st_mode) == 0o444, "a non-root write-open fails before writing"
    analyst = Analyst(catalog)
    assert analyst.sql("CREATE TABLE mine AS SELECT 42 AS answer") == "[(1,)]"
    assert analyst.sql("SELECT count(*) FROM episodes") == "[(30,)]"

    put(landing, "mem0/b.json", mem0_dump(12, text="b"))
    ingest_dump(store, landing, "mem0", "b.json", tenant_id="acme")
    summary = build_catalog(store, catalog)  # the refresh runs while the analyst holds it

    assert summary.note and f"open read-write in process {analyst.proc.pid}" in summary.note
    assert summary.path == catalog_file.pending_path(catalog) and summary.episode_versions == 42
    with connect(catalog) as con:  # memport's readers see the new catalog meanwhile
        assert con.sql("SELECT count(*) FROM episode_log").fetchall() == [(42,)]
    # the analyst's session goes on: more writes, a checkpoint (which re-creates its WAL by path)
    assert analyst.sql("INSERT INTO mine VALUES (43)") == "[(1,)]"
    assert analyst.sql("CHECKPOINT") == "[]"
    assert analyst.sql("INSERT INTO mine VALUES (44)") == "[(1,)]"
    assert analyst.sql("SELECT count(*) FROM episode_log") == "[(30,)]"
    analyst.close()

    summary = build_catalog(store, catalog)  # the next refresh installs, keeping their file
    assert summary.path == catalog and summary.note and "kept the catalog" in summary.note
    assert not catalog_file.pending_path(catalog).exists()
    assert _reader(catalog, "SELECT count(*) FROM episode_log") == "[(42,)]"
    (kept,) = catalog.parent.glob("episodes.kept-*.duckdb")
    assert _reader(kept, "SELECT list(answer ORDER BY answer) FROM mine") == "[([42, 43, 44],)]"
    assert build_catalog(store, catalog).note is None, "an untouched catalog is simply replaced"
    assert len(list(catalog.parent.glob("episodes.kept-*"))) == 1


def test_a_killed_analyst_leaves_a_wal_that_stays_with_their_file(
    setup: tuple[EpisodeStore, Location, Path],
) -> None:
    store, _, catalog = setup
    analyst = Analyst(catalog)
    assert analyst.sql("CREATE TABLE mine AS SELECT 7 AS n") == "[(1,)]"
    analyst.proc.send_signal(signal.SIGKILL)
    analyst.proc.wait()
    assert catalog.with_name(catalog.name + ".wal").exists()

    summary = build_catalog(store, catalog)
    assert summary.path == catalog and summary.note and "kept the catalog" in summary.note
    assert _reader(catalog, "SELECT count(*) FROM episodes") == "[(30,)]"  # no "WAL does not match"
    (kept,) = catalog.parent.glob("episodes.kept-*.duckdb")
    assert _reader(kept, "SELECT n FROM mine") == "[(7,)]"


def test_read_only_sessions_never_block_a_refresh(setup: tuple[EpisodeStore, Location, Path]) -> None:
    store, landing, catalog = setup
    with duckdb.connect(str(catalog), read_only=True) as analyst:
        put(landing, "mem0/b.json", mem0_dump(5, text="b"))
        ingest_dump(store, landing, "mem0", "b.json", tenant_id="acme")
        started = time.monotonic()
        summary = build_catalog(store, catalog)
        assert time.monotonic() - started < 2 and summary.note is None and summary.path == catalog
        assert analyst.sql("SELECT count(*) FROM episode_log").fetchall() == [(30,)]
    assert _reader(catalog, "SELECT count(*) FROM episode_log") == "[(35,)]"


def test_the_next_refresh_removes_only_dead_temporary_catalogs(
    setup: tuple[EpisodeStore, Location, Path],
) -> None:
    store, _, catalog = setup
    dead = catalog.with_name(f".{catalog.name}.tmp-dead")
    duckdb.connect(str(dead)).close()
    dead.with_name(dead.name + ".wal").write_bytes(b"x")
    young = catalog.with_name(f".{catalog.name}.tmp-young")
    young.write_bytes(b"")
    live = catalog.with_name(f".{catalog.name}.tmp-live")
    writer = Analyst(live)  # a concurrent refresh still writing its file
    assert writer.sql("CREATE TABLE t AS SELECT 1") == "[(1,)]"
    old = time.time() - 3600
    for path in (dead, live):
        os.utime(path, (old, old))

    build_catalog(store, catalog)
    assert not dead.exists() and not dead.with_name(dead.name + ".wal").exists()
    assert young.exists() and live.exists()
    writer.close()


def test_vacuum_removes_the_manifest_temp_file_of_a_killed_import(
    setup: tuple[EpisodeStore, Location, Path],
) -> None:
    store, _, _ = setup
    (manifest,) = store.live_manifests()
    folder = Path(store.manifest_path("mem0", manifest["dump_key"], manifest["ingest_id"])).parent
    left = folder / "20250101T000000000000Z-deadbeef.json.tmp-0123"  # killed before its rename
    left.write_text("{", encoding="utf-8")
    young = folder / f"{manifest['ingest_id']}.json.tmp-4567"  # an import renaming it right now
    young.write_text("{", encoding="utf-8")
    assert str(left) in store.vacuum(grace=timedelta(hours=1))
    assert not left.exists() and young.exists() and len(store.live_manifests()) == 1
