"""The DuckDB catalog: views over the store's live data files, for analysts and for memport.

The catalog is rebuilt, never edited: a new database file is written beside the old one and
renamed over it in one step. An analyst holding the old file open read-only keeps a consistent
view of the store as it was (their handle still points at the old file, and the data files it names
are kept until ``vacuum``'s grace period passes); the pipeline never waits on their lock. A session
holding it read-write is never swapped under, and what it wrote is never replaced: see
``pipelines.store.catalog_file``.

Views: ``episodes`` (current version of each episode: per tenant, system and source id),
``episode_log`` (every version), ``rejects``, ``imports`` (every import, ``live`` marks the
committed one per partition and tenant), ``exports`` (every export from its manifest, newest
first), ``snapshots`` (the backups, see ``pipelines.backups.snapshot``), and the table macro
``episodes_as_of(ts)`` for bi-temporal questions.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from connectors.kit.sql import duckdb_connect, quote_identifier, quote_list
from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA
from pipelines.backups.snapshot import SNAPSHOTS_SCHEMA, snapshots_frame
from pipelines.exports.lifecycle import manifests
from pipelines.store import catalog_file
from pipelines.store.episodes import CURRENT_ORDER, IDENTITY, EpisodeStore, dump_relpath, typed_empty
from pipelines.store.locations import Location


@dataclass(frozen=True)
class CatalogSummary:
    path: Path
    partitions: int
    episode_files: int
    episodes: int
    episode_versions: int
    rejects: int
    #: Why the new catalog is not (only) at ``path``: deferred for a read-write session, or the
    #: old file someone wrote into was kept aside. None when simply installed.
    note: str | None = None


def _files_view(con: duckdb.DuckDBPyConnection, name: str, files: list[str], schema: pl.Schema) -> None:
    view, empty = quote_identifier(name), quote_identifier(f"_empty_{name}")
    if files:
        # hive_partitioning off: the columns are the rows' own, never the folder names'
        # (source_system=<s>/dump=<key>/ would otherwise override source_system and add `dump`)
        source = f"read_parquet({quote_list(files)}, hive_partitioning = false)"
        con.execute(f"CREATE VIEW {view} AS SELECT * FROM {source}")
        return
    con.register("empty", typed_empty(schema))
    con.execute(f"CREATE TABLE {empty} AS SELECT * FROM empty")
    con.unregister("empty")
    con.execute(f"CREATE VIEW {view} AS SELECT * FROM {empty}")


def _unread_columns(manifest: dict[str, Any]) -> dict[str, Any]:
    """Bytes of the dump not read into records (0 in a manifest written before they were counted),
    from which offset and why: an import whose account balances read its whole dump."""
    spans = manifest.get("unread") or []
    first = spans[0] if spans else {}
    return {
        "unread_bytes": int(manifest["counts"].get("unread_bytes", 0)),
        "unread_offset": first.get("offset"),
        "unread_reason": "; ".join(f"{s['reason']} at byte {s['offset']:,}: {s['detail']}" for s in spans)
        or None,
    }


def _imports_frame(manifests: list[tuple[bool, dict[str, Any]]]) -> pl.DataFrame:
    rows = [
        {
            "ingest_id": m["ingest_id"],
            "live": live,
            "source_system": m["source_system"],
            "dump": dump_relpath(m["dump_key"]),
            "dump_uri": m["dump_uri"],
            "dump_sha256": m["dump_sha256"],
            "dump_bytes": m["dump_bytes"],
            "tenant_id": m["tenant_id"],
            "scope_template": m["scope_template"],
            "connector_version": m["connector_version"],
            "started_at": datetime.fromisoformat(m["started_at"]),
            "finished_at": datetime.fromisoformat(m["finished_at"]),
            "duration_s": float(m["duration_s"]),
            **{k: int(v) for k, v in m["counts"].items()},
            **_unread_columns(m),
            "rejects_by_reason": json.dumps(m["rejects_by_reason"]),
            "episode_files": len(m["files"]["episodes"]),
            "reject_files": len(m["files"]["rejects"]),
        }
        for live, m in manifests
    ]
    schema: dict[str, pl.DataType] = {
        "ingest_id": pl.String(),
        "live": pl.Boolean(),
        "source_system": pl.String(),
        "dump": pl.String(),
        "dump_uri": pl.String(),
        "dump_sha256": pl.String(),
        "dump_bytes": pl.Int64(),
        "tenant_id": pl.String(),
        "scope_template": pl.String(),
        "connector_version": pl.String(),
        "started_at": pl.Datetime("us", "UTC"),
        "finished_at": pl.Datetime("us", "UTC"),
        "duration_s": pl.Float64(),
        "read": pl.Int64(),
        "accepted": pl.Int64(),
        "rejected": pl.Int64(),
        "duplicate": pl.Int64(),
        "unread_bytes": pl.Int64(),
        "unread_offset": pl.Int64(),
        "unread_reason": pl.String(),
        "rejects_by_reason": pl.String(),
        "episode_files": pl.Int64(),
        "reject_files": pl.Int64(),
    }
    return pl.DataFrame(rows, schema=schema).sort("started_at", descending=True)


_EXPORT_COLUMNS: dict[str, pl.DataType] = {
    "id": pl.String(),
    "name": pl.String(),
    "status": pl.String(),
    "format": pl.String(),
    "profile": pl.String(),
    "compression": pl.String(),
    "rows": pl.Int64(),
    "files": pl.Int64(),
    "bytes": pl.Int64(),
    "destination": pl.String(),
    "filters": pl.String(),
    "error": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "started_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"),
    "expires_at": pl.Datetime("us", "UTC"),
    "expired_at": pl.Datetime("us", "UTC"),
    "duration_s": pl.Float64(),
}


def _exports_frame(exports: Location | None) -> pl.DataFrame:
    def ts(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    rows = [
        {
            **{k: m.get(k) for k in ("id", "name", "status", "format", "profile", "compression")},
            "rows": m["rows"],
            "files": len(m["files"]),
            "bytes": sum(f["bytes"] for f in m["files"]),
            "destination": m["destination"],
            "filters": json.dumps(m["filters"]),
            "error": m["error"],
            **{k: ts(m[k]) for k in ("created_at", "started_at", "finished_at", "expires_at", "expired_at")},
            "duration_s": m["duration_s"],
        }
        for m in (manifests(exports) if exports is not None else [])
    ]
    return pl.DataFrame(rows, schema=_EXPORT_COLUMNS)


def build_catalog(
    store: EpisodeStore,
    catalog_path: str | Path,
    *,
    exports: Location | None = None,
    backup: Location | None = None,
) -> CatalogSummary:
    """Write a fresh catalog for the store's live partitions and swap it in atomically.

    ``exports``: where export manifests are, for the ``exports`` view; ``backup``: where snapshots
    are, for the ``snapshots`` view (each empty without).
    """
    target = Path(catalog_path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    manifests = list(store.manifests())
    live = [m for is_live, m in manifests if is_live]
    uri = store.location.uri
    episode_files = [uri(f["path"]) for m in live for f in m["files"]["episodes"]]
    reject_files = [uri(f["path"]) for m in live for f in m["files"]["rejects"]]
    catalog_file.sweep_temps(target)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        with catalog_file.create(tmp) as con:
            store.location.register_with(con)
            _files_view(con, "episode_log", episode_files, EPISODE_SCHEMA)
            _files_view(con, "rejects", reject_files, REJECT_SCHEMA)
            con.execute(
                "CREATE VIEW episodes AS SELECT * FROM episode_log "
                f"QUALIFY row_number() OVER (PARTITION BY {IDENTITY} ORDER BY {CURRENT_ORDER}) = 1"
            )
            con.execute(
                """
                CREATE MACRO episodes_as_of(ts) AS TABLE
                SELECT * FROM episode_log
                WHERE coalesce(valid_from <= ts::TIMESTAMPTZ, true)
                  AND coalesce(valid_to > ts::TIMESTAMPTZ, true)
                  AND coalesce(recorded_at, created_at, observed_at) <= ts::TIMESTAMPTZ
                  AND coalesce(superseded_at > ts::TIMESTAMPTZ, status = 'active')
                QUALIFY row_number() OVER (PARTITION BY """
                + IDENTITY
                + " ORDER BY "
                + CURRENT_ORDER
                + ") = 1"
            )
            con.register("import_rows", _imports_frame(manifests))
            con.execute("CREATE TABLE imports AS SELECT * FROM import_rows")
            con.unregister("import_rows")
            con.register("export_rows", _exports_frame(exports))
            con.execute("CREATE TABLE _exports AS SELECT * FROM export_rows")
            con.unregister("export_rows")
            con.execute("CREATE VIEW exports AS SELECT * FROM _exports ORDER BY created_at DESC, id DESC")
            _snapshots_table(con, backup)
            con.execute(
                "CREATE TABLE catalog_info AS SELECT ? AS store_url, ?::TIMESTAMPTZ AS built_at",
                [store.location.url(), datetime.now(UTC)],
            )
            counts = con.sql(
                "SELECT (SELECT count(*) FROM episodes), (SELECT count(*) FROM episode_log), "
                "(SELECT count(*) FROM rejects)"
            ).fetchall()[0]
        note = catalog_file.install(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    path = catalog_file.readable(target)
    episodes, versions, rejects = counts
    return CatalogSummary(path, len(live), len(episode_files), episodes, versions, rejects, note=note)


def _snapshots_table(con: duckdb.DuckDBPyConnection, backup: Location | None) -> None:
    frame = snapshots_frame(backup) if backup else pl.DataFrame(schema=SNAPSHOTS_SCHEMA)
    con.register("snapshot_rows", frame)
    con.execute("CREATE TABLE snapshots AS SELECT * FROM snapshot_rows")
    con.unregister("snapshot_rows")


def connect(catalog_path: str | Path, *, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open the catalog the way an analyst should: read-only, with the store's filesystem."""
    path = catalog_file.readable(Path(catalog_path))
    if not path.exists():
        raise FileNotFoundError(
            f"no catalog at {path}; run `make run` (or materialize the episode_catalog asset)"
        )
    con = duckdb_connect(str(path), read_only=read_only)
    (store_url,) = con.sql("SELECT store_url FROM catalog_info").fetchall()[0]
    Location.from_url(store_url).register_with(con)
    return con
