"""Catalog benchmark: analyst queries on ``episodes``, ``episodes_as_of``, ``episode_log`` and
``rejects`` against plain DuckDB tables of the same rows, and the refresh after one new dump
against a full rebuild, at several store sizes.

``BENCH_SIZES`` (default ``1000000:2000,10000000:2000``) lists ``episodes:dumps`` pairs. Each store
is built once through the store's own commit API (``EpisodeStore.ingest`` with synthetic batches,
10% of every dump's records new versions of earlier episodes, 25 rejects a dump) and cached under
``.bench/``.
Targets: every query at most 3x the plain table; the median refresh after a 500-record dump at
most 10% of a full rebuild, and not growing with the store (largest / smallest size < 1.5x).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from connectors.base import Batch
from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA
from pipelines.store import current
from pipelines.store.catalog import build_catalog, connect
from pipelines.store.episodes import DumpInfo, EpisodeStore
from tests.bench._harness import BENCH_DIR, WORDS

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SYSTEMS = ["mem0", "zep", "letta", "openai"]
TYPES = ["message", "document", "observation", "decision"]
QUERIES = {
    "count": "SELECT count(*) FROM {t} WHERE scope = 'user:u-42'",
    "one user": "SELECT * FROM {t} WHERE scope = 'user:u-42' ORDER BY observed_at",
    "group by": "SELECT source_system, type, count(*) FROM {t} GROUP BY ALL ORDER BY ALL",
}
#: Queries on other views: name -> (view, SQL with {t} for the view or the plain table).
OTHER = {
    "log count": ("episode_log", "SELECT count(*) FROM {t} WHERE scope = 'user:u-42'"),
    "log by system": ("episode_log", "SELECT source_system, count(*) FROM {t} GROUP BY ALL ORDER BY ALL"),
    "rejects count": ("rejects", "SELECT count(*) FROM {t} WHERE reason = 'bad_value'"),
    "rejects by reason": ("rejects", "SELECT reason, count(*) FROM {t} GROUP BY ALL ORDER BY ALL"),
}
NAMES = (*QUERIES, "as of", *OTHER)
AS_OF = (
    "coalesce(valid_from <= TIMESTAMPTZ '2025-01-05', true) AND coalesce(valid_to > TIMESTAMPTZ "
    "'2025-01-05', true) AND coalesce(recorded_at, created_at, observed_at) <= TIMESTAMPTZ '2025-01-05' "
    "AND coalesce(superseded_at > TIMESTAMPTZ '2025-01-05', status = 'active')"
)
REFRESHES = 5


REASONS = ["bad_timestamp", "missing_field", "bad_value", "unknown_type"]
REJECTS = 25  # rejected records in every dump (beside its episodes)


def rejected(dump: int) -> pl.DataFrame:
    """The rejects of one dump: ``REJECTS`` records, their reason one of ``REASONS``."""
    r = pl.int_range(REJECTS, eager=True)
    return pl.DataFrame({"r": r}).select(
        tenant_id=pl.lit("bench"),
        source_system=pl.lit("mem0"),
        dump_uri=pl.lit(f"bench://dump-{dump:05d}.json"),
        dump_record=pl.col("r") + 1_000_000,
        reason=(pl.col("r") + dump).mod(len(REASONS)).replace_strict(dict(enumerate(REASONS))),
        detail=pl.format("record {} of dump {}", "r", pl.lit(dump)),
        raw=pl.lit('{"id": null}'),
        ingested_at=pl.lit(T0 + timedelta(days=30, seconds=dump)),
    )


def batch(ids: list[int], dump: int, users: int) -> Batch:
    n = len(ids)
    k = pl.Series("k", ids, dtype=pl.Int64)
    frame = pl.DataFrame({"k": k, "r": pl.int_range(n, eager=True)}).with_columns(
        source_id=pl.format("m-{}", "k"),
        scope=pl.format("user:u-{}", pl.col("k") % users),
        system=pl.col("k") % len(SYSTEMS),
        created=pl.lit(T0) + pl.duration(seconds=pl.col("k") % 86_400),
    )
    episodes = frame.select(
        episode_id=pl.format("ep_{}", pl.col("k").hash().cast(pl.String)),
        idempotency_key=pl.format("bench:{}", "source_id"),
        tenant_id=pl.lit("bench"),
        scope="scope",
        namespace=pl.lit(None, pl.String),
        type=pl.col("k").mod(len(TYPES)).replace_strict(dict(enumerate(TYPES)), return_dtype=pl.String),
        content=pl.format(
            "{} {} {} v{}",
            pl.lit(pl.Series(WORDS)).gather(pl.col("k") % len(WORDS)),
            "source_id",
            "scope",
            pl.lit(dump),
        ),
        role=pl.lit("user"),
        source_system=pl.col("system").replace_strict(dict(enumerate(SYSTEMS)), return_dtype=pl.String),
        source_id="source_id",
        source=pl.lit("sdk"),
        author=pl.lit(None, pl.String),
        channel=pl.lit(None, pl.String),
        user_id=pl.format("u-{}", pl.col("k") % users),
        agent_id=pl.lit(None, pl.String),
        session_id=pl.lit(None, pl.String),
        priority=pl.lit(None, pl.String),
        status=pl.lit("active"),
        categories=pl.lit(["bench"]),
        tags=pl.lit([], pl.List(pl.String)),
        metadata=pl.lit("{}"),
        observed_at="created",
        created_at="created",
        updated_at=pl.col("created") + pl.duration(hours=dump),
        valid_from=pl.lit(None, pl.Datetime("us", "UTC")),
        valid_to=pl.lit(None, pl.Datetime("us", "UTC")),
        recorded_at=pl.lit(None, pl.Datetime("us", "UTC")),
        superseded_at=pl.lit(None, pl.Datetime("us", "UTC")),
        content_sha256=pl.lit("0" * 64),
        dump_uri=pl.lit(f"bench://dump-{dump:05d}.json"),
        dump_record="r",
        ingested_at=pl.lit(T0 + timedelta(days=30, seconds=dump)),
    )
    rejects = rejected(dump).cast(REJECT_SCHEMA)  # type: ignore[arg-type]
    return Batch(episodes.cast(EPISODE_SCHEMA), rejects, n + rejects.height)  # type: ignore[arg-type]


def commit(store: EpisodeStore, digest_file: Path, name: str, ids: list[int], dump: int, users: int) -> None:
    info = DumpInfo(str(digest_file), "mem0", name, "bench", "bench", "user:{user_id}")
    store.ingest(info, [batch(ids, dump, users)], dump_fs=store.fs)


def build_store(root: Path, episodes: int, dumps: int) -> EpisodeStore:
    """A store of ``dumps`` dumps holding ``episodes`` distinct episodes (cached)."""
    store = EpisodeStore.from_url(str(root / "store"))
    done = root / "built-v2"  # v2: with rejects
    if done.exists():
        return store
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "digest.json").write_text("[]", encoding="utf-8")
    rng = random.Random(7)
    per, next_id, users = episodes // dumps, 0, max(episodes // 100, 1)
    started = time.perf_counter()
    for d in range(dumps):
        updates = per // 10 if next_id else 0
        fresh = list(range(next_id, next_id + per - updates))
        ids = fresh + rng.sample(range(next_id), updates)
        next_id += len(fresh)
        commit(store, root / "digest.json", f"dump-{d:05d}.json", ids, d + 1, users)
        if d % 250 == 0:
            print(
                f"  building {root.name}: dump {d}/{dumps}, {time.perf_counter() - started:.0f} s", flush=True
            )
    (root / "meta.txt").write_text(f"{next_id} {users}", encoding="utf-8")
    done.touch()
    return store


def best_pair(
    a: duckdb.DuckDBPyConnection, qa: str, b: duckdb.DuckDBPyConnection, qb: str, repeat: int = 11
) -> tuple[float, float]:
    """Best times of two queries, run alternately (the machine is shared: load hits both alike)."""
    ta, tb = [], []
    for _ in range(repeat):
        for con, sql, times in ((a, qa, ta), (b, qb, tb)):
            t = time.perf_counter()
            con.sql(sql).fetchall()
            times.append(time.perf_counter() - t)
    return min(ta), min(tb)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_size(episodes: int, dumps: int) -> dict[str, Any]:
    root = BENCH_DIR / f"catalog-{episodes}-{dumps}"
    store = build_store(root, episodes, dumps)
    catalog, plain = root / "episodes.duckdb", root / "plain.duckdb"
    full, summary = timed(lambda: build_catalog(store, catalog, rebuild=True))
    print(
        f"{episodes:,} episodes / {dumps:,} dumps: full rebuild {full:.2f} s ({summary.episodes:,} current)"
    )
    # refreshes: each after one new 500-record dump (50 of them new versions of older episodes)
    next_id, users = (int(x) for x in (root / "meta.txt").read_text(encoding="utf-8").split())
    rng, refresh = random.Random(11), []
    try:
        for r in range(REFRESHES):
            ids = list(range(next_id, next_id + 450)) + rng.sample(range(next_id), 50)
            next_id += 450
            commit(store, root / "digest.json", f"new-{r}.json", ids, dumps + 1 + r, users)
            refresh.append(timed(lambda: build_catalog(store, catalog))[0])
        results = {"full": full, "refresh": statistics.median(refresh), "refresh_max": max(refresh)}
        print(
            f"  refresh after one 500-record dump: median {results['refresh']:.3f} s, max "
            f"{results['refresh_max']:.3f} s = {results['refresh'] / full:.1%} of the full rebuild"
        )
        plain.unlink(missing_ok=True)  # the same rows as the catalog's, after the refreshes
        with duckdb.connect(str(plain), config={"memory_limit": "3GB"}) as con:
            con.execute("ATTACH ? AS cat (READ_ONLY)", [str(catalog)])
            for view in ("episodes", "episode_log", "rejects"):
                con.execute(f"CREATE TABLE {view} AS SELECT * FROM cat.{view}")
        queries = {name: (sql.format(t="episodes"),) * 2 for name, sql in QUERIES.items()}
        as_of = "SELECT type, count(*) FROM {t} GROUP BY ALL ORDER BY ALL"
        queries["as of"] = (
            as_of.format(t="episodes_as_of(TIMESTAMPTZ '2025-01-05')"),
            as_of.format(t=f"episodes WHERE {AS_OF}"),
        )
        queries |= {name: (sql.format(t=view),) * 2 for name, (view, sql) in OTHER.items()}
        with connect(catalog) as cat, duckdb.connect(str(plain), read_only=True) as tab:
            for name, (mine, theirs) in queries.items():
                if mine == theirs:  # the same query: the same answer
                    got, want = (
                        sorted(c.sql(q).fetchall(), key=repr) for c, q in ((cat, mine), (tab, theirs))
                    )
                    assert got == want, f"{name}: the catalog and the plain table disagree"
                a, b = best_pair(cat, mine, tab, theirs)
                results[name] = a / b
                print(f"  {name:17s} catalog {a * 1000:8.1f} ms   plain {b * 1000:8.1f} ms   {a / b:5.2f}x")
    finally:  # the cached store goes back to what it was
        for r in range(REFRESHES):
            for kind in ("episodes", "rejects", "imports"):
                shutil.rmtree(store.partition_dir(kind, "mem0", f"new-{r}.json"), ignore_errors=True)
        current.vacuum(store, grace=timedelta(0))
    return results


def main() -> int:
    sizes = [
        tuple(int(x) for x in s.split(":"))
        for s in os.environ.get("BENCH_SIZES", "1000000:2000,10000000:2000").split(",")
    ]
    results = {size: run_size(*size) for size in sizes}
    ok = True
    for (episodes, dumps), r in results.items():
        slow = {k: v for k, v in r.items() if k in NAMES and v > 3}
        share = r["refresh"] / r["full"]
        verdict = "PASS" if not slow and share <= 0.10 else "FAIL"
        ok &= verdict == "PASS"
        worst = max(v for k, v in r.items() if k in NAMES)
        print(
            f"{verdict} {episodes:,}/{dumps:,}: worst query {worst:.2f}x "
            f"(target 3x), refresh {share:.1%} of a full rebuild (target 10%)"
        )
    if len(results) > 1:
        small, large = results[min(results)], results[max(results)]
        growth = large["refresh"] / small["refresh"]
        verdict = "PASS" if growth < 1.5 else "FAIL"
        ok &= verdict == "PASS"
        print(
            f"{verdict} refresh growth from the smallest to the largest store: {growth:.2f}x (target < 1.5x)"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
