"""Mem0 content people call memory is kept, and identity survives a second dump of the same memory.

Graph relations of a v1.1 envelope, ``expiration_date``, OpenMemory ``paused``, and the same memory
seen by ``get_all`` (with its user) and by the OSS history database (without one).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import fsspec
import polars as pl

from connectors import registry
from pipelines.exports import lifecycle
from pipelines.exports.request import ExportRequest
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location
from tests.conftest import put
from tests.hostile import GIB, ingest_bounded
from tests.test_connectors_conformance import read_all, totals

MEM0 = registry.get("mem0")
M1 = "3b0c8a52-1d7e-4f60-9a11-5c2e7d8f9a01"
M2 = "3b0c8a52-1d7e-4f60-9a11-5c2e7d8f9a02"


def _read(path: Path, template: str = "user:{user_id}") -> tuple[pl.DataFrame, pl.DataFrame, int]:
    batches = read_all(MEM0, path, scope_template=template)
    read, accepted, rejected = totals(batches)
    assert read == accepted + rejected
    return pl.concat([b.episodes for b in batches]), pl.concat([b.rejects for b in batches]), read


def _memory(mid: str, text: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": mid,
        "memory": text,
        "user_id": "alex",
        "created_at": "2026-01-10T09:00:00+00:00",
        "updated_at": "2026-01-10T09:00:00+00:00",
    } | fields


def test_graph_relations_are_observations_counted_in_read(tmp_path: Path) -> None:
    envelope = {
        "results": [_memory(M1, "Likes pizza", run_id="run-7"), _memory(M2, "Lives in Lyon")],
        "relations": [
            {"source": "alex", "source_type": "person", "relationship": "likes", "target": "pizza"},
            {"source": "alex", "relationship": "lives_in", "destination": "lyon"},  # search's name
            {"source": "alex", "relationship": "knows"},  # no target
        ],
    }
    path = tmp_path / "get_all_v11.json"
    path.write_text(json.dumps(envelope, indent=1), encoding="utf-8")
    episodes, rejects, read = _read(path)
    assert read == 5
    relations = episodes.filter(pl.col("source_id").str.starts_with("relation:"))
    assert relations["content"].to_list() == ["alex — likes — pizza", "alex — lives_in — lyon"]
    assert set(relations["type"]) == {"observation"}
    assert relations["user_id"].to_list() == ["alex", "alex"]  # the identity every result shares
    assert relations["session_id"].to_list() == [None, None]  # not shared by every result
    assert relations["scope"].to_list() == ["user:alex", "user:alex"]
    assert relations["dump_record"].to_list() == [2, 3]
    meta = json.loads(relations["metadata"][0])["_source"]
    assert meta["source_type"] == "person" and meta["target"] == "pizza"
    assert rejects.select("dump_record", "reason").rows() == [(4, "missing_field")]
    assert "relation 2" in rejects["detail"][0] and "target" in rejects["detail"][0]
    # the same triple read again has the same source id: one episode across dumps
    again, _, _ = _read(path)
    assert again.filter(pl.col("source_id").str.starts_with("relation:"))["source_id"].to_list() == (
        relations["source_id"].to_list()
    )


def test_expiration_date_bounds_validity(tmp_path: Path) -> None:
    dump = [
        _memory(M1, "On a diet until the new year", expiration_date="2026-12-31"),
        _memory(M2, "Visiting Oslo", expiration_date="2026-02-01T12:00:00Z"),
        _memory("m3", "Bad expiry", expiration_date="next week"),
    ]
    path = tmp_path / "expiring.json"
    path.write_text(json.dumps(dump), encoding="utf-8")
    episodes, rejects, _ = _read(path)
    valid_to = dict(zip(episodes["source_id"], episodes["valid_to"], strict=True))
    assert valid_to[M1].isoformat() == "2027-01-01T00:00:00+00:00"  # hidden after that date
    assert valid_to[M2].isoformat() == "2026-02-01T12:00:00+00:00"
    assert rejects.select("dump_record", "reason").rows() == [(2, "bad_timestamp")]
    assert "expiration_date" in rejects["detail"][0]


def test_expired_memories_are_not_valid_after_their_date(tmp_path: Path) -> None:
    landing = Location.from_url(str(tmp_path / "landing"))
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    put(landing, "mem0/m.json", json.dumps([_memory(M1, "Visiting Oslo", expiration_date="2026-02-01")]))
    ingest_dump(store, landing, "mem0", "m.json", tenant_id="acme")
    build_catalog(store, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        as_of = "SELECT count(*) FROM episodes_as_of(?::TIMESTAMPTZ)"
        assert con.sql(as_of, params=["2026-02-01T23:00:00Z"]).fetchall() == [(1,)]
        assert con.sql(as_of, params=["2026-02-02T00:00:00Z"]).fetchall() == [(0,)]


def test_paused_openmemory_memory_is_not_active(tmp_path: Path) -> None:
    snapshot = {
        "user": {"id": "u-internal", "user_id": "alex"},
        "memories": [
            {"id": M1, "user_id": "u-internal", "content": "Likes jazz", "state": "active",
             "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00"},
            {"id": M2, "user_id": "u-internal", "content": "Works nights", "state": "paused",
             "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-05T00:00:00+00:00"},
        ],
    }  # fmt: skip
    path = tmp_path / "memories.json"
    path.write_text(json.dumps(snapshot), encoding="utf-8")
    episodes, _, _ = _read(path)
    status = dict(zip(episodes["source_id"], episodes["status"], strict=True))
    assert status == {M1: "active", M2: "superseded"}
    paused = episodes.filter(pl.col("source_id") == M2)
    assert paused["superseded_at"][0].isoformat() == "2026-01-05T00:00:00+00:00"
    assert json.loads(paused["metadata"][0])["_source"]["state"] == "paused"


def test_get_all_observed_at_is_when_the_text_was_last_written(tmp_path: Path) -> None:
    path = tmp_path / "updated.json"
    path.write_text(json.dumps([_memory(M1, "Likes pizza", updated_at="2026-01-11T08:00:00Z")]), "utf-8")
    episodes, _, _ = _read(path)
    assert episodes["created_at"][0].isoformat() == "2026-01-10T09:00:00+00:00"
    assert episodes["observed_at"][0].isoformat() == "2026-01-11T08:00:00+00:00"


def _history_db(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE history (id TEXT PRIMARY KEY, memory_id TEXT, old_memory TEXT, new_memory TEXT, "
        "event TEXT, created_at DATETIME, updated_at DATETIME, is_deleted INTEGER, actor_id TEXT, role TEXT)"
    )
    con.executemany(
        "INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL, 'user')",
        [
            ("h1", M1, None, "Likes food", "ADD", "2026-01-10T09:00:00+00:00", None),
            ("h2", M1, "Likes food", "Likes pizza", "UPDATE", "2026-01-10T09:00:00+00:00",
             "2026-01-11T08:00:00+00:00"),
            ("h3", M2, None, "Lives in Lyon", "ADD", "2026-01-10T09:00:00+00:00", None),
            ("h4", M2, "Lives in Lyon", None, "DELETE", "2026-01-10T09:00:00+00:00",
             "2026-01-12T08:00:00+00:00"),
        ],
    )  # fmt: skip
    con.commit()
    con.close()


def test_a_version_without_identity_does_not_erase_the_user(tmp_path: Path) -> None:
    """get_all (user, run, actor) and the history database (no user) hold the same memory: the
    ``episodes`` view and an export keep the user's scope; a later DELETE still wins."""
    landing = Location.from_url(str(tmp_path / "landing"))
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    get_all = {
        "results": [
            _memory(M1, "Likes pizza", run_id="run-7", actor_id="alex", updated_at="2026-01-11T08:00:00Z"),
            _memory(M2, "Lives in Lyon"),
        ]
    }
    put(landing, "mem0/get_all.json", json.dumps(get_all))
    (tmp_path / "landing" / "mem0" / "oss").mkdir()
    _history_db(tmp_path / "landing" / "mem0" / "oss" / "history.db")
    ingest_dump(store, landing, "mem0", "get_all.json", tenant_id="acme")
    ingest_dump(store, landing, "mem0", "oss/history.db", tenant_id="acme", scope_template="oss")
    build_catalog(store, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        rows = con.sql(
            "SELECT source_id, scope, user_id, session_id, content, status FROM episodes ORDER BY source_id"
        ).fetchall()
        versions = con.sql("SELECT count(DISTINCT episode_id), count(*) FROM episode_log").fetchall()
    assert versions == [(2, 6)]
    assert rows == [
        (M1, "user:alex", "alex", "run-7", "Likes pizza", "active"),
        (M2, "oss", None, None, "Lives in Lyon", "deleted"),  # the tombstone is newer: it wins
    ]
    request = ExportRequest.parse({"format": "ndjson", "tenant_id": "acme", "scope": "user:alex"})
    manifest = lifecycle.export(store, Location.from_url(str(tmp_path / "exports")), request)
    assert manifest["status"] == "READY", manifest["error"]
    (f,) = manifest["files"]
    exported = [json.loads(line) for line in Path(f["url"]).read_text(encoding="utf-8").splitlines()]
    assert [(e["source_id"], e["user_id"], e["content"]) for e in exported] == [(M1, "alex", "Likes pizza")]


def test_relations_of_a_memory_filesystem_dump(tmp_path: Path) -> None:
    """The relation pass reads through fsspec like the rest (no local path needed)."""
    fs = fsspec.filesystem("memory")
    fs.pipe("/fid/rel.json", json.dumps({"results": [], "relations": [{"source": "a", "relationship": "b",
                                                                     "target": "c"}]}).encode())  # fmt: skip
    batches = list(MEM0.read(fs, "/fid/rel.json", tenant_id="acme", scope_template="graph"))
    episodes = pl.concat([b.episodes for b in batches])
    assert episodes["content"].to_list() == ["a — b — c"]
    assert episodes["observed_at"][0] is not None
    fs.rm("/fid", recursive=True)


def test_hostile_relations_cost_one_record_each(tmp_path: Path) -> None:
    """A relation too large or too deep is one reject; a document cut inside the relations keeps
    the relations before the cut and counts the cut once (run in a bounded child process)."""
    good = [json.dumps(_memory(f"m{i}", f"fact {i}")).encode() for i in range(3)]
    rel = [json.dumps({"source": "a", "relationship": "r", "target": f"t{i}"}).encode() for i in range(3)]

    def hostile(path: Path) -> None:
        with path.open("wb") as f:
            f.write(b'{"results": [' + b",".join(good) + b'], "relations": [' + rel[0] + b",")
            f.write(b'{"source": "a", "relationship": "r", "target": "' + b"x" * (5 << 20) + b'"},')
            f.write(b"[" * 100_000 + b"]" * 100_000 + b"," + rel[1] + b"]}")

    cut = b'{"results": [' + b",".join(good) + b'], "relations": [' + rel[0] + b"," + rel[1][:20]
    out = ingest_bounded(tmp_path, {"mem0/hostile.json": hostile, "mem0/cut.json": cut}, timeout=60.0)
    assert not out.killed, out.stderr[-1500:]
    assert out.peak < GIB
    assert out.dumps["mem0/hostile.json"]["counts"] == {
        "read": 7,
        "accepted": 5,
        "rejected": 2,
        "duplicate": 0,
    }
    assert out.dumps["mem0/hostile.json"]["reasons"] == {"payload_too_large": 1, "too_deep": 1}
    counts = out.dumps["mem0/cut.json"]["counts"]
    assert (
        counts["read"] == 5 and counts["accepted"] == 4 and counts["rejected"] == 1
    )  # 3 results, 1 relation
    # reported once, by the results' walk, from where it stopped: the start of the relations list
    assert counts["unread_bytes"] == len(cut) - cut.index(b'"relations":') - len(b'"relations":')
    assert out.dumps["mem0/cut.json"]["reasons"] == {"truncated_document": 1}
