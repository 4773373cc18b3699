"""The materialized current state (``pipelines.store.current``): always what the window over every
version would say, refreshed from what changed only, safe for open sessions and against crashes."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

from connectors.errors import StoreError
from connectors.kit.sql import quote_list
from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA
from pipelines.store import current, segments
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import CURRENT_ORDER, IDENTITY, EpisodeStore, typed_empty
from pipelines.store.ingest import ingest_dump
from pipelines.store.locations import Location
from tests.conftest import put

COLUMNS = "tenant_id, source_system, source_id, episode_id, content, status, dump_uri, ingested_at"


def dump(
    ids: range, *, text: str = "fact", day: int = 1, deleted: tuple[int, ...] = (), bad: tuple[int, ...] = ()
) -> str:
    """A Mem0 dump of memories ``ids``; those in ``bad`` are rejected (a bad timestamp, no text)."""
    return json.dumps(
        [
            {
                "id": f"m-{i}",
                "memory": f"{text} {i}",
                "user_id": f"u{i % 3}",
                "created_at": "2025-01-01T00:00:00Z",
                "updated_at": f"2025-01-{day:02d}T00:00:{i % 60:02d}Z",
                **({"status": "deleted"} if i in deleted else {}),
                **({"created_at": "the day before"} if i in bad and i % 2 else {}),
                **({"memory": None} if i in bad and not i % 2 else {}),
                **({"expiration_date": f"2025-01-{day + 1:02d}"} if i % 7 == 6 else {}),
            }
            for i in ids
        ]
    )


def ingest(store: EpisodeStore, landing: Location, rel: str, body: str, tenant: str = "acme") -> None:
    put(landing, f"mem0/{rel}", body)
    ingest_dump(store, landing, "mem0", rel, tenant_id=tenant, force=True)


def log_from_imports(store: EpisodeStore, con: duckdb.DuckDBPyConnection) -> None:
    """The former definitions, independent of ``current/``: ``episode_log`` and ``rejects`` as every
    live import's data files (``ref_log``, ``ref_rejects``)."""
    live = store.live_manifests()  # (``con`` has the store's filesystem: ``catalog.connect``)
    for view, kind, schema in (
        ("ref_log", "episodes", EPISODE_SCHEMA),
        ("ref_rejects", "rejects", REJECT_SCHEMA),
    ):
        files = [store.location.uri(f["path"]) for m in live for f in m["files"][kind]]
        if files:
            source = f"read_parquet({quote_list(files)}, hive_partitioning = false)"
            con.execute(f"CREATE TEMP VIEW {view} AS SELECT * FROM {source}")
        else:
            con.register(f"{view}_empty", typed_empty(schema))
            con.execute(f"CREATE TEMP VIEW {view} AS SELECT * FROM {view}_empty")


