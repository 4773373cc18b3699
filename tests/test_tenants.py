"""Tenants never see, hide or overwrite each other (issue 10 §3).

Two landing zones (``acme`` and ``globex``) holding the very same Mem0 dump, under the same file
name, are ingested into one store, as two deployments with different ``MEMPORT_TENANT_ID`` sharing
a store would. Each tenant must then see its own 8 episodes in every catalog view and every
export format and profile, and re-imports must keep them apart.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from connectors.schema import EPISODE_SCHEMA
from pipelines.exports import lifecycle
from pipelines.exports.reimport import import_export
from pipelines.exports.request import ExportRequest
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import EpisodeStore
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location
from tests.conftest import memport_settings, put

TENANTS = ("acme", "globex")
IDS = [f"mem-{i}" for i in range(8)]


def mem0_dump(text: str = "fact", updated: str = "2025-02-01T00:00:00Z") -> str:
    """8 good Mem0 memories and one without text (a ``missing_field`` reject)."""
    records: list[dict[str, Any]] = [
        {
            "id": sid,
            "memory": f"{text} {n}",
            "user_id": "u1",
            "created_at": "2025-01-01T00:00:00Z",
            "updated_at": updated,
        }
        for n, sid in enumerate(IDS)
    ]
    records.append({"id": "mem-bad", "user_id": "u1", "created_at": "2025-01-01T00:00:00Z"})
    return json.dumps(records)


def ingest_tenants(
    base: Path, store: EpisodeStore, order: tuple[str, ...] = TENANTS, *, own_names: bool = False
) -> None:
    """Each tenant's landing zone holds the same dump (at the same path unless ``own_names``);
    ingest them in ``order``."""
    for tenant in order:
        landing = Location.from_url(str(base / f"landing-{tenant}"))
        name = f"{tenant}.json" if own_names else "memories.json"
        put(landing, f"mem0/{name}", mem0_dump())
        result = ingest_dump(store, landing, "mem0", name, tenant_id=tenant)
        assert result.counts == {"read": 9, "accepted": 8, "rejected": 1, "duplicate": 0}


def per_tenant(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, int]:
    rows = con.sql(f"SELECT tenant_id, count(*) FROM {relation} GROUP BY 1").fetchall()
    return dict(sorted(rows))


def ids_by_tenant(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    rows = con.sql("SELECT tenant_id, episode_id FROM episodes").fetchall()
    return {t: {e for tt, e in rows if tt == t} for t in TENANTS}


@pytest.fixture
def two_tenants(tmp_path: Path) -> EpisodeStore:
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    ingest_tenants(tmp_path, store)
    return store


def test_every_catalog_view_is_per_tenant(two_tenants: EpisodeStore, tmp_path: Path) -> None:
    build_catalog(two_tenants, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        assert per_tenant(con, "episode_log") == {"acme": 8, "globex": 8}
        assert per_tenant(con, "episodes") == {"acme": 8, "globex": 8}
        assert per_tenant(con, "episodes_as_of(now())") == {"acme": 8, "globex": 8}
        assert per_tenant(con, "rejects") == {"acme": 1, "globex": 1}
        assert per_tenant(con, "imports WHERE live") == {"acme": 1, "globex": 1}
        assert con.sql("SELECT count(DISTINCT episode_id) FROM episodes").fetchall() == [(16,)]
        ids = ids_by_tenant(con)
        assert ids["acme"].isdisjoint(ids["globex"])  # the same source id is two episodes
        for tenant in TENANTS:
            sources = con.sql(
                "SELECT source_id FROM episodes WHERE tenant_id = ?", params=[tenant]
            ).fetchall()
            assert sorted(s for (s,) in sources) == IDS


@pytest.mark.parametrize("own_names", [False, True], ids=["same-name", "own-name"])
def test_ingest_order_does_not_matter(own_names: bool, tmp_path: Path) -> None:
    """Whichever tenant comes last, neither hides the other (the issue: globex ingested first,
    then acme; ``episodes`` showed acme only and ``--tenant globex`` exported 0 rows)."""
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    ingest_tenants(tmp_path, store, order=("globex", "acme"), own_names=own_names)
    build_catalog(store, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        assert per_tenant(con, "episode_log") == {"acme": 8, "globex": 8}
        assert per_tenant(con, "episodes") == {"acme": 8, "globex": 8}
        assert per_tenant(con, "episodes_as_of(now())") == {"acme": 8, "globex": 8}
    exports = Location.from_url(str(tmp_path / "exports"))
    for tenant in TENANTS:
        assert export(store, exports, format="ndjson", tenant_id=tenant)["rows"] == 8


def test_reingest_replaces_only_its_own_tenant(two_tenants: EpisodeStore, tmp_path: Path) -> None:
    """A new version of acme's dump replaces acme's partition, not globex's under the same name."""
    landing = Location.from_url(str(tmp_path / "landing-acme"))
    put(landing, "mem0/memories.json", mem0_dump("new fact", updated="2025-03-01T00:00:00Z"))
    ingest_dump(two_tenants, landing, "mem0", "memories.json", tenant_id="acme")
    build_catalog(two_tenants, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        assert per_tenant(con, "episode_log") == {"acme": 8, "globex": 8}
        assert per_tenant(con, "imports WHERE live") == {"acme": 1, "globex": 1}
        assert per_tenant(con, "imports") == {"acme": 2, "globex": 1}
        content = dict(con.sql("SELECT tenant_id, min(content) FROM episodes GROUP BY 1").fetchall())
        assert content == {"acme": "new fact 0", "globex": "fact 0"}


FORMATS = [  # (format, profile)
    ("json", None),
    ("ndjson", None),
    ("csv", None),
    ("markdown", None),
    ("ndjson", "cortexdb"),
    ("csv", "mnueron"),
]


def export(store: EpisodeStore, exports: Location, **fields: Any) -> dict[str, Any]:
    manifest = lifecycle.export(store, exports, ExportRequest.parse(fields))
    assert manifest["status"] == "READY", manifest["error"]
    return manifest


def exported_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    dest = Location.from_url(manifest["destination"])
    (f,) = manifest["files"]
    text = dest.fs.cat_file(dest.path(f["name"])).decode("utf-8")
    fmt = manifest["format"]
    if fmt == "json":
        return list(json.loads(text))
    if fmt == "ndjson":
        return [json.loads(line) for line in text.splitlines()]
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    return [{"heading": line} for line in text.splitlines() if line.startswith("#### ")]


@pytest.mark.parametrize(("fmt", "profile"), FORMATS)
def test_every_export_format_is_per_tenant(
    fmt: str, profile: str | None, two_tenants: EpisodeStore, tmp_path: Path
) -> None:
    build_catalog(two_tenants, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        ids = ids_by_tenant(con)
    exports = Location.from_url(str(tmp_path / "exports"))
    request: dict[str, Any] = {"format": fmt} | ({"profile": profile} if profile else {})
    for tenant in TENANTS:
        manifest = export(two_tenants, exports, tenant_id=tenant, **request)
        assert manifest["rows"] == 8, (tenant, fmt, profile)
        rows = exported_rows(manifest)
        assert len(rows) == 8
        if profile is None and fmt != "markdown":
            assert {r["tenant_id"] for r in rows} == {tenant}
            assert {r["episode_id"] for r in rows} == ids[tenant]
        if profile == "mnueron":
            assert {r["id"] for r in rows} == ids[tenant]
        if profile == "cortexdb":
            assert sorted(r["idempotency_key"] for r in rows) == sorted(f"mem0:{s}" for s in IDS)
    everyone = export(two_tenants, exports, tenant_id="*", **request)
    assert everyone["rows"] == 16
    assert len(exported_rows(everyone)) == 16


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv"])
def test_reimport_keeps_tenants_apart(fmt: str, two_tenants: EpisodeStore, tmp_path: Path) -> None:
    """An every-tenant export re-imports as two tenants' episodes (no cross-tenant 'duplicates'),
    and a tenant's own export re-imported into the same store is a new version, not a new episode."""
    exports = Location.from_url(str(tmp_path / "exports"))
    everyone = export(two_tenants, exports, format=fmt, tenant_id="*")
    other = EpisodeStore.from_url(str(tmp_path / "other"))
    (result,) = import_export(other, everyone)
    assert result.counts == {"read": 16, "accepted": 16, "rejected": 0, "duplicate": 0}
    build_catalog(other, tmp_path / "other.duckdb")
    with connect(tmp_path / "other.duckdb") as con:
        assert per_tenant(con, "episodes") == {"acme": 8, "globex": 8}
    for tenant in TENANTS:
        import_export(two_tenants, export(two_tenants, exports, format=fmt, tenant_id=tenant))
    build_catalog(two_tenants, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        assert per_tenant(con, "episode_log") == {"acme": 16, "globex": 16}
        assert per_tenant(con, "episodes") == {"acme": 8, "globex": 8}
        assert per_tenant(con, "episodes_as_of(now())") == {"acme": 8, "globex": 8}


def test_cortexdb_line_of_another_tenant_is_rejected(tmp_path: Path) -> None:
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    landing = Location.from_url(str(tmp_path / "landing"))
    line = {
        "episode_id": "ep_1",
        "scope": "org:x",
        "type": "decision",
        "content": "c",
        "timestamp": "2025-05-02T16:20:00Z",
    }
    lines = [
        line,
        line | {"episode_id": "ep_2", "tenant_id": "globex"},
        line | {"episode_id": "ep_3", "tenant_id": "acme"},
    ]
    put(landing, "cortexdb/e.jsonl", "\n".join(json.dumps(x) for x in lines))
    result = ingest_dump(store, landing, "cortexdb", "e.jsonl", tenant_id="acme")
    assert result.counts == {"read": 3, "accepted": 2, "rejected": 1, "duplicate": 0}
    assert result.manifest["rejects_by_reason"] == {"tenant_mismatch": 1}


def test_episode_ids_written_by_older_versions_still_resolve(tmp_path: Path) -> None:
    """A store written before episode_id carried the tenant: its rows keep their ids, and a newer
    version of the same episode ingested now (new id) replaces them as current, per tenant."""
    import polars_hash as plh

    store = EpisodeStore.from_url(str(tmp_path / "store"))
    ingest_tenants(tmp_path, store)
    old_id = pl.lit("ep_") + plh.concat_str(pl.lit("mem0\x1f"), pl.col("source_id")).chash.sha2_256()
    for m in store.live_manifests():  # rewrite the ids as the old formula had them (no tenant)
        for f in m["files"]["episodes"]:
            frame = pl.read_parquet(f["path"]).with_columns(episode_id=old_id)
            frame.select(EPISODE_SCHEMA.names()).write_parquet(f["path"])
    build_catalog(store, tmp_path / "old.duckdb")
    with connect(tmp_path / "old.duckdb") as con:  # an old store, two tenants sharing ids
        assert per_tenant(con, "episodes") == {"acme": 8, "globex": 8}
        assert con.sql("SELECT count(DISTINCT episode_id) FROM episodes").fetchall() == [(8,)]
    landing = Location.from_url(str(tmp_path / "landing-acme"))
    put(landing, "mem0/later.json", mem0_dump("newer", updated="2025-06-01T00:00:00Z"))
    ingest_dump(store, landing, "mem0", "later.json", tenant_id="acme")
    build_catalog(store, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        assert per_tenant(con, "episode_log") == {"acme": 16, "globex": 8}
        assert per_tenant(con, "episodes") == {"acme": 8, "globex": 8}
        assert per_tenant(con, "episodes_as_of(now())") == {"acme": 8, "globex": 8}
        current = dict(con.sql("SELECT tenant_id, min(content) FROM episodes GROUP BY 1").fetchall())
        assert current == {"acme": "newer 0", "globex": "fact 0"}
    exports = Location.from_url(str(tmp_path / "exports"))
    for tenant, text in (("acme", "newer"), ("globex", "fact")):
        rows = exported_rows(export(store, exports, format="ndjson", tenant_id=tenant))
        assert len(rows) == 8 and {r["content"].split()[0] for r in rows} == {text}


def test_cli_export_other_tenant_then_import_export(
    two_tenants: EpisodeStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``memport export`` runs the adhoc_export job (MEMPORT_TENANT_ID=acme): ``--tenant`` picks
    another tenant's episodes, and import-export keeps that tenant."""
    from pipelines.cli import main as cli

    for name, value in (memport_settings(tmp_path) | {"MEMPORT_TENANT_ID": "acme"}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["export", "ndjson", "--tenant", "globex"])  # the command: was 0 rows
    out = capsys.readouterr().out
    assert code == 0 and "READY, 8 rows" in out, out
    export_id = out.split()[1].rstrip(":")
    manifest = lifecycle.get(Location.from_url(str(tmp_path / "exports")), export_id)
    assert manifest["filters"]["tenant_id"] == "globex"
    assert {r["tenant_id"] for r in exported_rows(manifest)} == {"globex"}
    other = tmp_path / "other"
    code = cli.main(
        ["import-export", export_id, "--store", str(other / "store"), "--catalog", str(other / "c.duckdb")]
    )
    assert code == 0, capsys.readouterr().err
    with connect(other / "c.duckdb") as con:
        assert per_tenant(con, "episodes") == {"globex": 8}


def test_episode_id_formula_is_injective() -> None:
    """``ep_`` + sha256 of ``<len>:<tenant>\\x1f<system>\\x1f<source_id>``: a tenant or source id
    holding the separator cannot make another identity's text."""
    import hashlib

    from connectors.kit.normalize import episode_id

    def eid(tenant: str, source_id: str) -> str:
        return str(pl.DataFrame({"source_id": [source_id]}).select(episode_id(tenant, "mem0")).item())

    assert eid("acme", "m-1") == "ep_" + hashlib.sha256(b"4:acme\x1fmem0\x1fm-1").hexdigest()
    assert eid("acme", "m-1") != eid("globex", "m-1")
    assert eid("x\x1fmem0", "1") != eid("x", "mem0\x1fmem0\x1f1")
    assert eid("é", "1") == "ep_" + hashlib.sha256("2:é\x1fmem0\x1f1".encode()).hexdigest()


def test_snapshot_restore_and_its_proof_keep_both_tenants(two_tenants: EpisodeStore, tmp_path: Path) -> None:
    """A snapshot takes each tenant's live import of the same-named dump; the restored store and
    the restore check agree with the live store, per tenant."""
    from datetime import UTC, datetime

    from pipelines.backups.restore import prove, restore
    from pipelines.backups.snapshot import take_snapshot

    today = datetime.now(UTC).date().isoformat()
    backup = Location.from_url(str(tmp_path / "backup"))
    snap = take_snapshot(two_tenants, backup, today)
    assert snap.rows == 16  # 8 episodes per tenant
    target = EpisodeStore.from_url(str(tmp_path / "restored"))
    restore(backup, today, target, tmp_path / "r.duckdb")
    with connect(tmp_path / "r.duckdb") as con:
        assert per_tenant(con, "episodes") == {"acme": 8, "globex": 8}
        assert per_tenant(con, "rejects") == {"acme": 1, "globex": 1}
        assert per_tenant(con, "imports WHERE live") == {"acme": 1, "globex": 1}
    verdict = prove(backup, today, two_tenants, scratch=tmp_path)
    assert verdict["passed"], verdict


def test_imports_written_by_older_versions_keep_their_meaning(tmp_path: Path) -> None:
    """Before manifest version 2 an import replaced every earlier import of its partition, whatever
    the tenant, and vacuum may since have deleted the replaced files: those stay replaced (no
    catalog naming a missing file). A new import then replaces only its own tenant's."""
    store = EpisodeStore.from_url(str(tmp_path / "store"))
    ingest_tenants(tmp_path, store, order=("acme", "globex"))
    for _, m in list(store.manifests()):  # as the old version wrote them; acme's files vacuumed
        path = store.manifest_path(m["source_system"], m["dump_key"], m["ingest_id"])
        store.fs.pipe_file(path, json.dumps(m | {"manifest_version": 1}).encode())
        if m["tenant_id"] == "acme":
            store.fs.rm([f["path"] for kind in ("episodes", "rejects") for f in m["files"][kind]])
    build_catalog(store, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        assert per_tenant(con, "imports WHERE live") == {"globex": 1}
        assert per_tenant(con, "episodes") == {"globex": 8}
    landing = Location.from_url(str(tmp_path / "landing-acme"))
    ingest_dump(store, landing, "mem0", "memories.json", tenant_id="acme")  # version 2
    build_catalog(store, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        assert per_tenant(con, "imports WHERE live") == {"acme": 1, "globex": 1}
        assert per_tenant(con, "episodes") == {"acme": 8, "globex": 8}
