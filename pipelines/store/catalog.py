"""The DuckDB catalog: views over the store's materialized current state, for analysts and memport.

The catalog is rebuilt, never edited: a new database file is written beside the old one and
renamed over it in one step. An analyst holding the old file open read-only keeps a consistent
view of the store as it was (their handle still points at the old file, and the data files it names
are kept until ``vacuum``'s grace period passes); the pipeline never waits on their lock. A session
holding it read-write is never swapped under, and what it wrote is never replaced: see
``pipelines.store.catalog_file``.

Views: ``episodes`` (current version of each episode: per tenant, system and source id, read
from the materialized current state, ``pipelines.store.current``), ``episode_log`` (every live
version) and ``rejects``, materialized too, ``imports`` (every import, ``live`` marks the
committed one per partition and tenant), ``exports`` (every export from its manifest, newest
first), ``snapshots`` (the backups, see ``pipelines.backups.snapshot``), and the table macro
``episodes_as_of(ts)`` for bi-temporal questions.
"""

from __future__ import annotations

import json
import shlex
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import polars.selectors as cs

from connectors.kit.sql import duckdb_connect, quote_identifier
from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA
from pipelines.backups.snapshot import SNAPSHOTS_SCHEMA, snapshots_frame
from pipelines.exports.lifecycle import manifests
from pipelines.store import catalog_file, current, segments
from pipelines.store.episodes import EpisodeStore, typed_empty
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
    rebuild: bool = False,
) -> CatalogSummary:
    """Refresh the store's current state, write a fresh catalog over it and swap it in atomically.

    The refresh (``pipelines.store.current``) costs what changed since the last one; ``rebuild``
    makes it start from scratch. ``exports``: where export manifests are, for the ``exports``
    view; ``backup``: where snapshots are, for the ``snapshots`` view (each empty without).
    """
    target = Path(catalog_path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    done = current.refresh(store, rebuild=rebuild)
    live = done.imports.filter("live")
    episode_files = int(live["_episode_paths"].list.len().sum())
    catalog_file.sweep_temps(target)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        with catalog_file.create(tmp) as con:
            store.location.register_with(con)
            _current_views(con, store, done.state)
            con.register("import_rows", done.imports.drop(cs.starts_with("_")))
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
        note = catalog_file.install(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    path = catalog_file.readable(target)
    episodes = sum(s.live for s in done.state.episodes)  # exact: a row is deleted once
    (versions, rejects), *_ = live.select(
        pl.col("accepted").sum(), pl.sum_horizontal("rejected", "duplicate").sum()
    ).rows()
    return CatalogSummary(path, live.height, episode_files, episodes, versions, rejects, note=note)


def _current_views(con: duckdb.DuckDBPyConnection, store: EpisodeStore, state: segments.State) -> None:
    """``episodes``, ``episode_log``, ``rejects`` and ``episodes_as_of`` over the materialized state.

    The delete positions of each table's segments are one small native table (``_deleted_<table>``),
    so a view is one scan of the table's segments and one anti-join on two integers: no file opened
    for deletes, whatever their count. ``episodes``, ``episode_log`` and ``rejects`` each read the
    files themselves (not through another view): every layer costs a point query its planning.
    """
    hidden = ", ".join(current.HIDDEN)
    bookkeeping = "''::VARCHAR AS _ingest_id, 0::UBIGINT AS _identity_hash"
    span = "NULL::TIMESTAMPTZ AS _from, NULL::TIMESTAMPTZ AS _to"
    extras = {
        "episodes": (
            EPISODE_SCHEMA,
            f"{bookkeeping}, 1::INTEGER AS _versions, NULL::VARCHAR AS _holders, {span}",
        ),
        "log": (EPISODE_SCHEMA, bookkeeping),
        "asof": (EPISODE_SCHEMA, f"{bookkeeping}, {span}"),
        "rejects": (REJECT_SCHEMA, "''::VARCHAR AS _ingest_id"),
    }
    episode_columns = ", ".join(quote_identifier(c) for c in EPISODE_SCHEMA)
    reject_columns = ", ".join(quote_identifier(c) for c in REJECT_SCHEMA)
    views = {  # view -> (table of the state, its columns)
        "_current": ("episodes", "*"),
        "episodes": ("episodes", f"* EXCLUDE ({hidden})"),
        "_asof": ("asof", "*"),
        "episode_log": ("log", episode_columns),
        "rejects": ("rejects", reject_columns),
    }
    none = "SELECT 0::UBIGINT AS file_index, 0::BIGINT AS file_row_number LIMIT 0"
    for table in segments.TABLES:
        segs = getattr(state, table)
        con.execute(f"CREATE TABLE _deleted_{table} AS {segments.deletes_sql(store, segs) or none}")
        if not segs:  # no segment yet: an empty table of the same columns
            schema, extra = extras[table]
            con.register("empty", typed_empty(schema))
            con.execute(f"CREATE TABLE _empty_{table} AS SELECT *, {extra} FROM empty")
            con.unregister("empty")
    for view, (table, columns) in views.items():
        sql = segments.relation_sql(store, getattr(state, table), f"_deleted_{table}", columns)
        con.execute(f"CREATE VIEW {view} AS {sql or f'SELECT {columns} FROM _empty_{table}'}")
    # the refresh worked out over which span of time each version is the one as of then: an
    # episode's one version (its current row's _from/_to), the others' (asof): a filter, no window
    con.execute(
        f"""
        CREATE MACRO episodes_as_of(ts) AS TABLE
        SELECT * EXCLUDE ({hidden}) FROM _current
        WHERE _from <= ts::TIMESTAMPTZ AND coalesce(_to > ts::TIMESTAMPTZ, true)
        UNION ALL BY NAME
        SELECT * EXCLUDE (_ingest_id, _identity_hash, _from, _to) FROM _asof
        WHERE _from <= ts::TIMESTAMPTZ AND coalesce(_to > ts::TIMESTAMPTZ, true)
        """
    )


def _snapshots_table(con: duckdb.DuckDBPyConnection, backup: Location | None) -> None:
    frame = snapshots_frame(backup) if backup else pl.DataFrame(schema=SNAPSHOTS_SCHEMA)
    con.register("snapshot_rows", frame)
    con.execute("CREATE TABLE snapshots AS SELECT * FROM snapshot_rows")
    con.unregister("snapshot_rows")


#: What an analyst's session should run first: parse each Parquet footer once per session, not once
#: per query (a point query on ``episodes`` is 2-3x faster). A DuckDB setting is per session, so the
#: catalog file cannot carry it: ``connect`` runs it, and the command memport prints passes it on.
SESSION_SETUP = "SET parquet_metadata_cache = true"


def cli_command(catalog_path: str | Path) -> str:
    """The ``duckdb`` command line that opens the catalog as an analyst should (shell-quoted)."""
    return f"duckdb -readonly -cmd {shlex.quote(SESSION_SETUP)} {shlex.quote(str(catalog_path))}"


def connect(catalog_path: str | Path, *, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """Open the catalog the way an analyst should: read-only, with the store's filesystem."""
    path = catalog_file.readable(Path(catalog_path))
    if not path.exists():
        raise FileNotFoundError(
            f"no catalog at {path}; run `make run` (or materialize the episode_catalog asset)"
        )
    con = duckdb_connect(str(path), read_only=read_only)
    con.execute(SESSION_SETUP)
    (store_url,) = con.sql("SELECT store_url FROM catalog_info").fetchall()[0]
    Location.from_url(store_url).register_with(con)
    return con
