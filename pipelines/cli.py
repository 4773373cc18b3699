"""``memport``: the command line. ``memport run`` is the main job; ``memport sql`` asks the catalog.

``run`` does in one process what the landing sensor and the Dagster daemon do over time: every
dump under the landing zone becomes a partition, each is materialized by the same ingest job,
then the catalog is rebuilt. Runs land in the Dagster instance at ``$DAGSTER_HOME`` (default
``data/dagster``), so ``dagster dev`` shows them afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import dotenv
import polars as pl

from pipelines.backup_cli import add_commands, snapshot_in_dagster
from pipelines.settings import setting

#: Dagster's console logger at WARNING: the command prints its own one line per dump.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _load_env() -> None:
    """Defaults from ``.env`` (as ``dagster dev`` does); variables already set win."""
    dotenv.load_dotenv(Path.cwd() / ".env", override=False)
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path("data/dagster").resolve())))
    home.mkdir(parents=True, exist_ok=True)


def _run(args: argparse.Namespace) -> int:
    import dagster as dg

    from connectors import registry
    from pipelines.catalog import connect
    from pipelines.ingest import discover_dumps
    from pipelines.locations import Location
    from pipelines.orchestration.definitions import defs
    from pipelines.orchestration.jobs import ingest_job_name
    from pipelines.orchestration.partitions import dumps_partitions_name

    landing = Location.from_url(setting("MEMPORT_LANDING_URL"))
    systems = args.system or list(registry.CONNECTORS)
    failures: list[str] = []
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        for system in systems:
            dumps = discover_dumps(landing, system)
            known = set(instance.get_dynamic_partitions(dumps_partitions_name(system)))
            instance.add_dynamic_partitions(
                dumps_partitions_name(system), [d for d in dumps if d not in known]
            )
            job = defs.resolve_job_def(ingest_job_name(system))
            for key in dumps:
                print(f"ingest {system}/{key} …", end=" ", flush=True)
                result = job.execute_in_process(
                    instance=instance, partition_key=key, raise_on_error=False, run_config=_QUIET
                )
                if not result.success:
                    failures.append(f"{system}/{key}: {_first_error(result)}")
                    print("FAILED")
                    continue
                meta = result.asset_materializations_for_node(job.nodes_in_topological_order[0].name)
                values = {k: v.value for k, v in meta[-1].metadata.items()} if meta else {}
                print(
                    f"{values.get('accepted', 0):,} accepted, {values.get('rejected', 0):,} "
                    f"rejected, {values.get('duplicates', 0):,} duplicate"
                )
        catalog = defs.resolve_job_def("refresh_catalog").execute_in_process(
            instance=instance, run_config=_QUIET
        )
        assert catalog.success
        if snapshot_in_dagster(instance):  # the main job ends with today's snapshot
            failures.append("today's snapshot (see above)")
    catalog_path = Path(setting("MEMPORT_CATALOG_PATH")).resolve()
    with connect(catalog_path) as con:
        per_system = con.sql(
            "SELECT source_system, count(*) AS episodes FROM episodes GROUP BY ALL ORDER BY 1"
        ).pl()
        rejects = con.sql(
            "SELECT source_system, reason, count(*) AS n FROM rejects GROUP BY ALL ORDER BY 1, 2"
        ).pl()
    store_url = Location.from_url(setting("MEMPORT_STORE_URL")).url()
    print()
    print(f"Done in {time.perf_counter() - started:.1f} s.")
    print(f"  episode store : {store_url}  (Parquet, one partition per dump)")
    print(f"  catalog       : {catalog_path}  (DuckDB: episodes, episode_log, rejects, imports)")
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(per_system)
        if rejects.height:
            print("Rejected records (every one kept with its reason and position):")
            print(rejects)
    print("Query it:")
    print('  .venv/bin/memport sql "SELECT type, count(*) FROM episodes GROUP BY ALL"')
    print(f"  or any DuckDB client: duckdb -readonly {catalog_path}")
    print("Browse the runs: make dev  (Dagster UI on http://127.0.0.1:3000)")
    if failures:
        print("\nThese failed:", *failures, sep="\n  ")
        return 1
    return 0


def _first_error(result: object) -> str:
    for event in result.all_events:  # type: ignore[attr-defined]
        if event.is_failure and event.step_failure_data:
            return event.step_failure_data.error.message.strip().splitlines()[0]
    return "unknown error (see the run in the Dagster UI)"


def _sql(args: argparse.Namespace) -> int:
    from pipelines.catalog import connect

    with connect(setting("MEMPORT_CATALOG_PATH")) as con:
        frame = con.sql(args.query).pl()
    with pl.Config(tbl_rows=args.limit, fmt_str_lengths=80, tbl_width_chars=200):
        print(frame)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memport", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="ingest every dump in the landing zone, rebuild the catalog")
    run.add_argument("--system", action="append", help="only this system (repeatable)")
    run.set_defaults(func=_run)
    sql = sub.add_parser("sql", help="run a SQL query against the catalog (read-only)")
    sql.add_argument("query")
    sql.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    sql.set_defaults(func=_sql)
    add_commands(sub)
    args = parser.parse_args(argv)
    _load_env()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
