"""The current state of the store, materialized and kept up to date at the cost of what changed.

Layout under ``<store>/current/`` (merge-on-read, as Iceberg's and DuckLake's delete files)::

    _state/<generation>.json           ← the commit: which segments, delete files, imports table
    episodes/seg-<tag>.parquet         the current version of each episode (+ bookkeeping columns)
    episodes/del-<tag>.parquet         row numbers of a segment that are no longer current
    history/seg-<tag>.parquet          every live version of the episodes that have more than one
    asof/seg-<tag>.parquet             for those episodes, which version is current over which span
    imports-<tag>.parquet              every import manifest, live or not (``imports_index``)

Segments are sorted by (tenant_id, scope, observed_at) and never modified. A refresh reads only
the import manifests committed since the last one, the data files of the imports that became live
and the rows of the episodes they touch (new versions, and versions of replaced imports), writes
those episodes' new state as one small segment and marks their old rows in delete files. Small
segments are merged in tiers (``FANOUT`` of a size into one of the next), and a segment with
many deleted rows is rewritten, so a query reads a few large sorted files whatever the number of
dumps. The state file is written last and atomically: a crash leaves the old state or the new.

Bookkeeping columns (``_identity_hash``: DuckDB's hash of the identity, which is why the state
records the DuckDB version and is rebuilt under another; ``_ingest_id``: the import the row came
from; ``_versions``: how many live versions the episode has; in history, ``_rank``: the version's
place in the order that picks the current one, 1 first) are left out of the catalog's views.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from connectors.errors import StoreError
from connectors.kit.sql import quote_list, quote_literal
from connectors.schema import EPISODE_SCHEMA
from pipelines.store import imports_index
from pipelines.store.episodes import (
    CURRENT_ORDER,
    IDENTITY,
    EpisodeStore,
    ingest_time,
    live_flags,
    new_ingest_id,
    typed_empty,
)

LAYOUT = 1
DIR = "current"
TABLES = ("episodes", "history", "asof")
HIDDEN = ("_ingest_id", "_identity_hash", "_versions")  # history has _rank instead of _versions
SORT = "tenant_id, scope, observed_at"
FANOUT = 8  # segments of one size tier merged into one of the next
BASE_ROWS = 4096  # the smallest tier
DIRTY = 0.25  # a segment with this share of rows deleted is rewritten
#: Rows per Parquet row group: one user's rows cost one small read, and the footer a query parses
#: stays small (measured at 1M episodes: 16k groups made footers the cost of a filtered count).
ROW_GROUP = 32_768
IN_LIST_MAX = 4096
MEMORY_LIMIT = "3GB"  # affected identities looked up by a literal IN list (pushed into the scan)


@dataclass
class Segment:
    file: str
    rows: int
    deletes: str | None = None
    deleted: int = 0

    @property
    def live(self) -> int:
        return self.rows - self.deleted


@dataclass
class State:
    gen: int
    imports: str
    episodes: list[Segment] = field(default_factory=list)
    history: list[Segment] = field(default_factory=list)
    asof: list[Segment] = field(default_factory=list)
    duckdb: str = duckdb.__version__
    layout: int = LAYOUT

    def segments(self) -> list[Segment]:
        return self.episodes + self.history + self.asof


@dataclass
class Refresh:
    """What a refresh did: the files it read from the log and wrote into ``current/``."""

    state: State
    imports: pl.DataFrame
    full: bool
    added: list[str]
    removed: list[str]
    read: list[str]
    written: list[str]


def _load_state(store: EpisodeStore) -> State | None:
    loc = store.location
    paths = sorted(loc.fs.glob(loc.path(DIR, "_state", "*.json")))
    if not paths:
        return None
    raw = json.loads(loc.fs.cat_file(paths[-1]))
    if raw.get("layout") != LAYOUT or raw.get("duckdb") != duckdb.__version__:
        return None  # _identity_hash is DuckDB's hash: another version may hash differently
    state = State(
        gen=raw["gen"],
        imports=raw["imports"],
        episodes=[Segment(**s) for s in raw["episodes"]],
        history=[Segment(**s) for s in raw["history"]],
        asof=[Segment(**s) for s in raw["asof"]],
    )
    files = [state.imports] + [f for s in state.segments() for f in (s.file, s.deletes) if f]
    return state if all(loc.fs.exists(loc.path(DIR, f)) for f in files) else None


def load_state(store: EpisodeStore) -> tuple[State, pl.DataFrame] | None:
    """The committed current state and its imports table, or None if there is none (or unusable)."""
    state = _load_state(store)
    if state is None:
        return None
    with store.fs.open(store.location.path(DIR, state.imports), "rb") as f:
        return state, pl.read_parquet(f)


def _segments_sql(
    store: EpisodeStore, segments: list[Segment], where: str = "true", *, pos: bool, cols: str = "*"
) -> str:
    """The live rows of ``segments`` (``pos``: with ``_seg`` and ``_row``, their position)."""
    cols = "* EXCLUDE (file_row_number)" if cols == "*" else cols
    uri = store.location.uri
    parts = []
    for s in segments:
        src = uri(store.location.path(DIR, s.file))
        extra = f", {quote_literal(s.file)} AS _seg, file_row_number AS _row" if pos else ""
        sql = (
            f"SELECT {cols}{extra} FROM read_parquet({quote_literal(src)}, "
            f"file_row_number = true) WHERE {where}"
        )
        if s.deletes:
            dels = uri(store.location.path(DIR, s.deletes))
            sql += f" AND file_row_number NOT IN (SELECT row FROM read_parquet({quote_literal(dels)}))"
        parts.append(sql)
    return " UNION ALL ".join(parts)


def relation_sql(store: EpisodeStore, segments: list[Segment]) -> str | None:
    """SQL for the live rows of a table's segments (those without deletes in one scan)."""
    clean = [store.location.uri(store.location.path(DIR, s.file)) for s in segments if not s.deletes]
    parts = [f"SELECT * FROM read_parquet({quote_list(clean)})"] if clean else []
    if dirty := [s for s in segments if s.deletes]:
        parts.append(_segments_sql(store, dirty, pos=False))
    return " UNION ALL ".join(parts) if parts else None


