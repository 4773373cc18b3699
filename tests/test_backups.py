"""Backups: snapshot, restore, verification, crash safety and retention, on local disk and S3."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from connectors.errors import BackupError
from pipelines.backups.restore import prove, restore
from pipelines.backups.retention import days_to_keep, prune
from pipelines.backups.snapshot import (
    existing_objects,
    manifest_path,
    object_path,
    read_manifest,
    snapshot_days,
    take_snapshot,
)
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import EpisodeStore
from pipelines.store.locations import Location
from tests.conftest import FIXTURES, put
from tests.test_store import ingest, mem0_dump

CORTEX = (FIXTURES / "cortexdb" / "export_and_import.jsonl").read_text(encoding="utf-8")
TODAY = datetime.now(UTC).date().isoformat()


@pytest.fixture
def backup(backend: str) -> Location:
    return Location.from_url(f"{backend}/backups")


def ingest_at(store: EpisodeStore, landing: Location, system: str, rel: str, when: str | None = None) -> dict:
    """Ingest, then (for tests of days) pretend the import finished at ``when``."""
    manifest = ingest(store, landing, system, rel).manifest
    if when:
        manifest["finished_at"] = manifest["started_at"] = datetime.fromisoformat(when).isoformat()
        path = store.manifest_path(system, manifest["dump_key"], manifest["ingest_id"])
        store.location.write_atomic(path, json.dumps(manifest, indent=2).encode())
    return manifest


def frames(store: EpisodeStore, catalog: Path) -> dict[str, pl.DataFrame]:
    build_catalog(store, catalog)
    with connect(catalog) as con:
        return {
            "episode_log": con.sql("SELECT * FROM episode_log ORDER BY episode_id, ingested_at").pl(),
            "rejects": con.sql("SELECT * FROM rejects ORDER BY dump_uri, dump_record").pl(),
            "imports": con.sql("SELECT * EXCLUDE (live) FROM imports ORDER BY ingest_id").pl(),
        }


def test_snapshot_then_restore_is_identical(
    store: EpisodeStore, landing: Location, backup: Location, backend: str, tmp_path: Path
) -> None:
    put(landing, "mem0/a.json", mem0_dump(50))
    put(landing, "cortexdb/c.jsonl", CORTEX)
    ingest(store, landing, "mem0", "a.json")
    ingest(store, landing, "mem0", "a.json", force=True)  # a replaced version: its manifest is history
    ingest(store, landing, "cortexdb", "c.jsonl")
    put(landing, "mem0/page.json", (FIXTURES / "mem0" / "paginated_v3.json").read_bytes())
    ingest(store, landing, "mem0", "page.json")  # has a duplicate: a reject
    snap = take_snapshot(store, backup, TODAY)
    assert (snap.rows, snap.copied_bytes) == (57, snap.bytes)
    assert {f["kind"] for f in read_manifest(backup, TODAY)["files"]} == {
        "episodes",
        "rejects",
        "import-manifest",
    }

    target = EpisodeStore.from_url(f"{backend}/restored")
    result = restore(backup, "latest", target, tmp_path / "restored.duckdb")
    assert (result.day, result.episodes) == (TODAY, 57)
    before, after = frames(store, tmp_path / "a.duckdb"), frames(target, tmp_path / "b.duckdb")
    for name in before:
        assert before[name].height > 0
        assert_frame_equal(before[name], after[name])
    with connect(tmp_path / "b.duckdb") as con:  # the restored store's live flags agree too
        assert con.sql("SELECT count(*) FILTER (live), count(*) FROM imports").fetchall() == [(3, 4)]


def test_incremental_snapshot_copies_only_new_files(
    store: EpisodeStore, landing: Location, backup: Location
) -> None:
    put(landing, "mem0/a.json", mem0_dump(30))
    ingest(store, landing, "mem0", "a.json")
    first = take_snapshot(store, backup, TODAY)
    assert first.copied_bytes == first.bytes > 0
    assert sum(existing_objects(backup).values()) == first.bytes

    later = datetime.now(UTC) + timedelta(days=1)
    tomorrow = later.date().isoformat()
    same = take_snapshot(store, backup, tomorrow, now=later)
    assert (same.copied_files, same.copied_bytes, same.bytes) == (0, 0, first.bytes)

    put(landing, "cortexdb/c.jsonl", CORTEX)
    new = ingest(store, landing, "cortexdb", "c.jsonl").manifest
    grown = take_snapshot(store, backup, tomorrow, now=later)
    new_files = new["files"]["episodes"] + new["files"]["rejects"]
    manifest_bytes = store.fs.size(store.manifest_path("cortexdb", new["dump_key"], new["ingest_id"]))
    assert grown.copied_files == len(new_files) + 1
    assert grown.copied_bytes == sum(f["bytes"] for f in new_files) + manifest_bytes
    assert sum(existing_objects(backup).values()) == grown.bytes


def test_restore_of_an_older_day_after_later_ingests(
    store: EpisodeStore, landing: Location, backup: Location, backend: str, tmp_path: Path
) -> None:
    put(landing, "mem0/a.json", mem0_dump(10, text="old"))
    ingest_at(store, landing, "mem0", "a.json", "2025-03-01T10:00:00+00:00")
    take_snapshot(store, backup, "2025-02-28")  # before any ingest: an empty snapshot
    take_snapshot(store, backup, "2025-03-01")
    expected = frames(store, tmp_path / "then.duckdb")
    put(landing, "mem0/a.json", mem0_dump(12, text="new"))
    put(landing, "cortexdb/c.jsonl", CORTEX)
    ingest(store, landing, "mem0", "a.json")
    ingest(store, landing, "cortexdb", "c.jsonl")
    # backfilling the day again after later ingests gives the same day
    take_snapshot(store, backup, "2025-03-01")
    take_snapshot(store, backup, TODAY)

    target = EpisodeStore.from_url(f"{backend}/restored")
    restore(backup, "2025-03-01", target, tmp_path / "r.duckdb")
    got = frames(target, tmp_path / "r.duckdb")
    assert_frame_equal(got["episode_log"], expected["episode_log"])
    assert got["episode_log"]["content"].str.starts_with("old").all()
    assert got["imports"].height == 1

    empty = EpisodeStore.from_url(f"{backend}/empty")
    assert restore(backup, "2025-02-28", empty, tmp_path / "e.duckdb").episodes == 0
    assert read_manifest(backup, "2025-02-28")["files"] == []
    with pytest.raises(BackupError, match="not empty"):
        restore(backup, "2025-02-28", target, tmp_path / "r.duckdb")
    # with overwrite, the target becomes exactly the older day (later files removed)
    restore(backup, "2025-02-28", target, tmp_path / "r.duckdb", overwrite=True)
    assert frames(target, tmp_path / "r.duckdb")["episode_log"].height == 0
    with pytest.raises(BackupError, match="no snapshot for 2024-01-01"):
        restore(backup, "2024-01-01", empty, tmp_path / "e.duckdb")


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_damaged_object_is_named_and_target_untouched(
    store: EpisodeStore, landing: Location, backup: Location, backend: str, tmp_path: Path, damage: str
) -> None:
    put(landing, "mem0/a.json", mem0_dump(20))
    ingest(store, landing, "mem0", "a.json")
    take_snapshot(store, backup, TODAY)
    victim = next(f for f in read_manifest(backup, TODAY)["files"] if f["kind"] == "episodes")
    obj = object_path(backup, victim["sha256"])
    if damage == "corrupt":
        data = bytearray(backup.fs.cat_file(obj))
        data[len(data) // 2] ^= 0xFF  # same size, different content
        backup.fs.pipe_file(obj, bytes(data))
    else:
        backup.fs.rm(obj)
    target = EpisodeStore.from_url(f"{backend}/restored")
    with pytest.raises(BackupError) as caught:
        restore(backup, TODAY, target, tmp_path / "r.duckdb")
    message = str(caught.value)
    assert victim["sha256"] in message and victim["path"] in message
    assert ("is corrupt" if damage == "corrupt" else "is missing") in message
    assert "nothing was changed" in message
    assert not target.fs.exists(target.location.root) or not target.fs.find(target.location.root)
    assert not (tmp_path / "r.duckdb").exists()
    verdict = prove(backup, TODAY, store, scratch=tmp_path)
    assert verdict["passed"] is False and victim["sha256"] in verdict["error"]
    if damage == "missing":  # the next snapshot copies a missing object again, from the store
        assert take_snapshot(store, backup, TODAY).copied_bytes == victim["bytes"]
        assert restore(backup, TODAY, target, tmp_path / "r.duckdb").episodes == 20


def test_crash_midway_leaves_no_manifest_naming_missing_objects(
    store: EpisodeStore, landing: Location, backup: Location, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipelines.store.episodes as store_module

    monkeypatch.setattr(store_module, "PART_ROWS", 7)  # several parts
    put(landing, "mem0/a.json", mem0_dump(40))
    ingest(store, landing, "mem0", "a.json", batch_rows=5)
    with pytest.raises(BackupError, match="injected failure"):
        take_snapshot(store, backup, TODAY, fail_after_files=2)
    assert snapshot_days(backup) == []
    assert not backup.fs.exists(manifest_path(backup, TODAY))
    for sha256 in existing_objects(backup):  # what was copied is whole, under its true name
        assert hashlib.sha256(backup.fs.cat_file(object_path(backup, sha256))).hexdigest() == sha256
    again = take_snapshot(store, backup, TODAY)
    assert 0 < again.copied_bytes < again.bytes  # the retry copies only what the crash had not
    for f in read_manifest(backup, TODAY)["files"]:
        assert f["sha256"] in existing_objects(backup)


def test_days_to_keep() -> None:
    days = ["2024-11-30", "2024-12-15", "2024-12-31", "2025-01-05", "2025-01-06", "2025-01-07"]
    assert days_to_keep(days, keep_daily=2, keep_monthly=0) == {"2025-01-06", "2025-01-07"}
    assert days_to_keep(days, keep_daily=1, keep_monthly=2) == {"2025-01-07", "2024-12-31"}
    assert days_to_keep(days, keep_daily=0, keep_monthly=5) == {"2025-01-07", "2024-12-31", "2024-11-30"}


def test_retention_deletes_exactly_what_no_kept_snapshot_names(
    store: EpisodeStore, landing: Location, backup: Location, tmp_path: Path, backend: str
) -> None:
    schedule = [
        ("2025-01-10", "a.json", 5),
        ("2025-01-20", "a.json", 6),  # replaces 01-10's version of a.json
        ("2025-02-05", "b.json", 7),
        ("2025-02-06", "b.json", 8),  # replaces 02-05's version of b.json
    ]
    for day, rel, n in schedule:
        put(landing, f"mem0/{rel}", mem0_dump(n, text=day))
        ingest_at(store, landing, "mem0", rel, f"{day}T12:00:00+00:00")
        take_snapshot(store, backup, day)
    names = {day: {f["sha256"] for f in read_manifest(backup, day)["files"]} for day, *_ in schedule}
    everything = set(existing_objects(backup))
    expected_gone = everything - names["2025-02-06"] - names["2025-01-20"]
    assert expected_gone  # a.json v1, b.json v1 and their manifests' unique objects

    dry = prune(backup, keep_daily=1, keep_monthly=2, dry_run=True)
    assert (dry.kept_days, dry.deleted_days) == (["2025-01-20", "2025-02-06"], ["2025-01-10", "2025-02-05"])
    assert {p.rsplit("/", 1)[1] for p in dry.deleted_objects} == expected_gone
    assert set(existing_objects(backup)) == everything and len(snapshot_days(backup)) == 4

    done = prune(backup, keep_daily=1, keep_monthly=2)
    assert done.deleted_objects == dry.deleted_objects
    assert snapshot_days(backup) == ["2025-01-20", "2025-02-06"]
    assert set(existing_objects(backup)) == names["2025-02-06"] | names["2025-01-20"]
    for day in ("2025-01-20", "2025-02-06"):  # every kept snapshot still restores
        restored = restore(
            backup, day, EpisodeStore.from_url(f"{backend}/r{day}"), tmp_path / f"{day}.duckdb"
        )
        assert restored.files == len(names[day])