def assert_matches_window(store: EpisodeStore, catalog: Path) -> int:
    """``episode_log`` and ``rejects`` hold exactly the live imports' rows; ``episodes`` and
    ``episodes_as_of`` equal the window over every live version."""
    build_catalog(store, catalog)
    with connect(catalog) as con:
        log_from_imports(store, con)
        for view, ref in (("episode_log", "ref_log"), ("rejects", "ref_rejects")):
            assert con.sql(f"DESCRIBE {view}").fetchall() == con.sql(f"DESCRIBE {ref}").fetchall()
            want_rows = Counter(map(repr, con.sql(f"SELECT * FROM {ref}").fetchall()))
            got_rows = Counter(map(repr, con.sql(f"SELECT * FROM {view}").fetchall()))
            assert got_rows == want_rows, (view, got_rows - want_rows, want_rows - got_rows)
        want = con.sql(
            f"SELECT {COLUMNS} FROM ref_log "
            f"QUALIFY row_number() OVER (PARTITION BY {IDENTITY} ORDER BY {CURRENT_ORDER}) = 1 ORDER BY ALL"
        ).fetchall()
        assert con.sql(f"SELECT {COLUMNS} FROM episodes ORDER BY ALL").fetchall() == want
        # between versions, at a version's own instants, at expiry, and at either end of time
        for ts in (
            "2025-01-01T12:00:00Z",
            "2025-01-02T00:00:30Z",
            "2025-01-02T00:00:12Z",
            "2025-01-01T00:00:00Z",
            "2025-01-03T00:00:00Z",
            "2025-01-04T00:00:00Z",
            "2030-01-01T00:00:00Z",
            "infinity",
            "-infinity",
        ):
            asof = con.sql(
                f"SELECT {COLUMNS} FROM ref_log WHERE coalesce(valid_from <= ?::TIMESTAMPTZ, true) "
                "AND coalesce(valid_to > ?::TIMESTAMPTZ, true) "
                "AND coalesce(recorded_at, created_at, observed_at) <= ?::TIMESTAMPTZ "
                "AND coalesce(superseded_at > ?::TIMESTAMPTZ, status = 'active') "
                f"QUALIFY row_number() OVER (PARTITION BY {IDENTITY} ORDER BY {CURRENT_ORDER}) = 1 "
                "ORDER BY ALL",
                params=[ts] * 4,
            ).fetchall()
            got = con.sql(f"SELECT {COLUMNS} FROM episodes_as_of(?) ORDER BY ALL", params=[ts]).fetchall()
            assert got == asof, ts
        return len(want)


def test_current_state_follows_new_versions_reimports_and_tenants(
    store: EpisodeStore, landing: Location, tmp_path: Path
) -> None:
    catalog = tmp_path / "c.duckdb"
    ingest(store, landing, "a.json", dump(range(10)))
    assert assert_matches_window(store, catalog) == 10
    ingest(store, landing, "b.json", dump(range(5, 15), text="newer", day=2, deleted=(7,)))
    assert assert_matches_window(store, catalog) == 15
    # a re-import of b without most of its records: a's versions become current again
    ingest(store, landing, "b.json", dump(range(12, 14), text="newest", day=3))
    assert assert_matches_window(store, catalog) == 12
    # the same dump name and ids in another tenant: two episodes each, neither hides the other
    ingest(store, landing, "a.json", dump(range(3), text="globex"), tenant="globex")
    assert assert_matches_window(store, catalog) == 15
    with connect(catalog) as con:
        rows = con.sql(
            "SELECT tenant_id, content FROM episodes WHERE source_id = 'm-1' ORDER BY 1"
        ).fetchall()
    assert rows == [("acme", "fact 1"), ("globex", "globex 1")]
    # a full rebuild from the log gives the same state
    assert current.refresh(store, rebuild=True).full
    assert assert_matches_window(store, catalog) == 15


def catalog_rows(catalog: Path) -> dict[str, list[Any]]:
    """Every row of every view an analyst reads (and ``episodes_as_of`` at a few times)."""
    with connect(catalog) as con:
        rows = {
            v: con.sql(f"SELECT * FROM {v} ORDER BY ALL").fetchall()
            for v in ("episodes", "episode_log", "rejects")
        }
        for ts in ("2025-01-01T12:00:00Z", "2025-01-03T00:00:30Z", "2030-01-01T00:00:00Z"):
            rows[ts] = con.sql("SELECT * FROM episodes_as_of(?) ORDER BY ALL", params=[ts]).fetchall()
    return rows