def _relist(store: EpisodeStore, imports: pl.DataFrame, new_paths: list[str]) -> pl.DataFrame:
    """The imports table with the manifests at ``new_paths`` added and every ``live`` flag recomputed
    in the partitions they touch (:func:`live_flags`)."""
    loc = store.location
    raw: dict[str, bytes] = loc.fs.cat([loc.path(p) for p in new_paths]) if new_paths else {}
    rows = [imports_index.import_row(p, json.loads(raw[loc.path(p)]), loc.root) for p in new_paths]
    table = pl.concat([imports, imports_index.frame(rows)]) if rows else imports
    touched = {p.rsplit("/", 1)[0] for p in new_paths}
    part = table.with_columns(_part=pl.col("_manifest").str.replace(r"/[^/]*$", ""))
    mine = part.filter(pl.col("_part").is_in(list(touched)))
    entries = [
        (m, {"tenant_id": t, "manifest_version": v})
        for m, t, v in mine.select("_manifest", "tenant_id", "_manifest_version").iter_rows()
    ]
    flags = dict(zip([m for m, _ in entries], live_flags(entries), strict=True))
    return table.with_columns(
        live=pl.col("_manifest").replace_strict(flags, default=pl.col("live"), return_dtype=pl.Boolean())
    ).sort("started_at", descending=True)


def refresh(store: EpisodeStore, *, rebuild: bool = False) -> Refresh:
    """Bring ``<store>/current/`` up to date with the committed imports; ``rebuild``: from scratch."""
    loc = store.location
    listing = _manifest_listing(store)
    loaded = None if rebuild else load_state(store)
    if loaded is not None and not set(loaded[1]["_manifest"]) <= set(listing):
        loaded = None  # a commit was removed (a restore): the state no longer follows from the log
    full = loaded is None
    if loaded is None:  # generations go on from the newest state file, usable or not
        states = loc.fs.glob(loc.path(DIR, "_state", "*.json"))
        last = max((int(p.rsplit("/", 1)[1].split(".")[0]) for p in states), default=0)
    state, imports = loaded or (State(gen=last, imports=""), imports_index.frame([]))
    known = set(imports["_manifest"])
    new_paths = [p for p in listing if p not in known]
    if not new_paths and not full:
        return Refresh(state, imports, False, [], [], [], [])
    was_live = set(imports.filter("live")["_manifest"])
    imports = _relist(store, imports, new_paths)
    now_live = set(imports.filter("live")["_manifest"])
    added = imports.filter(pl.col("_manifest").is_in(list(now_live - was_live)))
    removed = imports.filter(pl.col("_manifest").is_in(list(was_live - now_live)))
    with tempfile.TemporaryDirectory(prefix="memport-current-") as tmp:
        # bounded: a full rebuild sorts the whole store, spilling to ``tmp`` beyond the limit
        config: dict[str, str | bool | int | float | list[str]] = {
            "temp_directory": tmp,
            "preserve_insertion_order": False,
            "memory_limit": MEMORY_LIMIT,
        }
        con = duckdb.connect(config=config)
        try:
            loc.register_with(con)
            merge = _Merge(store, con, state)
            read = merge.apply(added, list(removed["ingest_id"]))
            merge.compact()
            state, written = merge.state, merge.written
        finally:
            con.close()
    tag = new_ingest_id()
    state.imports = f"imports-{tag}.parquet"
    if loc.is_local:
        loc.fs.makedirs(loc.path(DIR), exist_ok=True)
    with loc.fs.open(loc.path(DIR, state.imports), "wb") as f:
        imports.write_parquet(f)
    written.append(state.imports)
    state.gen += 1
    _commit(store, state)
    return Refresh(state, imports, full, list(added["ingest_id"]), list(removed["ingest_id"]), read, written)


