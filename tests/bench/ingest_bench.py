"""Ingest benchmark: memport's Mem0 ingest against the DuckDB floor, measured in the same run.

    make bench                     # N = 1,000,000, best of 3 interleaved runs each
    BENCH_N=200000 BENCH_REPEAT=5 make bench

Generates a Mem0 ``get_all`` dump (a bare JSON array, as the v1.0/v2 API returns it) of N records
with realistic text lengths (5-120 words), unicode, nested metadata and Pacific-offset timestamps,
plus one of N/4 records. Each measurement runs in a fresh subprocess so peak resident memory
(VmHWM) is that step's alone:

- floor: DuckDB ``read_json`` → Parquet ``COPY`` of the same file, default settings;
- memport: ``pipelines.store.ingest.ingest_dump`` — the code path the Dagster asset runs — into a fresh
  store (connector, normalization, dedup, sorted Parquet parts, manifest).

Targets (issue #2): wall time ≤ 1.5x the floor; peak RSS ≤ 1.5 GiB; peak RSS at N ≤ 1.25x the
peak at N/4.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb

from tests.bench._harness import BENCH_DIR, GIB, WORDS, best_of, ingest, measure, report


def generate(n: int, path: Path) -> None:
    """Write the dump with DuckDB (seconds, not minutes, for a million records)."""
    words = "[" + ",".join("'" + w.replace("'", "''") + "'" for w in WORDS) + "]"
    tmp = path.with_suffix(".tmp")
    duckdb.execute("SET enable_progress_bar = false")
    duckdb.execute(
        f"""
        COPY (
          SELECT
            uuid() AS id,
            array_to_string(list_transform(range(5 + (hash(i) % 116)::INT),
                            lambda k: {words}[1 + (hash(i * 131 + k) % {len(WORDS)})::INT]), ' ')
              AS memory,
            'u-' || (i % 5000) AS user_id,
            CASE WHEN i % 3 = 0 THEN 'agent-' || (i % 7) END AS agent_id,
            'kitchen-helper' AS app_id,
            CASE WHEN i % 5 = 0 THEN 'run-' || (i % 97) END AS session_id,
            {{'source': 'onboarding', 'nested': {{'score': (i % 100) / 100.0,
              'tags': ['a', 'b', 'ü' || (i % 10)]}}}} AS metadata,
            CASE WHEN i % 4 = 0 THEN NULL ELSE ['food', 'user_preferences'] END AS categories,
            NULL AS expiration_date,
            strftime(TIMESTAMP '2024-07-01' + INTERVAL (i) SECOND, '%Y-%m-%dT%H:%M:%S.%f')
              || '-07:00' AS created_at,
            strftime(TIMESTAMP '2025-01-01' + INTERVAL (i) SECOND, '%Y-%m-%dT%H:%M:%S.%f')
              || 'Z' AS updated_at
          FROM range({n}) t(i)
        ) TO '{tmp}' (FORMAT json, ARRAY true)
        """
    )
    tmp.replace(path)


def dump_for(n: int) -> Path:
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"mem0_get_all_{n}.json"
    if not path.exists():
        print(f"generating {path} ({n:,} records) …", flush=True)
        generate(n, path)
    return path


# -- the measured steps, each run in its own process ---------------------------------------------


def _floor(dump: str, out: str) -> int:
    con = duckdb.connect()
    con.execute(f"COPY (SELECT * FROM read_json('{dump}')) TO '{out}/floor.parquet' (FORMAT parquet)")
    return con.sql(f"SELECT count(*) FROM '{out}/floor.parquet'").fetchall()[0][0]


def _memport(dump: str, out: str) -> int:
    return ingest("mem0", dump, out, name="dump.json")["accepted"]


def _child(step: str, dump: str, out: str) -> None:
    if step == "memport":  # import before the clock starts, as duckdb is for the floor
        import pipelines.store.ingest  # noqa: F401
    report({"floor": _floor, "memport": _memport}[step], dump, out)


def run_once(step: str, dump: Path) -> dict[str, float]:
    """One measurement in a fresh process, so its peak resident memory is this step's alone."""
    return measure("tests.bench.ingest_bench", step, str(dump), workdir=BENCH_DIR)


def main() -> int:
    n = int(os.environ.get("BENCH_N", "1000000"))
    big, small = dump_for(n), dump_for(max(n // 4, 1))
    size_mb = big.stat().st_size / 1e6
    print(f"dump: {big} ({size_mb:,.0f} MB, {n:,} records); machine: {os.cpu_count()} cores")
    repeat = int(os.environ.get("BENCH_REPEAT", "3"))
    # Interleaved, so a shift in the shared machine's load hits both sides alike; best of each.
    rounds = [
        (run_once("floor", big), run_once("memport", big), run_once("memport", small)) for _ in range(repeat)
    ]
    floor, ours, ours_small = (best_of([r[i] for r in rounds]) for i in range(3))
    print(f"{'':10} {'wall s':>8} {'rows/s':>12} {'peak MB':>9}")
    for name, m in (("floor", floor), ("memport", ours), ("memport/4", ours_small)):
        print(f"{name:10} {m['wall']:8.2f} {m['rows'] / m['wall']:12,.0f} {m['peak'] / 1e6:9.0f}")
    ratio = ours["wall"] / floor["wall"]
    growth = ours["peak"] / ours_small["peak"]
    checks = [
        (f"wall time vs DuckDB floor: {ratio:.2f}x (target <= 1.5x)", ratio <= 1.5),
        (f"peak memory: {ours['peak'] / GIB:.2f} GiB (target <= 1.5 GiB)", ours["peak"] <= 1.5 * GIB),
        (f"peak memory growth N/4 -> N: {growth:.2f}x (target < 1.25x)", growth < 1.25),
        (f"rows: memport {ours['rows']:,} == floor {floor['rows']:,}", ours["rows"] == floor["rows"]),
    ]
    for text, ok in checks:
        print(("PASS " if ok else "FAIL ") + text)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(*sys.argv[2:])
    else:
        sys.exit(main())
