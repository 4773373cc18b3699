"""Mem0 beyond get_all: the OSS history database, OpenMemory backups, get_memory_export documents."""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import tempfile
import zipfile
from pathlib import Path

import fsspec
import polars as pl
import pytest

from connectors import registry
from connectors.errors import DumpFormatError
from pipelines.store import catalog
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location
from tests.conftest import FIXTURES
from tests.test_connectors_conformance import read_all

MEM0 = registry.get("mem0")
M1 = "7e2a9b10-3c44-4f0a-8e21-6a7b8c9d0e1f"


def frames(path: str | Path, fs: fsspec.AbstractFileSystem | None = None, **kw: object):  # type: ignore[no-untyped-def]
    kw.setdefault("tenant_id", "acme")
    kw.setdefault("scope_template", "org:acme/oss")
    batches = list(MEM0.read(fs or fsspec.filesystem("file"), str(path), **kw))  # type: ignore[arg-type]
    return pl.concat([b.episodes for b in batches]), pl.concat([b.rejects for b in batches])


def test_history_versions_are_one_episode_and_the_catalog_shows_the_last_event(tmp_path: Path) -> None:
    (tmp_path / "landing" / "mem0").mkdir(parents=True)
    shutil.copyfile(FIXTURES / "mem0" / "history_2025_05.db", tmp_path / "landing" / "mem0" / "history.db")
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    landing = Location.from_url(str(tmp_path / "landing"))
    result = ingest_dump(
        store, landing, "mem0", "history.db", tenant_id="acme", scope_template="org:acme/oss"
    )
    assert result.counts == {"read": 5, "accepted": 4, "rejected": 1, "duplicate": 0}
    catalog.build_catalog(store, tmp_path / "c.duckdb")
    con = catalog.connect(tmp_path / "c.duckdb")
    log = con.sql(
        "SELECT content, status FROM episode_log WHERE source_id = ? ORDER BY dump_record", params=[M1]
    ).fetchall()
    assert log == [
        ("Allergic to nuts", "superseded"),
        ("Allergic to peanuts", "superseded"),
        ("Allergic to peanuts", "deleted"),
    ]
    assert con.sql(
        "SELECT count(DISTINCT episode_id) FROM episode_log WHERE source_id = ?", params=[M1]
    ).fetchall() == [(1,)]
    assert con.sql("SELECT status FROM episodes WHERE source_id = ?", params=[M1]).fetchall() == [
        ("deleted",)
    ]
    as_of = "SELECT content, status FROM episodes_as_of(?) WHERE source_id = ?"
    assert con.sql(as_of, params=["2026-01-12T00:00:00Z", M1]).fetchall() == [
        ("Allergic to nuts", "superseded")
    ]
    assert con.sql(as_of, params=["2026-01-20T00:00:00Z", M1]).fetchall() == [
        ("Allergic to peanuts", "superseded")
    ]
    assert con.sql(as_of, params=["2026-03-01T00:00:00Z", M1]).fetchall() == []
    con.close()


def test_history_from_a_remote_filesystem_is_copied_and_the_copy_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    memory = fsspec.filesystem("memory")
    memory.pipe_file("/dumps/history.db", (FIXTURES / "mem0" / "history_2024_07.db").read_bytes())
    remote, _ = frames("/dumps/history.db", memory)
    local, _ = frames(FIXTURES / "mem0" / "history_2024_07.db")
    assert remote.drop("dump_uri", "ingested_at").equals(local.drop("dump_uri", "ingested_at"))
    assert remote["dump_uri"][0] == "memory:///dumps/history.db"
    assert list(tmp_path.iterdir()) == []
    memory.rm("/dumps", recursive=True)


def test_history_schema_is_detected_from_columns(tmp_path: Path) -> None:
    odd = tmp_path / "odd.db"
    con = sqlite3.connect(odd)
    con.execute("CREATE TABLE history (id TEXT, memory TEXT, at TEXT)")
    con.commit()
    con.close()
    with pytest.raises(
        DumpFormatError, match=r"odd\.db: not a Mem0 OSS history database.*columns: id, memory, at"
    ):
        frames(odd)
    eras = {
        name: frames(FIXTURES / "mem0" / name)[0].select("idempotency_key", "status").rows()
        for name in ("history_2024_07.db", "history_2024_08.db", "history_2025_05.db")
    }
    assert eras == {
        "history_2024_07.db": [
            ("mem0-history:h-1", "superseded"),
            ("mem0-history:h-2", "superseded"),
            ("mem0-history:h-3", "active"),
            ("mem0-history:h-4", "deleted"),
        ],
        "history_2024_08.db": [
            ("mem0-history:h-10", "superseded"),
            ("mem0-history:h-11", "active"),
            ("mem0-history:h-12", "superseded"),
            ("mem0-history:h-13", "deleted"),
        ],
        "history_2025_05.db": [
            ("mem0-history:h-20", "superseded"),
            ("mem0-history:h-21", "superseded"),
            ("mem0-history:h-22", "deleted"),
            ("mem0-history:h-23", "active"),
        ],
    }