def _manifest_listing(store: EpisodeStore) -> list[str]:
    """Every import manifest's path relative to the store (a listing; none is read)."""
    loc = store.location
    if not loc.is_local:
        return sorted(p[len(loc.root) + 1 :] for p in loc.fs.glob(loc.path("imports", "*", "*", "*.json")))
    found, base = [], Path(loc.path("imports"))
    for folder in base.glob("*/*") if base.is_dir() else []:  # os.scandir: 5x fsspec's glob
        with os.scandir(folder) as entries:
            found += [
                f"imports/{folder.parent.name}/{folder.name}/{e.name}"
                for e in entries
                if e.name.endswith(".json")
            ]
    return sorted(found)


def _commit(store: EpisodeStore, state: State) -> None:
    path = store.location.path(DIR, "_state", f"{state.gen:012d}.json")
    if store.fs.exists(path):
        raise StoreError(
            f"another refresh committed generation {state.gen} of {store.location.url()}/{DIR} at the "
            "same time; run the refresh again (it starts from the newer state)"
        )
    body = json.dumps({**asdict(state), "committed_at": datetime.now(UTC).isoformat()}, indent=1).encode()
    if not store.location.is_local:  # one PUT; two refreshes racing on one object store: last wins
        store.location.write_atomic(path, body)
        return
    tmp = f"{path}.tmp-{new_ingest_id()}"
    Path(tmp).parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic, and fails if a concurrent refresh committed this generation
    except FileExistsError:
        raise StoreError(
            f"another refresh committed generation {state.gen} of {store.location.url()}/{DIR} at the "
            "same time; run the refresh again (it starts from the newer state)"
        ) from None
    finally:
        Path(tmp).unlink()


#: For each episode with several versions, the spans of time over which each version is the one
#: ``episodes_as_of`` gives: the as-of predicate changes only at a version's own times, so it is
#: evaluated once at each of them and holds until the next (``_from`` inclusive, ``_to`` exclusive).
ASOF_SPANS = """
WITH multi AS (SELECT * EXCLUDE (_nv) FROM ranked WHERE _nv > 1),
points AS (
  SELECT DISTINCT {identity}, p FROM (
    SELECT {identity}, unnest([valid_from, valid_to, coalesce(recorded_at, created_at, observed_at),
                               superseded_at, '-infinity'::TIMESTAMPTZ]) AS p FROM multi)
  WHERE p IS NOT NULL),
spans AS (SELECT *, lead(p) OVER (PARTITION BY {identity} ORDER BY p) AS _to FROM points),
chosen AS (
  SELECT m.* EXCLUDE (_rn), s.p AS _from, s._to FROM spans s JOIN multi m USING ({identity})
  WHERE coalesce(m.valid_from <= s.p, true) AND coalesce(m.valid_to > s.p, true)
    AND coalesce(m.recorded_at, m.created_at, m.observed_at) <= s.p
    AND coalesce(m.superseded_at > s.p, m.status = 'active')
  QUALIFY row_number() OVER (PARTITION BY {identity}, s.p ORDER BY m._rn) = 1)
SELECT * FROM chosen ORDER BY {sort}, _from
"""


