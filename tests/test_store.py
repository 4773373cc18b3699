"""The episode store and catalog, on local disk and on the S3-compatible test server alike."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from connectors.errors import ConfigError, StoreError
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import discover_dumps, ingest_dump
from pipelines.store.locations import Location
from tests.conftest import FIXTURES, put

MEM0_PAGE = (FIXTURES / "mem0" / "paginated_v3.json").read_text(encoding="utf-8")
CORTEX = (FIXTURES / "cortexdb" / "export_and_import.jsonl").read_text(encoding="utf-8")


def mem0_dump(n: int, *, text: str = "fact") -> str:
    return json.dumps(
        [
            {
                "id": f"m-{i}",
                "memory": f"{text} {i}",
                "user_id": f"u{i % 3}",
                "created_at": f"2025-01-01T00:00:{i % 60:02d}Z",
            }
            for i in range(n)
        ]
    )


def ingest(store: EpisodeStore, landing: Location, system: str, rel: str, **kw: object):
    return ingest_dump(store, landing, system, rel, tenant_id="acme", **kw)  # type: ignore[arg-type]


def live_rows(store: EpisodeStore, catalog: Path, sql: str) -> list[tuple]:
    build_catalog(store, catalog)
    with connect(catalog) as con:
        return con.sql(sql).fetchall()


def test_ingest_and_catalog(store: EpisodeStore, landing: Location, tmp_path: Path) -> None:
    put(landing, "mem0/2026/page2.json", MEM0_PAGE)
    put(landing, "cortexdb/mixed.jsonl", CORTEX)
    put(landing, "mem0/.hidden.json", "[]")
    put(landing, "mem0/upload.json.part", "[")
    assert discover_dumps(landing, "mem0") == ["2026/page2.json"]

    result = ingest(store, landing, "mem0", "2026/page2.json")
    assert result.counts == {"read": 3, "accepted": 2, "rejected": 0, "duplicate": 1}
    ingest(store, landing, "cortexdb", "mixed.jsonl")

    catalog = tmp_path / "cat.duckdb"
    summary = build_catalog(store, catalog)
    assert (summary.partitions, summary.episodes, summary.rejects) == (2, 7, 1)
    with connect(catalog) as con:
        assert con.sql("SELECT source_system, count(*) FROM episodes GROUP BY ALL ORDER BY 1").fetchall() == [
            ("cortexdb", 5),
            ("mem0", 2),
        ]
        # the duplicate keeps the newest version (record 0, updated later) and rejects the other
        kept = con.sql(
            "SELECT dump_record, status FROM episodes WHERE source_id = "
            "'c0ffee00-0000-4000-8000-000000000001'"
        ).fetchall()
        assert kept == [(0, "superseded")]
        (dup,) = con.sql("SELECT dump_record, reason, detail, raw FROM rejects").fetchall()
        assert dup[:3] == (2, "duplicate", "same idempotency_key as record 0, which was kept")
        assert json.loads(dup[3])["source_id"] == "c0ffee00-0000-4000-8000-000000000001"
        imports = con.sql(
            "SELECT source_system, dump, read, accepted, rejected, duplicate, live FROM imports ORDER BY 1"
        ).fetchall()
        assert imports == [
            ("cortexdb", "mixed.jsonl", 5, 5, 0, 0, True),
            ("mem0", "2026/page2.json", 3, 2, 0, 1, True),
        ]
        manifest_sha = con.sql("SELECT dump_sha256 FROM imports WHERE source_system='mem0'").fetchall()
    assert manifest_sha == [(hashlib.sha256(MEM0_PAGE.encode()).hexdigest(),)]


def test_reingest_is_exactly_once(store: EpisodeStore, landing: Location, tmp_path: Path) -> None:
    put(landing, "mem0/a.json", mem0_dump(5))
    for _ in range(3):  # forced: an unchanged dump is otherwise skipped (test_cli_errors)
        ingest(store, landing, "mem0", "a.json", force=True)
    rows = live_rows(
        store, tmp_path / "c.duckdb", "SELECT count(*), count(DISTINCT episode_id) FROM episode_log"
    )
    assert rows == [(5, 5)]
    # a changed dump replaces the partition: new content, still one version per record
    put(landing, "mem0/a.json", mem0_dump(4, text="changed"))
    ingest(store, landing, "mem0", "a.json")
    rows = live_rows(store, tmp_path / "c.duckdb", "SELECT count(*), min(content) FROM episode_log")
    assert rows == [(4, "changed 0")]
    assert len([m for live, m in store.manifests()]) == 4


def test_failed_ingest_leaves_old_partition(
    store: EpisodeStore, landing: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.store.episodes as store_module

    put(landing, "mem0/a.json", mem0_dump(10))
    ingest(store, landing, "mem0", "a.json")
    before = live_rows(store, tmp_path / "c.duckdb", "SELECT list_sort(list(content)) FROM episodes")

    put(landing, "mem0/a.json", mem0_dump(10, text="new"))
    monkeypatch.setattr(store_module, "PART_ROWS", 3)  # several parts, so the crash is mid-way
    with pytest.raises(StoreError, match="injected failure"):
        dump, batches, fs = _dump_args(landing, "a.json")
        store.ingest(dump, batches, dump_fs=fs, fail_after_parts=2)
    # new data files exist, but no manifest names them: the old partition is what is live
    after = live_rows(store, tmp_path / "c.duckdb", "SELECT list_sort(list(content)) FROM episodes")
    assert after == before
    assert len(list(store.manifests())) == 1
    # the orphans go once the grace period has passed, never the live files
    live = {f["path"] for m in store.live_manifests() for f in m["files"]["episodes"]}
    orphans = store.vacuum(grace=timedelta(0), dry_run=True)
    assert orphans and not live & set(orphans)
    assert store.vacuum(grace=timedelta(hours=1)) == []  # too young to go
    store.vacuum(grace=timedelta(0))
    assert all(store.fs.exists(p) for p in live) and not any(store.fs.exists(p) for p in orphans)
    assert live_rows(store, tmp_path / "c.duckdb", "SELECT count(*) FROM episodes") == [(10,)]


def _dump_args(landing: Location, rel: str):
    from connectors import registry
    from pipelines.store.episodes import DumpInfo, dump_key

    path = landing.path("mem0", rel)
    dump = DumpInfo(landing.fs.unstrip_protocol(path), "mem0", dump_key(rel), "1", "acme", "user:{user_id}")
    batches = registry.get("mem0").read(landing.fs, path, tenant_id="acme", batch_rows=3)
    return dump, batches, landing.fs


def test_missing_dump_is_a_clear_error(store: EpisodeStore, landing: Location) -> None:
    with pytest.raises(ConfigError, match=r"dump .*nope\.json does not exist"):
        ingest(store, landing, "mem0", "nope.json")


def test_empty_store_has_typed_views(store: EpisodeStore, tmp_path: Path) -> None:
    build_catalog(store, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        assert con.sql("SELECT count(*) FROM episodes").fetchall() == [(0,)]
        cols = [c[0] for c in con.sql("DESCRIBE episode_log").fetchall()]
        assert cols[:3] == ["episode_id", "idempotency_key", "tenant_id"]
        assert con.sql("SELECT count(*) FROM rejects").fetchall() == [(0,)]


def test_analyst_session_never_blocks_and_never_sees_half_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.store.episodes as store_module

    landing = Location.from_url(str(tmp_path / "landing"))
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    catalog = tmp_path / "episodes.duckdb"
    put(landing, "mem0/a.json", mem0_dump(30))
    ingest(store, landing, "mem0", "a.json")
    build_catalog(store, catalog)

    # The analyst opens the catalog read-write (DuckDB's default) and keeps it open.
    analyst = duckdb.connect(str(catalog))
    assert analyst.sql("SELECT count(*) FROM episodes").fetchall() == [(30,)]

    monkeypatch.setattr(store_module, "PART_ROWS", 7)
    put(landing, "mem0/a.json", mem0_dump(40, text="v2"))
    seen: list[int] = []
    written = threading.Event()
    real_write = store.write_parquet

    def observed_write(frame: pl.DataFrame, path: str) -> dict:
        info = real_write(frame, path)
        # mid-ingest: the analyst still sees exactly the old, complete partition
        seen.append(analyst.sql("SELECT count(*) FROM episodes").fetchall()[0][0])
        written.set()
        return info

    monkeypatch.setattr(store, "write_parquet", observed_write)
    ingest(store, landing, "mem0", "a.json")
    build_catalog(store, catalog)  # swaps the file under the open session without waiting
    assert written.is_set() and set(seen) == {30}
    assert analyst.sql("SELECT count(*) FROM episodes").fetchall() == [(30,)]
    analyst.close()
    with connect(catalog) as con:
        assert con.sql("SELECT count(*), min(content) FROM episodes").fetchall() == [(40, "v2 0")]
