"""Segments of the current state: immutable sorted Parquet files with delete files, and the merge
one refresh runs over them (``pipelines.store.current`` decides what changed and commits).

A table of the state (``episodes``, ``history``, ``asof``) is a list of segments; a segment's
deleted rows are the row numbers in its delete file. :class:`Merge` replaces the state of the
episodes a refresh touches (their old rows marked deleted, their new state one new segment per
table) and compacts: a full size tier (``FANOUT`` segments, two in the smallest) or a segment with
``DIRTY`` of its rows deleted is merged into one sorted segment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import duckdb
import polars as pl

from connectors.kit.sql import quote_list, quote_literal
from connectors.schema import EPISODE_SCHEMA
from pipelines.store.episodes import CURRENT_ORDER, IDENTITY, EpisodeStore, new_ingest_id, typed_empty

LAYOUT = 1
DIR = "current"
TABLES = ("episodes", "history", "asof")
SORT = "tenant_id, scope, observed_at"
FANOUT = 8  # segments of one size tier merged into one of the next
BASE_ROWS = 4096  # the smallest tier
DIRTY = 0.25  # a segment with this share of rows deleted is rewritten
#: Rows per Parquet row group: one user's rows cost one small read, and the footer a query parses
#: stays small (measured at 1M episodes: 16k groups made footers the cost of a filtered count).
ROW_GROUP = 32_768
IN_LIST_MAX = 4096  # affected identities looked up by a literal IN list (pushed into the scan)


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


def segments_sql(
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
        parts.append(segments_sql(store, dirty, pos=False))
    return " UNION ALL ".join(parts) if parts else None


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


class Merge:
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
                hit = segments_sql(self.store, old, gone, pos=False, cols="_identity_hash")
                con.execute(f"INSERT INTO k SELECT DISTINCT _identity_hash FROM ({hit})")
            keys = [int(h) for (h,) in con.sql("SELECT DISTINCT h FROM k").fetchall()]
        where = (
            f"_identity_hash IN ({', '.join(map(str, keys))})"
            if len(keys) <= IN_LIST_MAX
            else ("_identity_hash IN (SELECT h FROM k)")
        )
        for hits, segs in (("hit_cur", self.state.episodes), ("hit_hist", self.state.history)):
            if segs and keys:
                con.execute(f"CREATE TEMP TABLE {hits} AS {segments_sql(self.store, segs, where, pos=True)}")
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
            hit = segments_sql(self.store, self.state.asof, where, pos=True, cols="_identity_hash")
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
                table, f"SELECT * FROM ({segments_sql(self.store, chosen, pos=False)}) ORDER BY {SORT}"
            )
            setattr(self.state, table, [s for s in segs if s not in chosen] + ([merged] if merged else []))