class _Merge:
    """One refresh's work on a DuckDB connection: new segments, delete files, compaction."""

    def __init__(self, store: EpisodeStore, con: duckdb.DuckDBPyConnection, state: State) -> None:
        self.store, self.con = store, con
        self.written: list[str] = []
        self.state = State(
            state.gen, state.imports, list(state.episodes), list(state.history), list(state.asof)
        )

    def _uri(self, rel: str) -> str:
        return self.store.location.uri(self.store.location.path(DIR, rel))

    def _write(self, table: str, select: str, kind: str = "seg") -> Segment | None:
        rel = f"{table}/{kind}-{new_ingest_id()}.parquet"
        if self.store.location.is_local:
            self.store.fs.makedirs(self.store.location.path(DIR, table), exist_ok=True)
        (rows,) = self.con.execute(
            f"COPY ({select}) TO {quote_literal(self._uri(rel))} "
            f"(FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE {ROW_GROUP})"
        ).fetchall()[0]
        if not rows:  # nothing to keep: no empty segment in the state
            self.store.fs.rm(self.store.location.path(DIR, rel))
            return None
        self.written.append(rel)
        return Segment(rel, int(rows))

    def apply(self, added: pl.DataFrame, removed: list[str]) -> list[str]:
        """Replace the state of every episode the added and removed imports touch."""
        con, loc = self.con, self.store.location
        files = [
            (loc.uri(loc.path(f)), ingest)
            for ingest, paths in added.select("ingest_id", "_episode_paths").iter_rows()
            for f in paths
        ]
        con.register("empty_episodes", typed_empty(EPISODE_SCHEMA))
        fresh = (
            "SELECT *, ''::VARCHAR AS _ingest_id, 0::UBIGINT AS _identity_hash FROM empty_episodes LIMIT 0"
        )
        if files:
            con.register("added_files", pl.DataFrame(files, schema=["filename", "_ingest_id"], orient="row"))
            fresh = (
                f"SELECT e.* EXCLUDE (filename), a._ingest_id, hash({IDENTITY}) AS _identity_hash "
                f"FROM read_parquet({quote_list([f for f, _ in files])}, filename = true, "
                "hive_partitioning = false) e JOIN added_files a USING (filename)"
            )
        old = self.state.episodes + self.state.history + self.state.asof
        # a full build reads the new files once, straight into the window (nothing to look up)
        con.execute(f"CREATE TEMP {'TABLE' if old else 'VIEW'} fresh AS {fresh}")
        keys: list[int] = []
        if old:
            con.execute("CREATE TEMP TABLE k AS SELECT DISTINCT _identity_hash AS h FROM fresh")
            if removed:
                gone = f"_ingest_id IN ({', '.join(quote_literal(r) for r in removed)})"
                hit = _segments_sql(self.store, old, gone, pos=False, cols="_identity_hash")
                con.execute(f"INSERT INTO k SELECT DISTINCT _identity_hash FROM ({hit})")
            keys = [int(h) for (h,) in con.sql("SELECT DISTINCT h FROM k").fetchall()]
        where = (
            f"_identity_hash IN ({', '.join(map(str, keys))})"
            if len(keys) <= IN_LIST_MAX
            else ("_identity_hash IN (SELECT h FROM k)")
        )
        for hits, segs in (("hit_cur", self.state.episodes), ("hit_hist", self.state.history)):
            if segs and keys:
                con.execute(f"CREATE TEMP TABLE {hits} AS {_segments_sql(self.store, segs, where, pos=True)}")
            else:
                src = "SELECT *, 1::INTEGER AS _" + ("versions" if hits == "hit_cur" else "rank")
                src += " FROM fresh"
                pos = "''::VARCHAR AS _seg, 0::BIGINT AS _row"
                con.execute(f"CREATE TEMP TABLE {hits} AS SELECT *, {pos} FROM ({src}) LIMIT 0")
        drop = f"_ingest_id NOT IN ({', '.join(quote_literal(r) for r in removed)})" if removed else "true"
        con.execute(
            f"""CREATE TEMP TABLE ranked AS
            SELECT *, row_number() OVER w AS _rn, count(*) OVER (PARTITION BY {IDENTITY}) AS _nv FROM (
              SELECT * EXCLUDE (_versions, _seg, _row) FROM hit_cur WHERE _versions = 1 AND {drop}
              UNION ALL BY NAME SELECT * EXCLUDE (_seg, _row, _rank) FROM hit_hist WHERE {drop}
              UNION ALL BY NAME SELECT * FROM fresh)
            WINDOW w AS (PARTITION BY {IDENTITY} ORDER BY {CURRENT_ORDER})"""
        )
        cur = self._write(
            "episodes",
            "SELECT * EXCLUDE (_rn, _nv), _nv::INTEGER AS _versions FROM ranked WHERE _rn = 1 "
            f"ORDER BY {SORT}",
        )
        hist = self._write(
            "history",
            f"SELECT * EXCLUDE (_rn, _nv), _rn::INTEGER AS _rank FROM ranked WHERE _nv > 1 ORDER BY {SORT}",
        )
        if self.state.asof and keys:
            hit = _segments_sql(self.store, self.state.asof, where, pos=True, cols="_identity_hash")
            con.execute(f"CREATE TEMP TABLE hit_asof AS {hit}")
        else:
            con.execute("CREATE TEMP TABLE hit_asof AS SELECT ''::VARCHAR AS _seg, 0::BIGINT AS _row LIMIT 0")
        spans = self._write("asof", ASOF_SPANS.format(identity=IDENTITY, sort=SORT))
        self.state.asof = self._mark_deleted(self.state.asof, "hit_asof") + ([spans] if spans else [])
        self.state.episodes = self._mark_deleted(self.state.episodes, "hit_cur") + ([cur] if cur else [])
        self.state.history = self._mark_deleted(self.state.history, "hit_hist") + ([hist] if hist else [])
        return [f for f, _ in files]

    def _mark_deleted(self, segments: list[Segment], hits: str) -> list[Segment]:
        out = []
        for s in segments:
            rows = f"SELECT _row AS row FROM {hits} WHERE _seg = {quote_literal(s.file)}"
            (n,) = self.con.sql(f"SELECT count(*) FROM ({rows})").fetchall()[0]
            if not n:
                out.append(s)
                continue
            if s.deletes:
                rows += f" UNION ALL SELECT row FROM read_parquet({quote_literal(self._uri(s.deletes))})"
            table = s.file.split("/", 1)[0]
            dels = self._write(table, rows, kind="del")
            assert dels is not None
            out.append(Segment(s.file, s.rows, dels.file, dels.rows))
        return out

    def compact(self) -> None:
        """Merge a full size tier (or dirty segments) of each table into one sorted segment."""
        for table in TABLES:
            segs: list[Segment] = getattr(self.state, table)
            tiers: dict[int, list[Segment]] = {}
            for s in segs:
                tiers.setdefault(
                    int(math.log(max(s.live, 1) / BASE_ROWS, FANOUT)) if s.live > BASE_ROWS else 0, []
                ).append(s)
            chosen = [s for s in segs if s.live == 0 or s.deleted > DIRTY * s.rows]
            for tier in sorted(tiers):
                # the smallest tier is merged as soon as it has two: cheap, and each file costs a
                # query its footer and a scan of its own
                if len(tiers[tier]) >= (2 if tier == 0 else FANOUT):
                    chosen += [s for s in tiers[tier] if s not in chosen]
                    break
            if not chosen:
                continue
            merged = self._write(
                table, f"SELECT * FROM ({_segments_sql(self.store, chosen, pos=False)}) ORDER BY {SORT}"
            )
            setattr(self.state, table, [s for s in segs if s not in chosen] + ([merged] if merged else []))


