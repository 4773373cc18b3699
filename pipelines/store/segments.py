"""Segments of the current state: immutable sorted Parquet files with delete files, and the merge
one refresh runs over them (``pipelines.store.current`` decides what changed and commits).

A table of the state (``episodes``, ``log``, ``asof``, ``rejects``) is a list of segments; a
segment's deleted rows are the row numbers in its delete file. :class:`Merge` replaces the state of
the episodes a refresh touches (their old rows marked deleted, their new state one new segment per
table), appends the versions and rejects of the imports that became live to ``log`` and
``rejects`` (and deletes those of the imports replaced: the only deletes there), and compacts: a
full size tier (``FANOUT`` segments, two in the smallest) or a segment with ``DIRTY`` of its rows
deleted is merged into one sorted segment.

Finding what a refresh touches costs what changed, not the store: each segment of an ``INDEXED``
table has an identity index (``identity_index``, written with it), in which the touched identities
are looked up (a few blocks read per key: where they are in ``episodes`` and ``asof``, and in
``log`` which imports hold their versions), and the full rows of the touched episodes' versions are
read from the data files of those imports (a few small files), never from the large segments,
whose row groups would be decoded whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import duckdb
import polars as pl

from connectors.kit.sql import quote_identifier, quote_list, quote_literal
from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA
from pipelines.store import identity_index
from pipelines.store.episodes import CURRENT_ORDER, IDENTITY, EpisodeStore, new_ingest_id, typed_empty

#: 2: rejects and the log (every live version) materialized; current rows carry ``_holders`` and
#: their as-of span; versions of touched episodes read from their imports' files
#: 3: each segment of ``episodes``, ``log`` and ``asof`` has an identity index (``identity_index``)
#: 4: 128k-row groups in 64 KB pages (``ROW_GROUP``, ``PAGE_BYTES``)
LAYOUT = 4
DIR = "current"
TABLES = ("episodes", "log", "asof", "rejects")
INDEXED = ("episodes", "log", "asof")  # the tables whose rows carry ``_identity_hash``
SORT = "tenant_id, scope, observed_at"
#: Rejects are read by reason (``WHERE reason = …``, ``GROUP BY reason``) and by dump.
REJECT_SORT = "tenant_id, reason, source_system, dump_uri, dump_record"
SORTS = {"episodes": SORT, "log": SORT, "asof": SORT, "rejects": REJECT_SORT}
FANOUT = 8  # segments of one size tier merged into one of the next
BASE_ROWS = 4096  # the smallest tier
DIRTY = 0.25  # a segment with this share of rows deleted is rewritten
#: Rows per Parquet row group, and the bytes per data page: few row groups, small pages. DuckDB's
#: Parquet scan pays a fixed cost per row group and per projected column of it, pruned or not, and
#: skips a page it does not need without decompressing it; so a point query (one user's episodes, a
#: filtered count) costs the number of row groups plus the few pages that hold its rows. Measured on
#: the 10M-episode catalog (``tests/bench/catalog_bench``): 32k-row groups, one page each: count
#: 3.8 ms, one user 9.4 ms; 128k-row groups in 64 KB pages: 2.9 ms and 7.7 ms (plain table: 1.3 ms
#: and 3.6 ms); bigger groups with whole pages made the one-user query slower (20 ms at 128k).
ROW_GROUP = 131_072
PAGE_BYTES = 65_536


@dataclass
class Segment:
    file: str
    rows: int
    deletes: str | None = None
    deleted: int = 0
    #: the identity index (``identity_index``) of a segment of an ``INDEXED`` table
    index: str | None = None

    def files(self) -> list[str]:
        return [f for f in (self.file, self.deletes, self.index) if f]

    @property
    def live(self) -> int:
        return self.rows - self.deleted


@dataclass
class State:
    gen: int
    imports: str
    episodes: list[Segment] = field(default_factory=list)
    log: list[Segment] = field(default_factory=list)
    asof: list[Segment] = field(default_factory=list)
    rejects: list[Segment] = field(default_factory=list)
    duckdb: str = duckdb.__version__
    layout: int = LAYOUT

    def segments(self) -> list[Segment]:
        return self.episodes + self.log + self.asof + self.rejects


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


def segment_uri(store: EpisodeStore, rel: str) -> str:
    """How a view names the file at ``rel`` under ``current/`` (as ``read_parquet``'s ``filename``)."""
    return store.location.uri(store.location.path(DIR, rel))


def relation_sql(
    store: EpisodeStore, segments: list[Segment], deleted: str, columns: str = "*"
) -> str | None:
    """SQL for ``columns`` of the live rows of a table's segments: one scan of all of them, minus the
    rows in the table ``deleted`` (``file_index`` in this list of segments, ``file_row_number``, as
    :func:`deletes_sql` gives them) by one anti-join on two integers (None: no segments).

    ``file_index`` and ``file_row_number`` are ``read_parquet``'s virtual columns: the scan adds
    nothing to ``*``, so the view needs no ``EXCLUDE`` of them. Measured on the 10M-episode catalog:
    a filtered count 3.4 ms against 3.9 ms joining on (``filename``, ``file_row_number``) through a
    second view (one native table of every table's deletes); 1.3 ms on a plain table.
    """
    if not segments:
        return None
    scan = f"read_parquet({quote_list(segment_uri(store, s.file) for s in segments)})"
    if not any(s.deletes for s in segments):
        return f"SELECT {columns} FROM {scan}"
    anti = f"ANTI JOIN {quote_identifier(deleted)} USING (file_index, file_row_number)"
    return f"SELECT {columns} FROM {scan} {anti}"


def deletes_sql(store: EpisodeStore, segments: list[Segment]) -> str | None:
    """The delete positions of ``segments`` as (``file_index``: the segment's place in the list,
    ``file_row_number``), for :func:`relation_sql` over the same list; None if there are none."""
    parts = [
        f"SELECT {i}::UBIGINT AS file_index, row::BIGINT AS file_row_number "
        f"FROM read_parquet({quote_literal(segment_uri(store, s.deletes))})"
        for i, s in enumerate(segments)
        if s.deletes
    ]
    return " UNION ALL ".join(parts) if parts else None


#: For an episode with one version, the span of time over which ``episodes_as_of`` gives it, from
#: the as-of predicate on its own times: known (``recorded_at``, else ``created_at``, else
#: ``observed_at``) and valid from ``_from`` (NULL: never), until ``_to`` (exclusive; NULL: for ever)
#: where it stops being valid, is superseded, or at once if it is neither active nor superseded.
#: ``episodes_as_of(ts)`` is then ``_from <= ts AND coalesce(_to > ts, true)``: two columns, a
#: filter the Parquet scan evaluates, not the predicate over five. (NULL for several versions:
#: their spans are in ``asof``.) DuckDB's ``greatest``/``least`` skip NULLs.
OWN_SPAN = """
CASE WHEN _nv = 1 AND coalesce(recorded_at, created_at, observed_at) IS NOT NULL
  THEN greatest(coalesce(recorded_at, created_at, observed_at), valid_from) END AS _from,
CASE WHEN _nv = 1 THEN least(valid_to, CASE WHEN superseded_at IS NOT NULL THEN superseded_at
  WHEN status = 'active' THEN NULL ELSE '-infinity'::TIMESTAMPTZ END) END AS _to"""

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
            state.gen,
            state.imports,
            list(state.episodes),
            list(state.log),
            list(state.asof),
            list(state.rejects),
        )

    def _uri(self, rel: str) -> str:
        return self.store.location.uri(self.store.location.path(DIR, rel))

    def _write(self, table: str, select: str, kind: str = "seg") -> Segment | None:
        rel = f"{table}/{kind}-{new_ingest_id()}.parquet"
        if self.store.location.is_local:
            self.store.fs.makedirs(self.store.location.path(DIR, table), exist_ok=True)
        (rows,) = self.con.execute(
            f"COPY ({select}) TO {quote_literal(self._uri(rel))} "
            f"(FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE {ROW_GROUP}, "
            f"DATA_PAGE_SIZE_LIMIT {PAGE_BYTES})"
        ).fetchall()[0]
        if not rows:  # nothing to keep: no empty segment in the state
            self.store.fs.rm(self.store.location.path(DIR, rel))
            return None
        self.written.append(rel)
        if kind != "seg" or table not in INDEXED:
            return Segment(rel, int(rows))
        index = f"{table}/idx-{rel.split('-', 1)[1].rsplit('.', 1)[0]}.bin"
        with self.store.fs.open(self.store.location.path(DIR, index), "wb") as f:
            f.write(identity_index.build(self.con, self._uri(rel)))
        self.written.append(index)
        return Segment(rel, int(rows), index=index)

    def _lookup(self, name: str, segments: list[Segment], keys: list[int]) -> None:
        """The table ``name`` of the live rows of ``segments`` whose identity hash is in ``keys``
        (``_identity_hash``, ``_ingest_id``, ``_seg``, ``_row``), found through their indexes."""
        loc, rows, hit = self.store.location, [], set()
        for s in segments:
            if s.index is None:
                raise AssertionError(f"segment {s.file} has no identity index")
            hits = identity_index.lookup(self.store.fs, loc.path(DIR, s.index), keys)
            rows += [(h, i, s.file, r) for h, r, i in hits]
            hit |= {s.file} if hits else set()
        frame = pl.DataFrame(
            rows,
            schema={
                "_identity_hash": pl.UInt64,
                "_ingest_id": pl.String,
                "_seg": pl.String,
                "_row": pl.Int64,
            },
            orient="row",
        )
        self.con.register(f"{name}_rows", frame)
        self.con.execute(
            f"CREATE TEMP TABLE {quote_identifier(name)} AS SELECT * FROM {quote_identifier(name + '_rows')}"
        )
        self.con.unregister(f"{name}_rows")
        for s in segments:  # the index names every row: drop those deleted since it was written
            if s.deletes and s.file in hit:
                self.con.execute(
                    f"DELETE FROM {quote_identifier(name)} WHERE _seg = ? AND _row IN "
                    f"(SELECT row FROM read_parquet({quote_literal(self._uri(s.deletes))}))",
                    [s.file],
                )

    def _files_table(self, name: str, files: list[tuple[str, str]], schema: pl.Schema) -> str:
        """SQL reading ``files`` ((uri, ingest id) pairs) with their ingest id as ``_ingest_id``."""
        if not files:
            self.con.register(f"{name}_empty", typed_empty(schema))
            return f"SELECT *, ''::VARCHAR AS _ingest_id FROM {quote_identifier(name + '_empty')} LIMIT 0"
        self.con.register(name, pl.DataFrame(files, schema=["filename", "_ingest_id"], orient="row"))
        return (
            f"SELECT e.* EXCLUDE (filename), a._ingest_id FROM read_parquet("
            f"{quote_list([f for f, _ in files])}, filename = true, hive_partitioning = false) e "
            f"JOIN {quote_identifier(name)} a USING (filename)"
        )

    def apply(self, added: pl.DataFrame, removed: list[str], imports: pl.DataFrame) -> list[str]:
        """Replace the state of every episode the added and removed imports touch (``imports``: the
        imports table, where the data files of the imports holding their older versions are)."""
        con, loc = self.con, self.store.location

        def files_of(frame: pl.DataFrame, column: str = "_episode_paths") -> list[tuple[str, str]]:
            return [
                (loc.uri(loc.path(f)), ingest)
                for ingest, paths in frame.select("ingest_id", column).iter_rows()
                for f in paths
            ]

        files = files_of(added)
        fresh = self._files_table("added_files", files, EPISODE_SCHEMA)
        fresh = f"SELECT *, hash({IDENTITY}) AS _identity_hash FROM ({fresh})"
        old = self.state.episodes
        # a full build reads the new files once, straight into the window (nothing to look up)
        con.execute(f"CREATE TEMP {'TABLE' if old else 'VIEW'} fresh AS {fresh}")
        gone = f"_ingest_id IN ({', '.join(quote_literal(r) for r in removed)})" if removed else None
        versions, older = "SELECT * FROM fresh LIMIT 0", []
        touched = "_identity_hash IN (SELECT h FROM k)"
        if old:
            con.execute("CREATE TEMP TABLE k AS SELECT DISTINCT _identity_hash AS h FROM fresh")
            if gone and self.state.log:  # the versions of replaced imports: where, and whose
                hit = segments_sql(self.store, self.state.log, gone, pos=True, cols="_identity_hash")
                con.execute(f"CREATE TEMP TABLE hit_log AS {hit}")
                con.execute("INSERT INTO k SELECT DISTINCT _identity_hash FROM hit_log")
            # where the touched episodes are, and which imports hold their versions (the log holds
            # every live version): through the segments' identity indexes, at the cost of the keys
            keys = [h for (h,) in con.sql("SELECT h FROM k").fetchall()]
            self._lookup("hit_cur", self.state.episodes, keys)
            self._lookup("hit_asof", self.state.asof, keys)
            self._lookup("hit_held", self.state.log, keys)
            found = con.sql("SELECT DISTINCT _ingest_id FROM hit_held").fetchall()
            holders = {i for (i,) in found} - set(removed) - set(added["ingest_id"])
            older = files_of(imports.filter(pl.col("ingest_id").is_in(list(holders))))
            versions = (
                f"SELECT * FROM (SELECT *, hash({IDENTITY}) AS _identity_hash FROM "
                f"({self._files_table('older_files', older, EPISODE_SCHEMA)})) WHERE {touched}"
            )
        con.execute(
            f"""CREATE TEMP TABLE ranked AS
            SELECT *, row_number() OVER w AS _rn, count(*) OVER (PARTITION BY {IDENTITY}) AS _nv FROM (
              ({versions}) UNION ALL BY NAME (SELECT * FROM fresh))
            WINDOW w AS (PARTITION BY {IDENTITY} ORDER BY {CURRENT_ORDER})"""
        )
        cur = self._write(
            "episodes",
            f"""SELECT r.* EXCLUDE (_rn, _nv), _nv::INTEGER AS _versions, h._holders, {OWN_SPAN}
            FROM ranked r LEFT JOIN (SELECT {IDENTITY}, string_agg(DISTINCT _ingest_id, ',') AS _holders
              FROM ranked WHERE _nv > 1 GROUP BY ALL) h USING ({IDENTITY})
            WHERE _rn = 1 ORDER BY {SORT}""",
        )
        spans = self._write("asof", ASOF_SPANS.format(identity=IDENTITY, sort=SORT))
        if old:
            self.state.asof = self._mark_deleted(self.state.asof, "hit_asof")
            self.state.episodes = self._mark_deleted(self.state.episodes, "hit_cur")
        self.state.asof += [spans] if spans else []
        self.state.episodes += [cur] if cur else []
        # the log and the rejects: the new imports' rows appended, the replaced imports' deleted
        self._append("log", "SELECT * FROM fresh", "hit_log" if gone and old and self.state.log else None)
        rejects = self._files_table("added_rejects", files_of(added, "_reject_paths"), REJECT_SCHEMA)
        if gone and self.state.rejects:
            hit = segments_sql(self.store, self.state.rejects, gone, pos=True, cols="_ingest_id")
            con.execute(f"CREATE TEMP TABLE hit_rejects AS {hit}")
        self._append("rejects", rejects, "hit_rejects" if gone and self.state.rejects else None)
        return [f for f, _ in files] + [f for f, _ in older]

    def _append(self, table: str, select: str, hits: str | None) -> None:
        """A new segment of ``table`` with the rows of ``select``; the rows in ``hits`` deleted."""
        seg = self._write(table, f"SELECT * FROM ({select}) ORDER BY {SORTS[table]}")
        segs: list[Segment] = getattr(self.state, table)
        segs = self._mark_deleted(segs, hits) if hits else segs
        setattr(self.state, table, segs + ([seg] if seg else []))

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
            out.append(replace(s, deletes=dels.file, deleted=dels.rows))
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
            rows = segments_sql(self.store, chosen, pos=False)
            merged = self._write(table, f"SELECT * FROM ({rows}) ORDER BY {SORTS[table]}")
            setattr(self.state, table, [s for s in segs if s not in chosen] + ([merged] if merged else []))