def test_incremental_refreshes_equal_a_full_rebuild(
    store: EpisodeStore, landing: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New versions, tombstones, rejects, re-imports that drop episodes and rejects, another tenant:
    after each refresh every view holds what the imports say, and at the end exactly what a full
    rebuild gives (compaction on: two segments of a tier are merged)."""
    monkeypatch.setattr(segments, "FANOUT", 2)
    steps = [
        ("a.json", dump(range(20), bad=(3, 4)), "acme"),
        ("b.json", dump(range(10, 30), text="b", day=2, deleted=(12,), bad=(25, 26)), "acme"),
        ("a.json", dump(range(5), text="a2", day=3, bad=(1,)), "acme"),  # a re-import drops 5..19
        ("c.json", dump(range(0, 40, 3), text="c", day=4, deleted=(9, 27)), "acme"),
        ("a.json", dump(range(8), text="globex", bad=(2,)), "globex"),
        ("b.json", dump(range(28, 31), text="b3", day=5), "acme"),  # b's tombstone and rejects go
    ]
    incremental = tmp_path / "inc.duckdb"
    for rel, body, tenant in steps:
        ingest(store, landing, rel, body, tenant)
        assert assert_matches_window(store, incremental) > 0
    got = catalog_rows(incremental)
    assert len(got["rejects"]) == 2 and len(got["episode_log"]) > len(got["episodes"])
    build_catalog(store, tmp_path / "full.duckdb", rebuild=True)
    assert catalog_rows(tmp_path / "full.duckdb") == got


def test_refreshes_find_episodes_in_segments_with_deletes_through_their_indexes(
    store: EpisodeStore, landing: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No compaction: each refresh looks the touched episodes up in segments that already have
    delete files (their index still names the deleted rows) and in the log's indexes."""
    monkeypatch.setattr(segments.Merge, "compact", lambda self: None)
    catalog = tmp_path / "c.duckdb"
    ingest(store, landing, "d0.json", dump(range(50)))
    assert assert_matches_window(store, catalog) == 50
    for n in range(1, 5):  # every dump updates episodes the earlier ones updated too
        ingest(store, landing, f"d{n}.json", dump(range(n * 5, 30 + n * 5), text=f"v{n}", day=n + 1))
        assert assert_matches_window(store, catalog) == 50
        state = current.load_state(store)
        assert state is not None
        indexed = [s for t in segments.INDEXED for s in getattr(state[0], t)]
        assert all(s.index for s in indexed) and any(s.deletes for s in state[0].episodes)
    build_catalog(store, tmp_path / "full.duckdb", rebuild=True)
    assert catalog_rows(tmp_path / "full.duckdb") == catalog_rows(catalog)


def test_refresh_reads_only_the_new_dump(
    store: EpisodeStore, landing: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "BASE_ROWS", 1)  # no compaction: only this refresh's own work
    for n in range(4):
        ingest(store, landing, f"d{n}.json", dump(range(n * 100, n * 100 + 100)))
    first = current.refresh(store)
    assert first.full and len(first.read) == 4
    ingest(store, landing, "new.json", dump(range(350, 360), text="update", day=5))
    files = {m["dump_key"]: m["files"]["episodes"] for m in store.live_manifests()}
    done = current.refresh(store)
    assert not done.full
    # the new dump's files, and those of d3 (the earlier versions of the 10 episodes it updates):
    # the large segments are searched on narrow columns only, never read whole
    assert done.read == [store.location.uri(f["path"]) for f in files["new.json"] + files["d3.json"]]
    # written: one current segment (the 10 episodes), one log segment (their 10 new versions),
    # their as-of spans, one delete file (d3's 10 rows that are no longer current), the imports
    # table, and the identity index of each new segment
    kinds = sorted(f.split("-")[0] for f in done.written)
    assert kinds == [
        "asof/idx",
        "asof/seg",
        "episodes/del",
        "episodes/idx",
        "episodes/seg",
        "imports",
        "log/idx",
        "log/seg",
    ], done.written
    segs = {s.file: s.rows for s in done.state.segments()}
    assert [segs[f] for f in done.written if f.startswith(("episodes/seg", "log/seg"))] == [10, 10]
    assert current.refresh(store).written == []  # nothing new: nothing read or written
    assert assert_matches_window(store, tmp_path / "c.duckdb") == 400


def test_compaction_keeps_few_segments(
    store: EpisodeStore, landing: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "FANOUT", 3)
    catalog = tmp_path / "c.duckdb"
    for n in range(10):
        ingest(store, landing, f"d{n}.json", dump(range(n * 10, n * 10 + 20), day=n + 1))
        build_catalog(store, catalog)
    loaded = current.load_state(store)
    assert loaded is not None
    assert len(loaded[0].episodes) < 6
    assert assert_matches_window(store, catalog) == 110


def test_open_session_keeps_reading_during_refresh(
    store: EpisodeStore, landing: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "FANOUT", 2)
    catalog = tmp_path / "c.duckdb"
    ingest(store, landing, "a.json", dump(range(50)))
    build_catalog(store, catalog)
    with connect(catalog) as analyst:
        before = analyst.sql("SELECT count(*), max(content) FROM episodes").fetchall()
        for n in range(3):  # new segments, deletes, compactions rewrite what the session reads
            ingest(store, landing, f"b{n}.json", dump(range(40, 60), text=f"v{n}", day=n + 2))
            build_catalog(store, catalog)
        assert analyst.sql("SELECT count(*), max(content) FROM episodes").fetchall() == before
    with connect(catalog) as fresh:
        assert fresh.sql("SELECT count(*) FROM episodes").fetchall() == [(60,)]


@pytest.mark.parametrize("where", ["apply", "compact", "_commit"])
def test_crash_during_refresh_leaves_a_valid_state(
    store: EpisodeStore, landing: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    catalog = tmp_path / "c.duckdb"
    ingest(store, landing, "a.json", dump(range(30)))
    assert assert_matches_window(store, catalog) == 30
    ingest(store, landing, "b.json", dump(range(20, 40), text="b", day=2))
    owner: Any = current if where == "_commit" else segments.Merge

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt(f"killed in {where}")

    with monkeypatch.context() as m:
        m.setattr(owner, where, crash)
        with pytest.raises(KeyboardInterrupt):
            build_catalog(store, catalog)
    with connect(catalog) as con:  # the installed catalog still reads the old state
        assert con.sql("SELECT count(*) FROM episodes").fetchall() == [(30,)]
    loaded = current.load_state(store)
    assert loaded is not None and set(loaded[1].filter("live")["dump"]) == {"a.json"}
    assert assert_matches_window(store, catalog) == 40  # the next refresh picks b up


def polars_current(store_root: Path) -> pl.DataFrame:
    """The README's recipe: the current episodes from the store alone, with Polars."""
    root = store_root / "current"
    state = json.loads(sorted(root.glob("_state/*.json"))[-1].read_text(encoding="utf-8"))
    parts = []
    for seg in state["episodes"]:
        frame = pl.scan_parquet(root / seg["file"]).with_row_index("_row")
        if seg["deletes"]:
            frame = frame.join(
                pl.scan_parquet(root / seg["deletes"]), left_on="_row", right_on="row", how="anti"
            )
        parts.append(frame.drop("_row"))
    return pl.concat(parts).select(pl.exclude("^_.*$")).collect()


def test_polars_reads_the_current_episodes_from_the_store(tmp_path: Path) -> None:
    store, landing = EpisodeStore.from_url(str(tmp_path / "store")), Location.from_url(str(tmp_path / "in"))
    ingest(store, landing, "a.json", dump(range(30)))
    ingest(store, landing, "b.json", dump(range(20, 40), text="b", day=2))
    build_catalog(store, tmp_path / "c.duckdb")
    ingest(store, landing, "c.json", dump(range(35, 45), text="c", day=3))
    build_catalog(store, tmp_path / "c.duckdb")
    with connect(tmp_path / "c.duckdb") as con:
        want = con.sql("SELECT source_id, content FROM episodes ORDER BY ALL").pl()
    got = polars_current(tmp_path / "store").select("source_id", "content").sort(pl.all())
    assert got.equals(want)


def test_vacuum_removes_only_what_the_state_no_longer_names(
    store: EpisodeStore, landing: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segments, "FANOUT", 2)
    catalog = tmp_path / "c.duckdb"
    for n in range(4):
        ingest(store, landing, f"d{n}.json", dump(range(n * 5, n * 5 + 10), day=n + 1))
        build_catalog(store, catalog)
    assert current.vacuum(store, grace=timedelta(hours=1)) == []  # all young: kept for open sessions
    removed = current.vacuum(store, grace=timedelta(0))
    loaded = current.load_state(store)
    assert removed and loaded is not None
    named = {loaded[0].imports} | {f for s in loaded[0].segments() for f in s.files()}
    assert not {r.split("/current/", 1)[1] for r in removed} & named
    assert any("/idx-" in r for r in removed)  # the indexes of merged segments go with them
    base = store.location.path(current.DIR)
    on_disk = {p[len(base) + 1 :] for p in store.fs.find(base) if "/_state/" not in p}
    assert on_disk == named  # and nothing the state names is gone
    assert assert_matches_window(store, catalog) == 25


def test_two_refreshes_at_once_one_commits(
    store: EpisodeStore, landing: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(store, landing, "a.json", dump(range(10)))
    current.refresh(store)
    ingest(store, landing, "b.json", dump(range(5, 15), day=2))
    compact = segments.Merge.compact

    def racing(self: object) -> None:  # another run's refresh commits while this one works
        monkeypatch.setattr(segments.Merge, "compact", compact)
        current.refresh(store)

    monkeypatch.setattr(segments.Merge, "compact", racing)
    with pytest.raises(StoreError, match="another refresh committed generation"):
        current.refresh(store)
    assert assert_matches_window(store, tmp_path / "c.duckdb") == 15


def test_a_killed_refresh_leaves_no_state_file_behind(tmp_path: Path) -> None:
    """A refresh killed between writing its state file and committing it leaves ``<gen>.json.tmp-…``;
    once a refresh commits that generation (or a later one), the leftover can never commit: removed."""
    store, landing = EpisodeStore.from_url(str(tmp_path / "store")), Location.from_url(str(tmp_path / "in"))
    ingest(store, landing, "a.json", dump(range(10)))
    state_dir = tmp_path / "store" / "current" / "_state"
    state_dir.mkdir(parents=True)
    dead = state_dir / "000000000001.json.tmp-20250101T000000000000Z-deadbeef"
    dead.write_text("{", encoding="utf-8")
    later = state_dir / "000000000009.json.tmp-20250101T000000000000Z-0a0a0a0a"  # a generation to come
    later.write_text("{", encoding="utf-8")
    current.refresh(store)
    assert not dead.exists()
    assert later.exists()


def test_own_span_is_the_as_of_predicate() -> None:
    """For an episode with one version, ``_from <= ts AND coalesce(_to > ts, true)`` (its current
    row's span, ``segments.OWN_SPAN``) is the as-of predicate on its own times, at every instant and
    for every combination of missing times and statuses."""
    con = duckdb.connect()
    times = "[NULL, '2025-01-01', '2025-01-02', '2025-01-03']::TIMESTAMPTZ[]"
    cols = ("valid_from", "valid_to", "recorded_at", "created_at", "observed_at", "superseded_at")
    con.execute(
        "CREATE TABLE ranked AS SELECT row_number() OVER () AS id, 1 AS _nv, * FROM "
        + ", ".join(f"unnest({times}) AS t{i}({c})" for i, c in enumerate(cols))
        + ", unnest(['active', 'superseded', 'deleted', NULL]) AS s(status)"
    )
    con.execute(f"CREATE TABLE spans AS SELECT id, {segments.OWN_SPAN} FROM ranked")
    for ts in (
        "-infinity",
        "2024-12-31",
        "2025-01-01",
        "2025-01-01 12:00",
        "2025-01-02",
        "2025-01-04",
        "infinity",
    ):
        want = con.sql(
            "SELECT id FROM ranked WHERE coalesce(valid_from <= $ts::TIMESTAMPTZ, true) "
            "AND coalesce(valid_to > $ts::TIMESTAMPTZ, true) "
            "AND coalesce(recorded_at, created_at, observed_at) <= $ts::TIMESTAMPTZ "
            "AND coalesce(superseded_at > $ts::TIMESTAMPTZ, status = 'active') ORDER BY id",
            params={"ts": ts},
        ).fetchall()
        got = con.sql(
            "SELECT id FROM spans WHERE _from <= $ts::TIMESTAMPTZ AND coalesce(_to > $ts::TIMESTAMPTZ, true) "
            "ORDER BY id",
            params={"ts": ts},
        ).fetchall()
        assert got == want and (want or ts in ("-infinity", "2024-12-31")), ts


def test_log_and_rejects_read_a_few_segments_not_every_import(
    store: EpisodeStore, landing: Location, tmp_path: Path
) -> None:
    """``episode_log`` and ``rejects`` read the materialized segments (merged in tiers), never the
    live imports' files: 9 dumps, a handful of files."""
    catalog = tmp_path / "c.duckdb"
    for n in range(9):
        ingest(store, landing, f"d{n}.json", dump(range(n * 5, n * 5 + 10), day=n + 1, bad=(n * 5,)))
        build_catalog(store, catalog)
    with connect(catalog) as con:
        for view in ("episode_log", "rejects", "episodes", "_current", "_asof"):
            views = con.sql("SELECT sql FROM duckdb_views() WHERE view_name = ?", params=[view])
            (sql,) = views.fetchall()[0]
            assert "source_system=" not in sql and "/current/" in sql, view
            assert sql.count(".parquet") <= 4, (view, sql.count(".parquet"))
        (rejected,) = con.sql("SELECT count(*) FROM rejects").fetchall()[0]
        assert rejected >= 9  # one bad record a dump at least (exactly what the imports say: below)
    assert assert_matches_window(store, catalog) == 49  # m-0 only ever rejected


def test_deletes_land_on_their_own_segment_whatever_the_order_of_the_state(
    store: EpisodeStore, landing: Location, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view names a deleted row by its segment's place in the view's file list (``file_index``)
    and its row number: several segments with deletes, listed in the state in an order that is
    not their files' name order, still give exactly the current versions."""
    monkeypatch.setattr(segments, "BASE_ROWS", 1)  # no tier merge: one segment per refresh
    catalog = tmp_path / "c.duckdb"
    ingest(store, landing, "a.json", dump(range(40)))
    build_catalog(store, catalog)
    ingest(store, landing, "b.json", dump(range(36, 76), text="b", day=2))  # 4 of a's 40 replaced
    build_catalog(store, catalog)
    ingest(store, landing, "c.json", dump(range(70, 90), text="c", day=3))  # 6 of b's 40 replaced
    build_catalog(store, catalog)
    loc = store.location
    path = sorted(loc.fs.glob(loc.path(segments.DIR, "_state", "*.json")))[-1]
    state = json.loads(loc.fs.cat_file(path))
    assert sum(1 for s in state["episodes"] if s["deletes"]) >= 2, state["episodes"]
    for table in segments.TABLES:  # the newest segment first: no longer the files' name order
        state[table].reverse()
    loc.fs.pipe_file(path, json.dumps(state).encode())
    assert assert_matches_window(store, catalog) == 90  # the refresh has nothing new: same state
    with connect(catalog) as con:
        views = con.sql("SELECT sql FROM duckdb_views() WHERE view_name = 'episodes'").fetchall()
        assert views[0][0].index(state["episodes"][0]["file"]) < views[0][0].index(
            state["episodes"][-1]["file"]
        )
        got = dict(con.sql("SELECT source_id, content FROM episodes").fetchall())
    assert (got["m-35"], got["m-36"], got["m-69"], got["m-70"], got["m-89"]) == (
        "fact 35",
        "b 36",
        "b 69",
        "c 70",
        "c 89",
    )