def vacuum(store: EpisodeStore, *, grace: timedelta, dry_run: bool = False) -> list[str]:
    """Delete files under ``current/`` the committed state no longer names, once older than
    ``grace`` (an analyst's open catalog may still read them), and superseded state files."""
    state = _load_state(store)
    loc = store.location
    keep = set()
    states = sorted(loc.fs.glob(loc.path(DIR, "_state", "*.json")))
    if state is not None:
        keep = {state.imports} | {f for s in state.segments() for f in (s.file, s.deletes) if f}
    cutoff = datetime.now(UTC) - grace
    doomed = []
    for path in _data_files(store):
        rel = path[len(loc.path(DIR)) + 1 :]
        name = rel.rsplit("/", 1)[-1]
        tag = name.split("-", 1)[1].rsplit(".", 1)[0].split(".tmp", 1)[0]
        if rel not in keep and ingest_time(tag) < cutoff:
            doomed.append(path)
    for path in states[:-1]:
        if datetime.fromtimestamp(loc.fs.modified(path).timestamp(), UTC) < cutoff:
            doomed.append(path)
    if doomed and not dry_run:
        loc.fs.rm(doomed)
    return doomed


def _data_files(store: EpisodeStore) -> Iterable[str]:
    loc = store.location
    for pattern in ("imports-*.parquet", *(f"{t}/*.parquet" for t in TABLES)):
        yield from loc.fs.glob(loc.path(DIR, pattern))


def describe(state: State) -> dict[str, Any]:
    return {
        "segments": len(state.segments()),
        "episodes": sum(s.live for s in state.episodes),
    }
