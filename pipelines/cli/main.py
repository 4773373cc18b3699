"""``memport``: the command line. ``memport run`` is the main job; ``memport sql`` asks the catalog
(``pipelines.cli.sql``);
``memport export`` runs an ad-hoc export (the Dagster ``adhoc_export`` job) with a progress line,
and ``memport export-status <id>`` tells where an export is.

``run`` does in one process what the landing sensor and the Dagster daemon do over time: every
dump under the landing zone becomes a partition, the dumps are materialized by the same ingest job
in runs of up to ``MAX_DUMPS_PER_RUN`` partitions (as a backfill's runs; ``pipelines.cli.ingest_runs``),
the sample specs exported and today's snapshot taken, then the catalog is built, once. Runs land
in the Dagster instance at ``$DAGSTER_HOME`` (default ``data/dagster``), so ``dagster dev`` shows
them afterwards.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dotenv
import polars as pl

from pipelines.cli.backups import add_commands, snapshot_in_dagster
from pipelines.cli.errors import first_error, friendly
from pipelines.cli.instance import ensure_instance_config, open_instance
from pipelines.cli.sql import add_command as add_sql_command
from pipelines.settings import setting

#: Dagster's console logger at WARNING: the command prints its own one line per dump.
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
#: ``export_specs`` without its own catalog refresh: ``memport run`` builds the catalog once, last.
_NO_CATALOG = {"ops": {"episode_exports": {"config": {"refresh_catalog": False}}}}


def _load_env() -> None:
    """Defaults from ``.env`` (as ``dagster dev`` does); variables already set win."""
    dotenv.load_dotenv(Path.cwd() / ".env", override=False)
    os.environ.setdefault("DAGSTER_HOME", str(Path("data/dagster").resolve()))
    ensure_instance_config()


def _run(args: argparse.Namespace) -> int:
    from connectors import registry
    from connectors.errors import ConfigError
    from pipelines.cli.ingest_runs import run_range
    from pipelines.orchestration.assets import MAX_DUMPS_PER_RUN, ingest_asset_key
    from pipelines.orchestration.definitions import build_definitions
    from pipelines.orchestration.jobs import ingest_job_name
    from pipelines.orchestration.partitions import dumps_partitions_name, key_ranges
    from pipelines.store.catalog import cli_command, connect
    from pipelines.store.catalog_file import pending_path
    from pipelines.store.ingest import discover_dumps
    from pipelines.store.locations import Location

    landing = Location.from_url(setting("MEMPORT_LANDING_URL"))
    defs = build_definitions()
    systems = args.system or list(registry.CONNECTORS)
    if unknown := sorted(set(systems) - set(registry.CONNECTORS)):
        raise ConfigError(
            f"unknown system {', '.join(map(repr, unknown))}; known: {', '.join(registry.CONNECTORS)}"
        )
    failures: list[str] = []
    skipped = 0
    started = time.perf_counter()
    run_started = datetime.now(UTC)
    with open_instance() as instance:
        for system in systems:
            dumps = discover_dumps(landing, system)
            known = set(instance.get_dynamic_partitions(dumps_partitions_name(system)))
            instance.add_dynamic_partitions(
                dumps_partitions_name(system), [d for d in dumps if d not in known]
            )
            job = defs.resolve_job_def(ingest_job_name(system))
            node = ingest_asset_key(system).to_python_identifier()
            config = _QUIET | {"ops": {node: {"config": {"force": bool(args.force)}}}}
            ordered = instance.get_dynamic_partitions(dumps_partitions_name(system))
            for keys in key_ranges(ordered, dumps, MAX_DUMPS_PER_RUN):
                for outcome in run_range(job, instance, node, keys, config):
                    print(f"ingest {system}/{outcome.key} …", end=" ")
                    if outcome.error is not None or outcome.values is None:
                        failures.append(f"{landing.uri(landing.path(system, outcome.key))}: {outcome.error}")
                        print(f"FAILED: {outcome.error}")
                        continue
                    values = outcome.values
                    if values.get("skipped_unchanged"):
                        skipped += 1
                        print(f"unchanged since import {values.get('ingest_id')}, skipped")
                        continue
                    print(
                        f"{values.get('accepted', 0):,} accepted, {values.get('rejected', 0):,} "
                        f"rejected, {values.get('duplicates', 0):,} duplicate"
                    )
                sys.stdout.flush()
        # The catalog is built once, last, over the ingests, the exports and today's snapshot (the
        # exports and the snapshot read the store, not the catalog). Built by the catalog's own job,
        # so its automation sees the ingests handled and requests no extra refresh.
        print("export the sample specs …", end=" ", flush=True)
        exported = defs.resolve_job_def("export_specs").execute_in_process(
            instance=instance, run_config=_QUIET | _NO_CATALOG, raise_on_error=False
        )
        print("done" if exported.success else "FAILED")
        if not exported.success:
            failures.append(f"export specs: {first_error(exported)}")
        if snapshot_in_dagster(instance, refresh_catalog=False):  # the main job ends with a snapshot
            failures.append("today's snapshot (see above)")
        catalog = defs.resolve_job_def("refresh_catalog").execute_in_process(
            instance=instance, run_config=_QUIET
        )
        assert catalog.success
    catalog_path = Path(setting("MEMPORT_CATALOG_PATH")).resolve()
    notes = []
    if pending_path(catalog_path).exists():  # deferred for a read-write session: not a failure
        notes.append(
            f"catalog {catalog_path} is open read-write elsewhere: the new one waits in "
            f"{pending_path(catalog_path)} and the next refresh installs it (README, Query the catalog)"
        )
    with connect(catalog_path) as con:
        per_system = con.sql(
            "SELECT source_system, count(*) AS episodes FROM episodes GROUP BY ALL ORDER BY 1"
        ).pl()
        rejects = con.sql(
            "SELECT source_system, reason, count(*) AS n FROM rejects GROUP BY ALL ORDER BY 1, 2"
        ).pl()
        unread = con.execute(
            "SELECT source_system, dump, unread_bytes, unread_reason FROM imports "
            "WHERE live AND unread_reason IS NOT NULL ORDER BY 1, 2"
        ).fetchall()
        exports = con.sql(
            "SELECT name, status, format || coalesce('/' || profile, '') AS format, rows, files, bytes "
            "FROM exports WHERE created_at >= ? ORDER BY name",
            params=[run_started],
        ).pl()
    store_url = Location.from_url(setting("MEMPORT_STORE_URL")).url()
    exports_url = Location.from_url(setting("MEMPORT_EXPORTS_URL")).url()
    print()
    print(f"Done in {time.perf_counter() - started:.1f} s.")
    if skipped:
        print(
            f"  skipped       : {skipped} dump(s) unchanged since their live import "
            "(same size and sha256; `memport run --force` imports them again)"
        )
    print(f"  episode store : {store_url}  (Parquet, one partition per dump)")
    print(
        f"  catalog       : {catalog_path}  "
        "(DuckDB: episodes, episode_log, rejects, imports, exports, snapshots)"
    )
    print(f"  exports       : {exports_url}/<id>/  (files + manifest.json; the catalog's exports view)")
    backup_url = Location.from_url(setting("MEMPORT_BACKUP_URL")).url()
    print(f"  backups       : {backup_url}/snapshots/date=<day>/  (today's taken; the snapshots view)")
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_rows=50):
        print(per_system)
        if rejects.height:
            print("Rejected records (every one kept with its reason and position):")
            print(rejects)
        if exports.height:
            print("Exports of the sample specs (pipelines/exports/specs.yaml):")
            print(exports)
    print("Query it:")
    print('  .venv/bin/memport sql "SELECT type, count(*) FROM episodes GROUP BY ALL"')
    print('  .venv/bin/memport sql "SELECT id, name, status, rows, destination FROM exports"')
    print(f"  or any DuckDB client: {cli_command(catalog_path)}")
    print("Export a slice: .venv/bin/memport export csv --scope org:acme --type decision")
    print("Browse the runs: make dev  (Dagster UI on http://127.0.0.1:3000)")
    failures += [
        f"{system}/{dump}: {size:,} bytes not read ({why}); fix or split the file and re-run"
        for system, dump, size, why in unread
    ]
    if notes:
        print("\nNote:", *notes, sep="\n  ")
    if failures:
        print("\nThese failed:", *failures, sep="\n  ")
        return 1
    return 0


def _export_request(args: argparse.Namespace) -> dict[str, Any]:
    """The run config of ``adhoc_export`` from the options (validated by the request parser)."""
    import json

    given: dict[str, Any] = {"format": args.format}
    for pair in args.set or []:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"memport export: --set takes KEY=VALUE, got {pair!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        given[key] = value
    options = {
        "tenant_id": args.tenant,
        "scope": args.scope,
        "types": args.type,
        "categories": args.category,
        "tags": args.tag,
        "metadata": _json_or_text(args.metadata),
        "created_after": args.created_after,
        "created_before": args.created_before,
        "as_of": args.as_of,
        "destination": args.dest,
        "profile": args.profile,
        "compression": args.compression,
        "max_part_bytes": args.max_part_bytes,
        "name": args.name,
        "ttl_hours": args.ttl_hours,
    }
    given |= {k: v for k, v in options.items() if v is not None}
    for key in ("types", "categories", "tags"):  # the job's config takes lists; the parser, one too
        if isinstance(given.get(key), str):
            given[key] = [given[key]]
    if args.no_neutralize:
        given["neutralize_formulas"] = False
    return given


def _json_or_text(raw: str | None) -> Any:
    """``--metadata '{"lang": "en"}'`` as the object it spells (the job's config wants a dict);
    text that is not JSON goes on as is, for the request parser to refuse with its field name."""
    import json

    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class _ProgressLine:
    """``rows written / total`` on stderr: one line redrawn on a terminal, a line per 10 s else."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.next = 0.0

    def __call__(self, rows: int, total: int) -> None:
        now = time.monotonic()
        if now < self.next and rows < total:
            return
        self.next = now + (0.5 if self.tty else 10)
        pct = 100 * rows / total if total else 100.0
        text = f"exporting: {rows:,} / {total:,} rows ({pct:.0f}%)"
        print(("\r" + text) if self.tty else text, end="" if self.tty else "\n", file=sys.stderr, flush=True)
        if self.tty and rows >= total:
            print(file=sys.stderr)


def _export(args: argparse.Namespace) -> int:
    import dagster as dg

    from connectors.errors import ExportRequestError
    from pipelines.exports import lifecycle
    from pipelines.exports.request import ExportRequest
    from pipelines.orchestration.exports import adhoc_export, expire_exports
    from pipelines.orchestration.resources import ExportProgress, resources_from_env
    from pipelines.store.locations import Location

    config = _export_request(args)
    try:  # fail before any work, naming the field
        ExportRequest.parse({"tenant_id": setting("MEMPORT_TENANT_ID")} | config)
    except ExportRequestError as exc:
        print(f"memport export: {exc}", file=sys.stderr)
        return 2
    resources = resources_from_env() | {"export_progress": ExportProgress(_ProgressLine())}
    job = dg.Definitions(jobs=[adhoc_export, expire_exports], resources=resources).resolve_job_def(
        "adhoc_export"
    )
    with open_instance() as instance:
        result = job.execute_in_process(
            run_config=_QUIET | {"ops": {"run_export": {"config": config}}},
            instance=instance,
            raise_on_error=False,
        )
    if not result.success:
        print(f"memport export: FAILED: {first_error(result)}", file=sys.stderr)
        return 1
    export_id = result.output_for_node("run_export")
    exports = Location.from_url(setting("MEMPORT_EXPORTS_URL"))
    m = lifecycle.ready(exports, export_id)
    _print_export(m, exports)
    return 0


def _print_export(m: dict[str, Any], exports: Any) -> None:
    from pipelines.exports.lifecycle import manifest_path

    print(f"export {m['id']}: {m['status']}, {m['rows']:,} rows, expires {m['expires_at']}")
    for f in m["files"]:
        print(f"  {f['url']}  ({f['bytes']:,} bytes, sha256 {f['sha256'][:16]}…)")
    print(f"  manifest: {exports.uri(manifest_path(exports, m['id']))}")


def _export_status(args: argparse.Namespace) -> int:
    from connectors.errors import ExportError
    from pipelines.exports import lifecycle
    from pipelines.store.locations import Location

    exports = Location.from_url(setting("MEMPORT_EXPORTS_URL"))
    try:
        m = lifecycle.ready(exports, args.id)
    except ExportError as exc:
        print(f"memport export-status: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    _print_export(m, exports)
    return 0


def _import_export(args: argparse.Namespace) -> int:
    """Import a READY export (json, ndjson, csv) into another memport store: the second half of a
    migration by export + import."""
    from connectors.errors import ExportError
    from pipelines.exports import lifecycle
    from pipelines.exports.reimport import import_export
    from pipelines.store.catalog import build_catalog
    from pipelines.store.episodes import EpisodeStore
    from pipelines.store.locations import Location

    exports = Location.from_url(args.exports or setting("MEMPORT_EXPORTS_URL"))
    try:
        m = lifecycle.ready(exports, args.id)
    except ExportError as exc:
        print(f"memport import-export: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    target = EpisodeStore.from_url(args.store)
    for result in import_export(target, m):
        c = result.counts
        print(
            f"imported {result.manifest['dump_uri']}: {c['accepted']:,} episodes, {c['rejected']:,} rejected"
        )
    if args.catalog:
        summary = build_catalog(target, args.catalog)
        print(f"catalog {summary.path}: {summary.episodes:,} episodes")
    print(f"store {target.location.url()} now holds export {m['id']} ({m['rows']:,} rows)")
    return 0


def _add_export_parser(sub: Any) -> None:
    from pipelines.exports.request import COMPRESSIONS, FORMATS, PROFILES

    p = sub.add_parser(
        "export",
        help="export a slice of the store (runs the adhoc_export job; progress on stderr)",
        description="Filters and options are those of an export request (README, Exports). "
        "Any request field can also be given as --set KEY=VALUE (VALUE is JSON when it parses).",
    )
    p.add_argument("format", choices=FORMATS)
    p.add_argument("--tenant", help="tenant_id (default MEMPORT_TENANT_ID; '*' = every tenant)")
    p.add_argument("--scope", help="scope prefix, e.g. org:acme (includes org:acme/…)")
    p.add_argument("--type", action="append", help="episode type (repeatable: any of)")
    p.add_argument("--category", action="append", help="category (repeatable: any of, at most 20)")
    p.add_argument("--tag", action="append", help="tag (repeatable: all of)")
    p.add_argument("--metadata", help='top-level metadata containment as JSON, e.g. \'{"lang": "en"}\'')
    p.add_argument("--created-after", help="ISO 8601 (use --set created_after_ms=… for epoch ms)")
    p.add_argument("--created-before", help="ISO 8601 (use --set created_before_ms=… for epoch ms)")
    p.add_argument("--as-of", help="ISO 8601: the episodes valid and known at that instant")
    p.add_argument("--dest", help="destination directory URL (default <MEMPORT_EXPORTS_URL>/<id>/)")
    p.add_argument("--profile", choices=tuple(PROFILES))
    p.add_argument("--compression", choices=COMPRESSIONS)
    p.add_argument("--max-part-bytes", type=int, help="split into numbered parts of about this size")
    p.add_argument("--no-neutralize", action="store_true", help="csv: keep formula-like cells as is")
    p.add_argument("--ttl-hours", type=float, help="time to live (default 72)")
    p.add_argument("--name", help="a label for the export (the exports view; file names use its slug)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other request field")
    p.set_defaults(func=_export)
    status = sub.add_parser("export-status", help="an export's state and files (errors if not ready)")
    status.add_argument("id")
    status.set_defaults(func=_export_status)
    imp = sub.add_parser(
        "import-export",
        help="import a READY json/ndjson/csv export into another memport store (migration)",
    )
    imp.add_argument("id", help="the export's id")
    imp.add_argument("--store", required=True, help="the target store URL (any fsspec URL)")
    imp.add_argument("--catalog", help="rebuild this catalog for the target store")
    imp.add_argument("--exports", help="where the export is (default MEMPORT_EXPORTS_URL)")
    imp.set_defaults(func=_import_export)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memport", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="ingest every dump in the landing zone, rebuild the catalog")
    run.add_argument("--system", action="append", help="only this system (repeatable)")
    run.add_argument(
        "--force", action="store_true", help="import every dump again, even those unchanged since imported"
    )
    run.set_defaults(func=_run)
    add_sql_command(sub)
    _add_export_parser(sub)
    add_commands(sub)
    args = parser.parse_args(argv)
    _load_env()
    return int(friendly(args.func)(args))


if __name__ == "__main__":
    sys.exit(main())
