"""Export benchmark: memport's export in every format against the floors, measured in the same run.

    make bench-export                      # N = 1,000,000 episodes
    BENCH_N=200000 BENCH_REPEAT=3 make bench-export

Builds a store of N canonical episodes once (cached under ``.bench/``: one partition, sorted
Parquet parts, realistic text of 5-120 words, lists, metadata), then runs each step in a fresh
subprocess so its peak resident memory (VmHWM) is that step's alone:

- floors: DuckDB ``COPY (SELECT * FROM read_parquet(<live files>)) TO`` as NDJSON, JSON (array)
  and CSV; Polars ``scan_parquet(...).sink_ndjson`` / ``sink_csv``;
- memport: ``pipelines.exports.lifecycle.export`` — what the job and the command line run — in
  json, ndjson, csv and markdown, every row (tenant ``*``, every status): selection of current
  versions, ISO timestamps, formula neutralization (CSV), fixed order, sha256 of every file,
  manifest.

Targets (issue #4): NDJSON, JSON, CSV within 1.3x the faster floor of that format; Markdown
within 2x memport's NDJSON; peak RSS under 1 GiB in every format.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import duckdb

from tests.bench._harness import BENCH_DIR, WORDS, best_of, measure, report

FLOORS = ("duckdb-ndjson", "duckdb-json", "duckdb-csv", "polars-ndjson", "polars-csv")
OURS = ("memport-ndjson", "memport-json", "memport-csv", "memport-markdown")


def _generate(n: int, root: Path) -> None:
    import polars as pl

    from connectors.base import Batch
    from connectors.schema import EPISODE_SCHEMA, REJECT_SCHEMA
    from pipelines.store.episodes import DumpInfo, EpisodeStore

    words = "[" + ",".join("'" + w.replace("'", "''") + "'" for w in WORDS) + "]"
    sql = f"""
    SELECT
      'ep_' || md5(i::VARCHAR) AS episode_id, 'bench:' || i AS idempotency_key, 'bench' AS tenant_id,
      'org:bench/user:u-' || (i % 5000) AS scope, NULL::VARCHAR AS namespace,
      CASE WHEN i % 3 = 0 THEN 'message' ELSE 'observation' END AS type,
      array_to_string(list_transform(range(5 + (hash(i) % 116)::INT),
                      lambda k: {words}[1 + (hash(i * 131 + k) % {len(WORDS)})::INT]), ' ') AS content,
      CASE WHEN i % 3 = 0 THEN 'user' END AS role, 'mem0' AS source_system, i::VARCHAR AS source_id,
      'sdk' AS source, NULL::VARCHAR AS author, NULL::VARCHAR AS channel, 'u-' || (i % 5000) AS user_id,
      CASE WHEN i % 3 = 0 THEN 'agent-' || (i % 7) END AS agent_id,
      CASE WHEN i % 5 = 0 THEN 'run-' || (i % 97) END AS session_id, NULL::VARCHAR AS priority,
      'active' AS status, ['food', 'user_preferences'] AS categories, []::VARCHAR[] AS tags,
      '{{"source": "onboarding", "nested": {{"score": ' || ((i % 100) / 100.0) || '}}}}' AS metadata,
      TIMESTAMPTZ '2024-07-01 00:00:00+00' + INTERVAL (i) SECOND AS observed_at,
      TIMESTAMPTZ '2024-07-01 00:00:00+00' + INTERVAL (i) SECOND AS created_at,
      TIMESTAMPTZ '2025-01-01 00:00:00+00' + INTERVAL (i) SECOND AS updated_at,
      NULL::TIMESTAMPTZ AS valid_from, NULL::TIMESTAMPTZ AS valid_to,
      NULL::TIMESTAMPTZ AS recorded_at, NULL::TIMESTAMPTZ AS superseded_at,
      md5(i::VARCHAR) AS content_sha256, 'bench://dump.json' AS dump_uri, i AS dump_record,
      TIMESTAMPTZ '2025-07-01 00:00:00+00' AS ingested_at
    FROM range({n}) t(i)
    """
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")

    def batches():  # type: ignore[no-untyped-def]
        for batch in con.sql(sql).to_arrow_reader(100_000):
            frame = pl.DataFrame(pl.from_arrow(batch)).cast(EPISODE_SCHEMA)
            yield Batch(frame, REJECT_SCHEMA.to_frame(), frame.height)

    store = EpisodeStore.from_url(str(root / "store"))
    dump = root / "dump.json"
    dump.write_text("[]", encoding="utf-8")
    info = DumpInfo(str(dump), "bench", "bench", "0", "bench", "{scope}")
    store.ingest(info, batches(), dump_fs=store.location.fs)


def store_for(n: int) -> Path:
    root = BENCH_DIR / f"export_store_{n}"
    if not (root / "store" / "imports").exists():
        print(f"building {root} ({n:,} episodes) …", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _generate(n, root)
    return root


def _files(root: str) -> list[str]:
    from pipelines.exports.select import live_files
    from pipelines.store.episodes import EpisodeStore

    return live_files(EpisodeStore.from_url(f"{root}/store"))


def _step(step: str, root: str, out: str) -> int:
    kind, fmt = step.split("-", 1)
    files = _files(root)
    if kind == "duckdb":
        options = {"ndjson": "FORMAT json", "json": "FORMAT json, ARRAY true", "csv": "FORMAT csv, HEADER"}
        con = duckdb.connect()
        (rows,) = con.execute(
            f"COPY (SELECT * FROM read_parquet({files!r})) TO '{out}/floor.{fmt}' ({options[fmt]})"
        ).fetchall()[0]
        return int(rows)
    if kind == "polars":
        import polars as pl

        lf = pl.scan_parquet(files)
        if fmt == "csv":  # CSV cannot hold lists: as JSON text, as memport writes them
            lf = lf.with_columns(pl.col("categories", "tags").list.join(","))
            lf.sink_csv(f"{out}/floor.csv")
        else:
            lf.sink_ndjson(f"{out}/floor.ndjson")
        return pl.scan_parquet(files).select(pl.len()).collect().item()
    from pipelines.exports import lifecycle
    from pipelines.exports.request import ExportRequest
    from pipelines.store.episodes import EpisodeStore
    from pipelines.store.locations import Location

    request = ExportRequest.parse({"format": fmt, "tenant_id": "*"})
    m = lifecycle.export(EpisodeStore.from_url(f"{root}/store"), Location.from_url(out), request)
    assert m["status"] == "READY", m["error"]
    return int(m["rows"])


def _child(step: str, root: str, out: str) -> None:
    import polars  # noqa: F401  (imports before the clock, for every step alike)

    import pipelines.exports.lifecycle  # noqa: F401

    report(_step, step, root, out)


def run_once(step: str, root: Path) -> dict[str, float]:
    return measure("tests.bench.export_bench", step, str(root), workdir=BENCH_DIR)


def main() -> int:
    n = int(os.environ.get("BENCH_N", "1000000"))
    repeat = int(os.environ.get("BENCH_REPEAT", "1"))
    root = store_for(n)
    print(f"store: {root} ({n:,} episodes); machine: {os.cpu_count()} cores; best of {repeat}")
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in (*FLOORS, *OURS)}
    for _ in range(repeat):  # interleaved, so a shift in the shared machine's load hits all alike
        for step in runs:
            runs[step].append(run_once(step, root))
    best = {s: best_of(r) for s, r in runs.items()}
    print(f"{'':18} {'wall s':>8} {'rows/s':>12} {'peak MB':>9}")
    for step, m in best.items():
        print(f"{step:18} {m['wall']:8.2f} {m['rows'] / m['wall']:12,.0f} {m['peak'] / 1e6:9.0f}")
    checks = []
    for fmt in ("ndjson", "json", "csv"):
        floors = [best[s] for s in FLOORS if s.endswith(f"-{fmt}")]
        floor = min(m["wall"] for m in floors)
        ratio = best[f"memport-{fmt}"]["wall"] / floor
        checks.append((f"{fmt}: {ratio:.2f}x the faster floor (target <= 1.3x)", ratio <= 1.3))
    md = best["memport-markdown"]["wall"] / best["memport-ndjson"]["wall"]
    checks.append((f"markdown: {md:.2f}x memport ndjson (target <= 2x)", md <= 2.0))
    for step in OURS:
        gib = best[step]["peak"] / (1 << 30)
        checks.append((f"{step} peak memory {gib:.2f} GiB (target < 1 GiB)", gib < 1.0))
    rows = {best[s]["rows"] for s in best}
    checks.append((f"every step wrote the same rows: {sorted(rows)}", rows == {n}))
    for text, ok in checks:
        print(("PASS " if ok else "FAIL ") + text)
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(*sys.argv[2:])
    else:
        sys.exit(main())