def test_history_is_read_in_bounded_batches(tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE history (id, memory_id, old_memory, new_memory, event, created_at, updated_at, "
        "is_deleted)"
    )
    con.executemany(
        "INSERT INTO history VALUES (?, ?, NULL, ?, 'ADD', '2025-01-01T00:00:00Z', NULL, 0)",
        [(f"h{i}", f"m{i % 100}", f"fact {i}") for i in range(2_500)],
    )
    con.commit()
    con.close()
    batches = read_all(MEM0, db, scope_template="org:acme/oss", batch_rows=1_000)
    assert [b.read for b in batches] == [1_000, 1_000, 500]
    episodes = pl.concat([b.episodes for b in batches])
    assert episodes.filter(pl.col("status") == "active").height == 100  # the last version per memory


def test_backup_reads_memories_json_once_not_both_entries() -> None:
    episodes, rejects = frames(FIXTURES / "mem0" / "openmemory_backup.zip", scope_template="user:{user_id}")
    assert episodes.height + rejects.height == 5  # not 10: memories.jsonl.gz holds the same memories
    assert episodes["status"].cast(pl.String).to_list() == [
        "active",
        "superseded",
        "deleted",
        "deleted",
    ]  # paused: not served
    assert episodes["scope"].unique().to_list() == ["user:dana"]


def test_memories_json_on_its_own_reads_like_the_backup(tmp_path: Path) -> None:
    with zipfile.ZipFile(FIXTURES / "mem0" / "openmemory_backup.zip") as zf:
        (tmp_path / "memories.json").write_bytes(zf.read("memories.json"))
    alone, _ = frames(tmp_path / "memories.json", scope_template="user:{user_id}/app:{app_id}")
    zipped, _ = frames(
        FIXTURES / "mem0" / "openmemory_backup.zip", scope_template="user:{user_id}/app:{app_id}"
    )
    cols = ["idempotency_key", "content", "status", "scope", "categories", "metadata", "superseded_at"]
    assert alone.select(cols).equals(zipped.select(cols))


def test_unsafe_entries_are_rejects_and_never_read(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../memories.json", "{}")
        zf.writestr("/abs/memories.jsonl.gz", b"")
        zf.writestr("README.txt", "not read")
    dump = tmp_path / "b.zip"
    dump.write_bytes(buf.getvalue())
    episodes, rejects = frames(dump)
    assert episodes.height == 0
    assert rejects.select("dump_record", "reason").rows() == [
        (0, "unsafe_archive_entry"),
        (1, "unsafe_archive_entry"),
    ]


def test_export_is_one_document_keyed_by_its_export_id(tmp_path: Path) -> None:
    memory = fsspec.filesystem("memory")
    text = '{"memory_export_id": "exp-42", "full_name": "Dana", "skills": ["Go"], "score": 1.0}'
    memory.pipe_file("/x/export.json", text.encode())
    episodes, rejects = frames("/x/export.json", memory)
    assert rejects.height == 0
    row = episodes.row(0, named=True)
    assert (row["type"], row["content"], row["idempotency_key"], row["source_id"]) == (
        "document",
        text,
        "mem0-export:exp-42",
        "exp-42",
    )
    assert row["observed_at"] == memory.modified("/x/export.json")
    memory.rm("/x", recursive=True)


@pytest.mark.parametrize(
    ("doc", "found"),
    [
        ({"message": "Memory export request received.", "id": "e-1"}, "request receipt"),
        ({"error": "No memory export request found"}, "API error response"),
        ({"id": "m-1", "memory": "one memory"}, "single memory object"),
        ({"agents": [], "blocks": [{"label": "human"}]}, "keys: agents, blocks"),
        (["not", "memories"], None),
    ],
)
def test_objects_that_are_not_exports(tmp_path: Path, doc: object, found: str | None) -> None:
    dump = tmp_path / "d.json"
    dump.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    if found is None:  # an array is the get_all path: strings are not memories
        _, rejects = frames(dump)
        assert rejects["reason"].cast(pl.String).to_list() == ["not_an_object", "not_an_object"]
        return
    with pytest.raises(DumpFormatError, match=found):
        frames(dump)


def test_oversized_export_is_rejected_not_split(tmp_path: Path) -> None:
    dump = tmp_path / "d.json"
    dump.write_text(json.dumps({"summary": "x" * (100 * 1024)}), encoding="utf-8")
    episodes, rejects = frames(dump)
    assert episodes.height == 0
    assert rejects["reason"].cast(pl.String).to_list() == ["payload_too_large"]
